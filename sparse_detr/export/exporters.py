"""Export a :class:`SparseDETR` to ONNX or to a ``torch.export`` program (one image, dynamic H and W).

Both take the image as ``image`` (Float[3, H, W], 0-255, the model's channel order) and, for a sparse
model, the keeping ratio as ``keep_ratio`` (Float[]); they return ``boxes`` Float[K, 4] (x1, y1, x2, y2,
input pixels), ``scores`` Float[K] and ``classes`` Int64[K] (see :class:`DeployableSparseDETR`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

from .deployable import DeployableSparseDETR, default_keep_ratio

__all__ = [
    "EXPORT_FORMATS",
    "MIN_IMAGE_SIZE",
    "ONNX_DEFORM_ATTN",
    "ONNX_OPSET",
    "export_onnx",
    "export_torch_program",
    "export_model",
    "example_inputs",
]

EXPORT_FORMATS = ("onnx", "torch-export")
# how an ONNX file holds deformable attention: standard ops, or one TensorRT-layout plugin node (plugin_op.py)
ONNX_DEFORM_ATTN = ("grid_sample", "plugin")
ONNX_OPSET = 18
# the smallest level (stride 64 with 4 levels) must be at least 2 x 2 for one graph to serve every size
MIN_IMAGE_SIZE = 65
INPUT_NAMES = ("image", "keep_ratio")
OUTPUT_NAMES = ("boxes", "scores", "classes")
# what ONNX export imports, all in the package's "export" extra (with the runtimes)
ONNX_MODULES = ("onnx", "onnxscript")

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _step(description: str):
    """Log ``description`` when the step starts and how long it took when it ends."""
    logger.info("%s ...", description)
    start = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", description, time.perf_counter() - start)


def _import_onnx():
    """``onnx``, or a ModuleNotFoundError naming the package extra that installs the export modules."""
    missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"ONNX export needs {' and '.join(missing)}, which are not installed: install the package's "
            "export extra (the exporters and the runtimes), pip install 'sparse-detr[export]'",
            name=missing[0],
        )
    import onnx

    return onnx


def _deployable(model: nn.Module, keep_ratio: float | None, deform_attn: str) -> DeployableSparseDETR:
    deployable = DeployableSparseDETR(model, deform_attn=deform_attn)
    if keep_ratio is not None and not deployable.is_sparse:
        raise ValueError(
            f"keep_ratio (--rho) {keep_ratio}: this model has a dense encoder (no token scorer, "
            "MODEL.SPARSE_DETR.TOKEN_SCORER / model.token_scorer, or no encoder layer)"
        )
    rho = default_keep_ratio(model, keep_ratio)
    if deployable.is_sparse and rho is not None:
        deployable.default_keep_ratio.fill_(rho)
    return deployable.eval()


def example_inputs(deployable: DeployableSparseDETR, image_size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """(image,) or (image, keep_ratio): a random 0-255 image of ``image_size`` (H, W), model's device."""
    height, width = image_size
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}, got {image_size}")
    device = deployable.model.device
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)).to(device) * 255
    if not deployable.is_sparse:
        return (image,)
    return image, deployable.default_keep_ratio.clone()


def _dynamic_shapes(deployable: DeployableSparseDETR):
    height = torch.export.Dim("height", min=MIN_IMAGE_SIZE)
    width = torch.export.Dim("width", min=MIN_IMAGE_SIZE)
    image = {1: height, 2: width}
    return (image, None) if deployable.is_sparse else (image,)


def _export_program(deployable: DeployableSparseDETR, image_size: tuple[int, int]):
    height, width = image_size
    with torch.no_grad(), _step(f"tracing the model (torch.export, example image {height} x {width})"):
        return torch.export.export(
            deployable, example_inputs(deployable, image_size), dynamic_shapes=_dynamic_shapes(deployable)
        )


def export_torch_program(
    model: nn.Module,
    path: str | Path | None = None,
    *,
    image_size: tuple[int, int] = (640, 640),
    keep_ratio: float | None = None,
    deform_attn: str = "grid_sample",
) -> torch.export.ExportedProgram:
    """``torch.export`` of the one-image detector with dynamic H and W, saved to ``path`` if given.

    Args:
        model: a :class:`SparseDETR` (weights loaded; put on the device the program should run on).
        path: ``.pt2`` file for ``torch.export.save`` (load with ``torch.export.load``), or None.
        image_size: (H, W) of the example image used for tracing (any size >= 65 runs afterwards).
        keep_ratio: default rho recorded in the wrapper (the model's inference rho if None). The program's
            inputs are ``(image, keep_ratio)`` for a sparse model, ``(image,)`` for a dense one.
        deform_attn: "grid_sample" (standard ops) or "extension" (the compiled ``sparse_detr`` op: the
            program then needs ``import sparse_detr`` where it runs).
    """
    program = _export_program(_deployable(model, keep_ratio, deform_attn), image_size)
    if path is not None:
        with _step(f"writing {path}"):
            torch.export.save(program, str(path))
    return program


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    image_size: tuple[int, int] = (640, 640),
    keep_ratio: float | None = None,
    opset: int = ONNX_OPSET,
    deform_attn: str = "grid_sample",
) -> Path:
    """Export the one-image detector to an ONNX file (dynamo exporter).

    The graph's inputs are ``image`` Float[3, height, width] and, for a sparse model, ``keep_ratio``
    Float[], a required input (an ONNX input with a default initializer becomes a constant in OpenVINO);
    its default, the model's inference rho or ``keep_ratio``, is in the metadata
    (``sparse_detr.default_keep_ratio``). The file passes
    ``onnx.checker`` (full check) and strict shape inference. The metadata also records the inputs'
    domain (``sparse_detr.keep_ratio_range``, ``sparse_detr.min_image_size``, ``sparse_detr.token_strides``)
    and ``sparse_detr.deform_attn``.

    Args:
        model: a :class:`SparseDETR` on the CPU.
        path: output ``.onnx`` file.
        image_size: (H, W) of the example image used for tracing.
        keep_ratio: default rho (the model's inference rho if None).
        opset: ONNX opset (>= 17: GridSample and LayerNormalization).
        deform_attn: "grid_sample" (standard ops only: any ONNX runtime) or "plugin" (each deformable
            attention one ``MultiscaleDeformableAttnPlugin_TRT`` node, see :mod:`.plugin_op`: TensorRT
            with NVIDIA's plugin library, ONNX Runtime and OpenVINO through
            :func:`~sparse_detr.export.onnxruntime_session` / :func:`~sparse_detr.export.openvino_model`;
            needs ``sparse_detr._C``).
    Returns:
        the path written.
    """
    onnx = _import_onnx()
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (GridSample, LayerNormalization), got {opset}")
    if deform_attn not in ONNX_DEFORM_ATTN:
        raise ValueError(f"deform_attn must be one of {ONNX_DEFORM_ATTN} for ONNX, got {deform_attn!r}")
    from . import input_domain, plugin_op

    plugin = deform_attn == "plugin"
    deployable = _deployable(model, keep_ratio, "extension" if plugin else "grid_sample")
    program = _export_program(deployable, image_size)
    names = list(INPUT_NAMES[: 2 if deployable.is_sparse else 1])
    with _step(f"converting to ONNX (opset {opset})"):
        onnx_program = torch.onnx.export(
            program,
            input_names=names,
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamo=True,
            verbose=False,
            custom_translation_table=plugin_op.deform_attn_translation() if plugin else None,
        )
    proto = onnx_program.model_proto
    _name_image_dims(proto)
    if plugin:
        plugin_op.type_plugin_outputs(proto)
    _add_metadata(proto, deployable)
    input_domain.add_domain_metadata(proto, deployable.model, deform_attn, MIN_IMAGE_SIZE)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _step(f"writing {path}"):
        onnx.save(proto, str(path))
    with _step("checking the file (onnx.checker, strict shape inference)"):
        check_onnx(path)
    return path


def _name_image_dims(proto) -> None:
    """Call the image's symbolic dims ``height`` and ``width`` everywhere in the graph."""
    image = next(i for i in proto.graph.input if i.name == INPUT_NAMES[0])
    dims = image.type.tensor_type.shape.dim
    names = {dims[1].dim_param: "height", dims[2].dim_param: "width"}
    graph = proto.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _add_metadata(proto, deployable: DeployableSparseDETR) -> None:
    """Input format, normalisation and default keep ratio as ONNX metadata (``sparse_detr.*`` keys)."""
    model = deployable.model
    metadata = {
        "sparse_detr.input_format": model.input_format,
        "sparse_detr.num_classes": str(model.heads.class_heads[0].out_features),
        "sparse_detr.max_detections": str(model.max_detections),
        "sparse_detr.min_image_size": str(MIN_IMAGE_SIZE),
        "sparse_detr.pixel_mean": json.dumps(model.pixel_mean.flatten().tolist()),
        "sparse_detr.pixel_std": json.dumps(model.pixel_std.flatten().tolist()),
    }
    if deployable.is_sparse:
        metadata["sparse_detr.default_keep_ratio"] = repr(float(deployable.default_keep_ratio))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def check_onnx(path: str | Path) -> None:
    """``onnx.checker`` (full check) and strict shape inference: every value gets a type."""
    onnx = _import_onnx()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    typed = {v.name for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    typed |= {t.name for t in inferred.graph.initializer}
    missing = [out for node in inferred.graph.node for out in node.output if out and out not in typed]
    if missing:
        raise ValueError(f"{path}: shape inference left {len(missing)} values untyped, e.g. {missing[:5]}")


def export_model(
    model: nn.Module,
    output: str | Path,
    export_format: str,
    *,
    image_size: tuple[int, int] = (640, 640),
    keep_ratio: float | None = None,
    deform_attn: str = "grid_sample",
) -> Path:
    """Export ``model`` to ``output`` in ``export_format`` ("onnx" or "torch-export"); returns the path.

    ``deform_attn``: "grid_sample" or "plugin" for ONNX (:func:`export_onnx`), "grid_sample" or
    "extension" for torch-export (:func:`export_torch_program`).
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    if export_format == "onnx":
        if deform_attn not in ONNX_DEFORM_ATTN:
            raise ValueError(f"ONNX export takes deform_attn in {ONNX_DEFORM_ATTN}, got {deform_attn!r}")
        return export_onnx(
            model, output, image_size=image_size, keep_ratio=keep_ratio, deform_attn=deform_attn
        )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    export_torch_program(model, output, image_size=image_size, keep_ratio=keep_ratio, deform_attn=deform_attn)
    return output
