#!/usr/bin/env python
"""Draw what Sparse DETR refines: selected tokens per level, top-k decoder queries, the DAM, and Corr.

    python projects/SparseDETR/visualize_tokens.py --config-file sparse_detr_r50_rho0.1_50ep \\
        --weights converted/model_final.pth --input photo.jpg --output out/tokens
    # side by side: the DAM scorer against the objectness scorer (one row per model)
    python projects/SparseDETR/visualize_tokens.py \\
        --config-file dam/config.yaml objectness/config.yaml --weights dam/model_final.pth \\
        objectness/model_final.pth --dataset coco_2017_val --num-images 4 --output out/compare

For each image one PNG (``OUTPUT/<name>_tokens.png``), laid out like the paper's appendix figures: per model
a row with the image and its top-k decoder queries (dots coloured by feature level) and confident
detections, the refined (selected) tokens of each of the 4 levels, the decoder attention map (DAM) as
an attention density, and the scorer's output on the finest level; titles give Corr (share of the
decoder's attention on the refined tokens) overall and per level.
"""

from __future__ import annotations

import argparse
import glob
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode, LazyConfig
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from omegaconf import OmegaConf
from tqdm import tqdm

import sparse_detr.data  # noqa: F401  (registers the synthetic datasets and their metadata)
import sparse_detr.modeling  # noqa: F401  (registers the meta-architecture for yacs configs)
from sparse_detr.data import build_detr_test_augmentations
from sparse_detr.engine.predictor import LazyConfigPredictor
from sparse_detr.model_zoo import config_label, load_config
from sparse_detr.modeling.analysis import analyze

logger = logging.getLogger("sparse_detr.visualize_tokens")

OFFICIAL_COCO_LOGITS = 91
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LEVEL_COLOURS = ("#e41a1c", "#ff7f00", "#4daf4a", "#377eb8", "#984ea3", "#a65628")


# ---------------------------------------------------------------------------------------- predictors
def load_config_with_overrides(path_or_name: str, opts: list[str], weights: str | None, device: str):
    """Config from a file or model-zoo name, with ``opts`` overrides, weights and device set."""
    cfg = load_config(path_or_name)
    if isinstance(cfg, CfgNode):
        cfg.merge_from_list(opts)
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        cfg.MODEL.DEVICE = device
    else:
        cfg = LazyConfig.apply_overrides(cfg, opts)
        if weights is not None:
            cfg.train.init_checkpoint = weights
        cfg.train.device = device
    return cfg


def build_predictor(cfg) -> DefaultPredictor | LazyConfigPredictor:
    """Detectron2's ``DefaultPredictor`` for a yacs config, ``LazyConfigPredictor`` for a LazyConfig.

    A LazyConfig without test data (e.g. the model-only ``config.yaml`` of ``convert_official.py``) gets the
    official test resize: shorter side 800, longer side at most 1333.
    """
    if isinstance(cfg, CfgNode):
        return DefaultPredictor(cfg)
    if OmegaConf.select(cfg, "dataloader.test.mapper.augmentations") is None:
        official_resize = L(build_detr_test_augmentations)(min_size=800, max_size=1333)
        OmegaConf.update(cfg, "dataloader.test.mapper.augmentations", official_resize, merge=False)
    return LazyConfigPredictor(cfg, cfg.train.init_checkpoint, cfg.train.device)


def prepare_input(predictor: DefaultPredictor | LazyConfigPredictor, image_bgr: np.ndarray) -> dict:
    """The model input the predictor would build for this (H, W, 3) BGR image (resize + channel order)."""
    height, width = image_bgr.shape[:2]
    image = image_bgr[:, :, ::-1] if predictor.input_format == "RGB" else image_bgr
    augmentations = predictor.aug if isinstance(predictor, DefaultPredictor) else predictor.augmentations
    aug_input = T.AugInput(np.ascontiguousarray(image))
    augmentations(aug_input)
    tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)).astype("float32"))
    return {"image": tensor, "height": height, "width": width}


def set_inference_keep_ratio(model: torch.nn.Module, rho: float) -> None:
    """Dynamic sparsification: the keeping ratio used at inference (``--rho``)."""
    if getattr(model, "token_scorer", None) is None:
        raise ValueError(f"--rho {rho}: this model has no token scorer (dense encoder)")
    model.token_scorer.test_keep_ratio = rho


def num_model_classes(model: torch.nn.Module) -> int:
    """Number of logits of the model's class heads."""
    return model.heads.class_heads[0].out_features


def class_names(cfg, num_classes: int) -> list[str]:
    """Class names of the config's test dataset, or the label numbers when they do not fit the model."""
    from detectron2.data import MetadataCatalog

    if isinstance(cfg, CfgNode):
        dataset = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    else:
        dataset = cfg.get("dataloader", {}).get("test", {}).get("dataset", {}).get("names")
        dataset = dataset[0] if isinstance(dataset, (list, tuple)) else dataset
    names = MetadataCatalog.get(dataset).get("thing_classes") if dataset else None
    if names and len(names) >= num_classes:
        return list(names)
    if num_classes == OFFICIAL_COCO_LOGITS:  # converted official model: label = COCO category id
        by_id = {c["id"]: c["name"] for c in COCO_CATEGORIES if c["isthing"]}
        return [by_id.get(i, str(i)) for i in range(num_classes)]
    return [str(i) for i in range(num_classes)]


# ----------------------------------------------------------------------------------------- internals
@dataclass
class TokenView:
    """What one model did on one image, as numpy maps in the model's input resolution.

    Attributes:
        detections: Detectron2 ``Instances`` in original-image pixels.
        refined: per level Bool[H_l, W_l], the tokens the encoder refined.
        attention: per level Float[H_l, W_l], decoder attention mass (DAM).
        scores: per level Float[H_l, W_l] scorer output (sigmoid), or None (dense encoder).
        queries: Float[Q, 2] (x, y) of the decoder queries' reference points in [0, 1] input coordinates.
        query_levels: Long[Q] feature level of each query's source token (-1 if learned queries).
        corr: Float[1 + L], Corr overall then per level.
        input_size: (height, width) of the model input (after resize).
        keep_ratio: rho in effect (1.0 when dense).
    """

    detections: object
    refined: list[np.ndarray]
    attention: list[np.ndarray]
    scores: list[np.ndarray] | None
    queries: np.ndarray
    query_levels: np.ndarray
    corr: np.ndarray
    input_size: tuple[int, int]
    keep_ratio: float


def _split_levels(values: torch.Tensor, spatial_shapes: torch.Tensor) -> list[np.ndarray]:
    """Float/Bool[N] flat tokens -> per level [H_l, W_l] numpy maps."""
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    return [
        chunk.reshape(int(h), int(w)).cpu().numpy()
        for chunk, (h, w) in zip(torch.split(values, sizes), spatial_shapes.tolist())
    ]


def analyze_image(model: torch.nn.Module, model_input: dict) -> TokenView:
    """Analyse one input (:func:`sparse_detr.modeling.analysis.analyze`) and keep what the figure shows."""
    analysis = analyze(model, [model_input])
    outputs = analysis.outputs
    shapes, starts = outputs.tokens.spatial_shapes, outputs.tokens.level_start_index
    queries = outputs.internals.queries
    reference = queries.reference[0, :, :2].cpu().numpy()
    if queries.token_indices is not None:
        query_levels = (torch.bucketize(queries.token_indices[0], starts, right=True) - 1).cpu().numpy()
    else:
        query_levels = np.full(len(reference), -1)
    selection = outputs.selection
    return TokenView(
        detections=analysis.results[0]["instances"].to("cpu"),
        refined=_split_levels(analysis.refined[0], shapes),
        attention=_split_levels(analysis.decoder_attention_map[0], shapes),
        scores=None if selection is None else _split_levels(selection.scores[0].sigmoid(), shapes),
        queries=reference,
        query_levels=query_levels,
        corr=analysis.corr[0].cpu().numpy(),
        input_size=tuple(model_input["image"].shape[-2:]),
        keep_ratio=model.token_scorer.active_keep_ratio if model.is_sparse else 1.0,
    )


# ------------------------------------------------------------------------------------------ drawing
def level_stride(level_shape: tuple[int, int], input_size: tuple[int, int]) -> int:
    """Stride of a level: the smallest power of two s with ceil(input / s) <= level size (conv padding)."""
    ratio = max(input_size[0] / level_shape[0], input_size[1] / level_shape[1], 1.0)
    return 2 ** math.ceil(math.log2(ratio) - 1e-9)


def level_map_to_image(level_map: np.ndarray, input_size: tuple[int, int], image_size: tuple[int, int]):
    """Upsample a [H_l, W_l] token map to the original image (H, W), cell by cell (nearest).

    A level of stride s covers s * (H_l, W_l) input pixels (its last row/column may overhang the input);
    the map is cut to the input and scaled to the image.
    """
    in_h, in_w = input_size
    stride = level_stride(level_map.shape, input_size)
    rows = np.minimum(
        (np.arange(image_size[0]) + 0.5) * in_h / image_size[0] // stride, level_map.shape[0] - 1
    )
    cols = np.minimum(
        (np.arange(image_size[1]) + 0.5) * in_w / image_size[1] // stride, level_map.shape[1] - 1
    )
    return level_map[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def attention_density(view: TokenView, image_size: tuple[int, int]) -> np.ndarray:
    """Decoder attention per image pixel: each level's mass over its cells' area, summed over levels."""
    total = np.zeros(image_size, dtype=np.float64)
    for level_map in view.attention:
        cell_area = (view.input_size[0] / level_map.shape[0]) * (view.input_size[1] / level_map.shape[1])
        total += level_map_to_image(level_map / cell_area, view.input_size, image_size)
    return total


def draw_refined_level(ax, image_rgb: np.ndarray, view: TokenView, level: int) -> None:
    """The image, dimmed, with the refined tokens of one level highlighted."""
    refined = view.refined[level]
    mask = level_map_to_image(refined.astype(np.float32), view.input_size, image_rgb.shape[:2]) > 0.5
    shown = image_rgb.astype(np.float32) * 0.35
    colour = np.array(matplotlib_colour(LEVEL_COLOURS[level % len(LEVEL_COLOURS)])) * 255
    shown[mask] = 0.45 * image_rgb[mask] + 0.55 * colour
    ax.imshow(shown.astype(np.uint8))
    stride = level_stride(refined.shape, view.input_size)
    corr = view.corr[1 + level] if len(view.corr) > 1 + level else float("nan")
    ax.set_title(
        f"level {level + 1} (1/{stride}): {int(refined.sum())}/{refined.size} refined\nCorr {corr:.2f}",
        fontsize=8,
    )


def matplotlib_colour(name: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(name)


def draw_queries(ax, image_rgb: np.ndarray, view: TokenView, top_k: int, names: list[str], threshold: float):
    """The image, the top-k decoder queries (reference points by level) and confident detections."""
    height, width = image_rgb.shape[:2]
    ax.imshow(image_rgb)
    points = view.queries[:top_k]
    levels = view.query_levels[:top_k]
    # reference points are in [0, 1] of the padded input; the input is not padded for a single image
    for level in sorted(set(levels.tolist())):
        chosen = levels == level
        label = f"level {level + 1}" if level >= 0 else "learned"
        ax.scatter(
            points[chosen, 0] * width,
            points[chosen, 1] * height,
            s=6,
            c=LEVEL_COLOURS[level % len(LEVEL_COLOURS)] if level >= 0 else "w",
            label=label,
        )
    detections = view.detections
    keep = detections.scores >= threshold
    for box, score, cls in zip(
        detections.pred_boxes.tensor[keep], detections.scores[keep], detections.pred_classes[keep]
    ):
        x0, y0, x1, y1 = box.tolist()
        ax.add_patch(_rectangle((x0, y0), x1 - x0, y1 - y0))
        ax.text(
            x0,
            y0,
            f"{names[int(cls)]} {score:.2f}",
            fontsize=6,
            color="w",
            va="bottom",
            bbox=dict(facecolor="k", alpha=0.5, pad=0.5, linewidth=0),
        )
    if len(points):
        ax.legend(fontsize=6, loc="lower right", markerscale=2)
    ax.set_title(
        f"top-{len(points)} decoder queries\nrho {view.keep_ratio:g}, Corr {view.corr[0]:.2f}", fontsize=8
    )


def _rectangle(xy, width, height):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, fill=False, edgecolor="yellow", linewidth=1)


def draw_figure(
    image_rgb: np.ndarray,
    views: list[tuple[str, TokenView]],
    path: str,
    top_k: int,
    names_per_model: list[list[str]],
    threshold: float,
) -> None:
    """One row per model: queries, 4 levels of refined tokens, the DAM density, the scorer output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_levels = len(views[0][1].refined)
    columns = 3 + num_levels
    aspect = image_rgb.shape[0] / image_rgb.shape[1]
    fig, axes = plt.subplots(
        len(views), columns, figsize=(2.6 * columns, (2.6 * aspect + 0.5) * len(views)), squeeze=False
    )
    image_size = image_rgb.shape[:2]
    for row, ((label, view), names) in enumerate(zip(views, names_per_model)):
        draw_queries(axes[row, 0], image_rgb, view, top_k, names, threshold)
        for level in range(num_levels):
            draw_refined_level(axes[row, 1 + level], image_rgb, view, level)
        density = attention_density(view, image_size)
        axes[row, 1 + num_levels].imshow(image_rgb)
        axes[row, 1 + num_levels].imshow(density, cmap="jet", alpha=0.6)
        axes[row, 1 + num_levels].set_title("DAM (decoder attention)", fontsize=8)
        ax = axes[row, 2 + num_levels]
        if view.scores is None:
            ax.text(0.5, 0.5, "no learned scorer", ha="center", va="center", fontsize=8)
            ax.set_title("scorer output", fontsize=8)
        else:
            # the finest level has the most tokens; min-max colours: only the ranking decides the selection
            scores = level_map_to_image(view.scores[0], view.input_size, image_size)
            ax.imshow(scores, cmap="viridis", vmin=float(scores.min()), vmax=float(scores.max()))
            ax.set_title(
                f"scorer output, level 1\n(sigmoid {scores.min():.2f}-{scores.max():.2f})", fontsize=8
            )
        axes[row, 0].set_ylabel(label, fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- inputs
def expand_inputs(patterns: list[str]) -> list[str]:
    """Files named by paths, directories (their image files) or glob patterns, in order, without repeats.

    A path that names nothing is kept, so that reading it reports it.
    """
    files = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif any(c in pattern for c in "*?["):
            files += sorted(glob.glob(pattern, recursive=True))
        else:
            files.append(pattern)
    return list(dict.fromkeys(files))


def read_image_or_none(path: str) -> np.ndarray | None:
    """(H, W, 3) BGR uint8, or None (with a warning naming the file) when it cannot be read."""
    try:
        return read_image(path, format="BGR")
    except Exception as error:  # PIL raises several types for bad files; report any and go on
        logger.warning("skipping %s: cannot read it as an image (%s: %s)", path, type(error).__name__, error)
        return None


def dataset_entries(dataset: str, count: int) -> list[tuple[str, np.ndarray]]:
    """(name, BGR image) of the first ``count`` entries of a registered dataset."""
    from detectron2.data import DatasetCatalog

    entries = []
    for record in DatasetCatalog.get(dataset)[:count]:
        image = read_image_or_none(record["file_name"])
        if image is not None:
            entries.append((Path(record["file_name"]).stem, image))
    return entries


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        nargs="+",
        required=True,
        metavar="CONFIG",
        help="one config per model (files or model-zoo names); several = side by side",
    )
    parser.add_argument("--weights", nargs="+", help="checkpoint per config (default: the config's own)")
    parser.add_argument("--input", nargs="+", help="images, directories or glob patterns")
    parser.add_argument("--dataset", help="a registered dataset to take images from (instead of --input)")
    parser.add_argument("--num-images", type=int, default=4, help="images taken from --dataset")
    parser.add_argument("--output", required=True, help="directory for the PNGs")
    parser.add_argument("--rho", type=float, help="inference keeping ratio (dynamic sparsification)")
    parser.add_argument("--top-k", type=int, default=100, help="decoder queries drawn (highest-ranked first)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="detections drawn")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model")
    return parser


def main(argv: list[str] | None = None) -> list[str]:
    """Write the figures; returns the written paths."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if bool(args.input) == bool(args.dataset):
        raise SystemExit("give either --input or --dataset")
    weights = args.weights or [None] * len(args.config_file)
    if len(weights) != len(args.config_file):
        raise SystemExit(f"--weights: {len(weights)} given for {len(args.config_file)} --config-file")
    models = []
    for config, weight in zip(args.config_file, weights):
        cfg = load_config_with_overrides(config, args.opts, weight, args.device)
        predictor = build_predictor(cfg)
        if args.rho is not None:
            set_inference_keep_ratio(predictor.model, args.rho)
        num_classes = num_model_classes(predictor.model)
        models.append(
            (
                config_label(config),
                predictor,
                class_names(cfg, num_classes),
            )
        )
    if args.dataset:
        images = dataset_entries(args.dataset, args.num_images)
    else:
        images = [(Path(p).stem, read_image_or_none(p)) for p in expand_inputs(args.input)]
        images = [(name, image) for name, image in images if image is not None]
    written = []
    for name, image_bgr in tqdm(images, desc="images"):
        views = [(label, analyze_image(p.model, prepare_input(p, image_bgr))) for label, p, _ in models]
        path = str(Path(args.output) / f"{name}_tokens.png")
        draw_figure(
            image_bgr[:, :, ::-1], views, path, args.top_k, [n for *_, n in models], args.confidence_threshold
        )
        written.append(path)
    print(f"wrote {len(written)} figure(s) to {args.output}")
    return written


if __name__ == "__main__":
    main()
