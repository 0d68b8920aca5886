"""The refined-token figure: per model a row with the decoder queries and detections, the refined tokens of
each level, the decoder attention map (DAM) density and the scorer's output, titled with Corr.

:func:`analyze_image` reads one image through :func:`sparse_detr.modeling.analysis.analyze`;
:func:`draw_figure` lays out one or several models side by side (matplotlib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparse_detr.modeling.analysis import analyze
from sparse_detr.utils.files import atomic_output

__all__ = ["TokenView", "analyze_image", "draw_figure", "level_map_to_image", "level_stride"]

LEVEL_COLOURS = ("#e41a1c", "#ff7f00", "#4daf4a", "#377eb8", "#984ea3", "#a65628")
LABEL_FONT_SIZE = 8  # detection labels (class name and score) and panel titles


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
        keep_ratio=model.token_scorer.keep_ratio if model.is_sparse else 1.0,
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
    """The image, the top-k decoder queries (reference points by level) and confident detections labelled
    with their class names; the legend of the query levels sits below the image, not over it."""
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
            fontsize=LABEL_FONT_SIZE,
            color="w",
            va="bottom",
            bbox=dict(facecolor="k", alpha=0.5, pad=0.5, linewidth=0),
        )
    if len(points):
        handles = ax.get_legend_handles_labels()[0]
        ax.legend(
            fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(len(handles), 4),
            markerscale=2, frameon=False, handletextpad=0.2, columnspacing=0.8,
        )
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
):
    """One row per model: queries, 4 levels of refined tokens, the DAM density, the scorer output.

    The DAM and scorer panels have colour bars. Returns the (closed) matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_levels = len(views[0][1].refined)
    columns = 3 + num_levels
    aspect = image_rgb.shape[0] / image_rgb.shape[1]
    fig, axes = plt.subplots(
        len(views), columns, figsize=(2.6 * columns, (2.6 * aspect + 0.8) * len(views)), squeeze=False
    )
    image_size = image_rgb.shape[:2]
    for row, ((label, view), names) in enumerate(zip(views, names_per_model)):
        draw_queries(axes[row, 0], image_rgb, view, top_k, names, threshold)
        for level in range(num_levels):
            draw_refined_level(axes[row, 1 + level], image_rgb, view, level)
        density = attention_density(view, image_size)
        dam_ax = axes[row, 1 + num_levels]
        dam_ax.imshow(image_rgb)
        shown = dam_ax.imshow(density, cmap="jet", alpha=0.6)
        dam_ax.set_title("DAM (decoder attention)", fontsize=8)
        _colour_bar(fig, shown, dam_ax, "attention per pixel")
        ax = axes[row, 2 + num_levels]
        if view.scores is None:
            ax.text(0.5, 0.5, "no learned scorer", ha="center", va="center", fontsize=8)
            ax.set_title("scorer output", fontsize=8)
        else:
            # the finest level has the most tokens; min-max colours: only the ranking decides the selection
            scores = level_map_to_image(view.scores[0], view.input_size, image_size)
            shown = ax.imshow(scores, cmap="viridis", vmin=float(scores.min()), vmax=float(scores.max()))
            _colour_bar(fig, shown, ax, "sigmoid score")
            ax.set_title(
                f"scorer output, level 1\n(sigmoid {scores.min():.2f}-{scores.max():.2f})", fontsize=8
            )
        axes[row, 0].set_ylabel(label, fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:  # the format from the suffix, which the temporary name keeps
        fig.savefig(tmp, dpi=110, bbox_inches="tight")  # the legends below the images included
    plt.close(fig)
    return fig


def _colour_bar(fig, mappable, ax, label: str) -> None:
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
