#!/usr/bin/env python
"""Export a Sparse DETR model for deployment: ONNX (ONNX Runtime, OpenVINO, ...), an OpenVINO IR or a
torch.export program.

    python projects/SparseDETR/export.py --config-file converted/config.yaml \\
        --weights converted/model_final.pth --format onnx --output deploy/sparse_detr.onnx --rho 0.1
    python projects/SparseDETR/export.py --config-file converted/config.yaml \\
        --weights converted/model_final.pth --output deploy/plugin.onnx --deform-attn plugin
    python projects/SparseDETR/export.py --config-file configs/quickstart_shapes.py \\
        --weights output/quickstart/model_final.pth --format torch-export --output deploy/model.pt2
    python projects/SparseDETR/export.py ... --format openvino --output deploy/sparse_detr.xml

The config is a LazyConfig (``.py`` or a ``.yaml`` saved by ``LazyConfig.save``, e.g. by
``convert_official.py``), a yacs ``.yaml`` (merged on ``add_sparse_detr_config``) or a model-zoo name;
trailing ``opts`` override it (``key=value`` for a LazyConfig, ``KEY VALUE`` for yacs).

The exported graph takes one image ``image`` Float[3, H, W] (the model's channel order, 0-255, any H and W
>= 65) and, for a sparse model, ``keep_ratio`` Float[] (rho, default ``--rho`` or the config's inference
rho, recorded in the ONNX metadata); it returns ``boxes`` Float[K, 4] (x1, y1, x2, y2 in input pixels),
``scores`` Float[K] and ``classes`` Int64[K]: the model's top detections for that image. ``--batch``
exports a graph of same-size batches instead (``images`` Float[B, 3, H, W]; outputs [B, K, ...] and
``nonempty`` Bool[B, K]). The file records the config's test resize (``INPUT.MIN_SIZE_TEST`` /
``MAX_SIZE_TEST`` or the LazyConfig's test ``ResizeShortestEdge``; 800 / 1333 for a model-only config),
the input format, the test dataset's class names and category ids and the default rho
(``sparse_detr.export.read_metadata``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from apps import num_model_classes
from detectron2.config import CfgNode, instantiate
from detectron2.data import transforms as T
from omegaconf import OmegaConf

import sparse_detr  # noqa: F401  (registers the meta-architecture for yacs configs)
from sparse_detr.config.arguments import keep_ratio, positive_int
from sparse_detr.data.catalog import category_ids, class_names
from sparse_detr.engine.predictor import Predictor
from sparse_detr.export import export_model
from sparse_detr.export.deployable import DEFORM_ATTN_IMPLS
from sparse_detr.export.exporters import EXPORT_FORMATS, ONNX_DEFORM_ATTN
from sparse_detr.export.metadata import DeploymentInfo
from sparse_detr.model_zoo.tool_configs import load_tool_config
from sparse_detr.utils.cli import run_tool, setup_tool_logger
from sparse_detr.utils.files import refuse_overwriting_inputs

logger = logging.getLogger("sparse_detr.export")


def load_model(config_file: str, weights: str | None, opts: list[str], device: str = "cpu"):
    """The config's model (``opts`` applied) with ``weights`` (default: the config's) loaded by
    ``sparse_detr.Predictor``, in eval mode on ``device``; returns (model, the weights loaded, the config).

    Raises:
        UntrainedModelError: no weights, a backbone initialisation (refused before anything is downloaded)
            or weights without fitting class heads: an export of random heads is no detector.
        CheckpointMismatchError: weights of another architecture.
    """
    usage = f"{Path(__file__).name} --config-file CONFIG [options]"
    cfg = load_tool_config(config_file, opts, weights, device, usage)
    weights = cfg.MODEL.WEIGHTS if isinstance(cfg, CfgNode) else cfg.train.init_checkpoint
    start = time.perf_counter()
    model = Predictor(cfg, device=device).model
    logger.info("built the model and loaded %s in %.1f s", weights, time.perf_counter() - start)
    return model, weights, cfg


def _test_resize(cfg) -> tuple[int, int]:
    """(shortest edge, max size) of the config's test resize."""
    if isinstance(cfg, CfgNode):
        return int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)
    node = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations")
    if node is None:  # a model-only config (convert_official.py): the official test resize
        return DeploymentInfo.shortest_edge, DeploymentInfo.max_size
    resizes = [a for a in instantiate(node) if isinstance(a, T.ResizeShortestEdge)]
    # one size: ResizeShortestEdge(96) keeps it as the range (96, 96)
    if len(resizes) != 1 or len(set(resizes[0].short_edge_length)) != 1:
        raise ValueError(
            "dataloader.test.mapper.augmentations: expected one ResizeShortestEdge with one shortest edge "
            f"(the test resize the exported file records), got {resizes}"
        )
    return int(resizes[0].short_edge_length[0]), int(resizes[0].max_size)


def deployment_info(cfg, model) -> DeploymentInfo:
    """What the exported file records besides the graph: the test resize and the labels' meaning."""
    num_classes = num_model_classes(model)
    shortest_edge, max_size = _test_resize(cfg)
    return DeploymentInfo(
        shortest_edge=shortest_edge,
        max_size=max_size,
        class_names=class_names(cfg, num_classes)[:num_classes],
        category_ids=category_ids(cfg, num_classes),
    )


def how_to_open(export_format: str, deform_attn: str) -> str:
    """How to run a file written with ``--format export_format --deform-attn deform_attn``."""
    if export_format == "torch-export" and deform_attn == "extension":
        return (
            "open it with sparse_detr.export.load_exported(path), or torch.export.load(path).module() after "
            "import sparse_detr (the program calls its op)"
        )
    if export_format == "openvino":
        return (
            "open it with sparse_detr.export.load_exported(path) (OpenVINO, f32, weights digest checked); "
            'plain OpenVINO: compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), else bf16 '
            "where the CPU has it (scores ~1e-2 off)"
        )
    if deform_attn == "plugin":
        return (
            "its deformable attention is MultiscaleDeformableAttnPlugin_TRT nodes: open it with "
            "sparse_detr.export.load_exported(path) (runtime='openvino' for OpenVINO), or TensorRT with its "
            "plugin library"
        )
    return "open it with sparse_detr.export.load_exported(path) (checks the file's digests and every input)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", required=True, help="LazyConfig .py/.yaml, yacs .yaml or model-zoo name"
    )
    parser.add_argument(
        "--weights", help="trained checkpoint to export (default: the config's trained weights)"
    )
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="export format")
    parser.add_argument("--output", required=True, help="output file (.onnx, OpenVINO .xml or .pt2)")
    parser.add_argument(
        "--rho", type=keep_ratio, help="default keep_ratio of a sparse model (default: the config's)"
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        default=(640, 640),
        help="size of the example image traced (the exported graph runs at any size >= 65)",
    )
    parser.add_argument(
        "--deform-attn",
        choices=sorted(set(ONNX_DEFORM_ATTN) | set(DEFORM_ATTN_IMPLS)),
        default="grid_sample",
        help="deformable attention in the exported graph: 'grid_sample' (standard ops, the default); ONNX "
        "'plugin': one MultiscaleDeformableAttnPlugin_TRT node each (TensorRT's plugin; ONNX Runtime / "
        "OpenVINO through sparse_detr.export.load_exported); torch-export "
        "'extension': the compiled sparse_detr op (needs sparse_detr to run)",
    )
    parser.add_argument(
        "--batch", action="store_true", help="a graph of same-size image batches (images Float[B, 3, H, W])"
    )
    parser.add_argument("--device", default="cpu", help="device the model is exported on")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides: key=value (LazyConfig) or KEY VALUE"
    )
    return parser


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    outputs = {"--output": output}
    if args.format == "openvino":
        outputs["--output's .bin"] = output.with_suffix(".bin")
    refuse_overwriting_inputs(outputs, {"--weights": args.weights, "--config-file": args.config_file})
    setup_tool_logger()  # the project's log messages on the console
    start = time.perf_counter()
    model, weights, cfg = load_model(args.config_file, args.weights, args.opts, args.device)
    refuse_overwriting_inputs(outputs, {"the config's weights": weights})
    path = export_model(
        model,
        output,
        args.format,
        image_size=tuple(args.image_size),
        keep_ratio=args.rho,
        deform_attn=args.deform_attn,
        batched=args.batch,
        deployment=deployment_info(cfg, model),
    )
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    print(how_to_open(args.format, args.deform_attn))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool: user errors in one line (exit 2), Ctrl-C in one (exit 130), tracebacks with --debug."""
    return run_tool(run, argv, "export.py")


if __name__ == "__main__":
    sys.exit(main())
