"""Export a :class:`SparseDETR` to ONNX, an OpenVINO IR or a ``torch.export`` program (dynamic H and W).

All take the image as ``image`` (Float[3, H, W], 0-255, the model's channel order; with ``batched=True``
``images`` Float[B, 3, H, W], dynamic B) and, for a sparse model, the keeping ratio as ``keep_ratio``
(Float[]); they return ``boxes`` Float[K, 4] (x1, y1, x2, y2, input pixels), ``scores`` Float[K] and
``classes`` Int64[K] (batched: [B, K, ...] and ``nonempty`` Bool[B, K]; see :class:`DeployableSparseDETR`).
Every file carries the deployment metadata of :mod:`sparse_detr.export.metadata`.
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
from torch.fx.experimental import _config as symbolic_shapes_config

from . import input_domain
from .deployable import DeployableSparseDETR, default_keep_ratio
from .metadata import (
    METADATA_FILE,
    MIN_IMAGE_SIZE,
    OPENVINO_RT_INFO_PATH,
    DeploymentInfo,
    export_metadata,
    read_metadata,
)

__all__ = [
    "EXPORT_FORMATS",
    "MIN_IMAGE_SIZE",
    "ONNX_DEFORM_ATTN",
    "ONNX_OPSET",
    "export_onnx",
    "export_openvino",
    "export_torch_program",
    "onnx_to_openvino",
    "export_model",
    "example_inputs",
]

EXPORT_FORMATS = ("onnx", "openvino", "torch-export")
# how an ONNX file holds deformable attention: standard ops, or one TensorRT-layout plugin node (plugin_op.py)
ONNX_DEFORM_ATTN = ("grid_sample", "plugin")
ONNX_OPSET = 18
INPUT_NAMES = ("image", "keep_ratio")
BATCHED_INPUT_NAMES = ("images", "keep_ratio")
OUTPUT_NAMES = ("boxes", "scores", "classes")
BATCHED_OUTPUT_NAMES = ("boxes", "scores", "classes", "nonempty")
# the batch size of the example traced for a batched graph (2: a traced size 1 would be specialised)
EXAMPLE_BATCH = 2
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


def _deployable(
    model: nn.Module, keep_ratio: float | None, deform_attn: str, batched: bool = False
) -> DeployableSparseDETR:
    deployable = DeployableSparseDETR(model, deform_attn=deform_attn, batched=batched)
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
    """(image,) or (image, keep_ratio): a random 0-255 image of ``image_size`` (H, W) (a batch of
    ``EXAMPLE_BATCH`` for a batched graph), on the model's device."""
    height, width = image_size
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}, got {image_size}")
    device = deployable.model.device
    shape = (EXAMPLE_BATCH, 3, height, width) if deployable.batched else (3, height, width)
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device) * 255
    if not deployable.is_sparse:
        return (image,)
    return image, deployable.default_keep_ratio.clone()


def _dynamic_shapes(deployable: DeployableSparseDETR):
    height = torch.export.Dim("height", min=MIN_IMAGE_SIZE)
    width = torch.export.Dim("width", min=MIN_IMAGE_SIZE)
    if deployable.batched:
        image = {0: torch.export.Dim("batch", min=1), 2: height, 3: width}
    else:
        image = {1: height, 2: width}
    return (image, None) if deployable.is_sparse else (image,)


def _export_program(deployable: DeployableSparseDETR, image_size: tuple[int, int]):
    height, width = image_size
    # One image: size-oblivious tracing, so that a size of 1 in the traced example (a map side of one Swin
    # window) is not fixed into the graph. Not for batches: PyTorch's own attention reshapes would then
    # fix the batch to more than one image (Swin batches are refused in DeployableSparseDETR).
    with (
        torch.no_grad(),
        symbolic_shapes_config.patch(backed_size_oblivious=not deployable.batched),
        _step(f"tracing the model (torch.export, example image {height} x {width})"),
    ):
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
    batched: bool = False,
    deployment: DeploymentInfo | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` of the detector with dynamic H and W, saved to ``path`` if given.

    Args:
        model: a :class:`SparseDETR` (weights loaded; put on the device the program should run on).
        path: ``.pt2`` file for ``torch.export.save`` (load with ``torch.export.load``), or None.
        image_size: (H, W) of the example image used for tracing (any size >= 65 runs afterwards).
        keep_ratio: default rho recorded in the wrapper (the model's inference rho if None). The program's
            inputs are ``(image, keep_ratio)`` for a sparse model, ``(image,)`` for a dense one.
        deform_attn: "grid_sample" (standard ops) or "extension" (the compiled ``sparse_detr`` op: the
            program then needs ``import sparse_detr`` where it runs).
        batched: the program takes ``images`` Float[B, 3, H, W] (dynamic B) and also returns ``nonempty``.
        deployment: test resize and label meaning for the metadata (extra file ``sparse_detr_metadata.json``,
            read back with :func:`~sparse_detr.export.read_metadata`); default the official 800 / 1333 resize.
    """
    deployable = _deployable(model, keep_ratio, deform_attn, batched)
    metadata = _metadata(deployable, deployment)  # checked before the slow trace
    program = _export_program(deployable, image_size)
    if path is not None:
        with _step(f"writing {path}"):
            torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(metadata)})
    return program


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    image_size: tuple[int, int] = (640, 640),
    keep_ratio: float | None = None,
    opset: int = ONNX_OPSET,
    deform_attn: str = "grid_sample",
    batched: bool = False,
    deployment: DeploymentInfo | None = None,
) -> Path:
    """Export the detector to an ONNX file (dynamo exporter).

    The graph's inputs are ``image`` Float[3, height, width] (``batched``: ``images`` Float[batch, 3,
    height, width]) and, for a sparse model, ``keep_ratio`` Float[], a required input (an ONNX input with
    a default initializer becomes a constant in OpenVINO); its default, the model's inference rho or
    ``keep_ratio``, is in the metadata (``sparse_detr.default_keep_ratio``) with the rest of
    :func:`~sparse_detr.export.metadata.export_metadata` and the inputs' domain
    (``sparse_detr.keep_ratio_range``, ``sparse_detr.min_image_size``, ``sparse_detr.token_strides``).
    The file passes ``onnx.checker`` (full check) and strict shape inference.

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
        batched: a graph of same-size image batches (outputs also ``nonempty`` Bool[batch, K]).
        deployment: test resize and label meaning for the metadata (default the official 800 / 1333).
    Returns:
        the path written.
    """
    onnx = _import_onnx()
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (GridSample, LayerNormalization), got {opset}")
    if deform_attn not in ONNX_DEFORM_ATTN:
        raise ValueError(f"deform_attn must be one of {ONNX_DEFORM_ATTN} for ONNX, got {deform_attn!r}")
    from . import plugin_op

    plugin = deform_attn == "plugin"
    deployable = _deployable(model, keep_ratio, "extension" if plugin else "grid_sample", batched)
    metadata = _metadata(deployable, deployment, deform_attn)
    program = _export_program(deployable, image_size)
    input_names = BATCHED_INPUT_NAMES if batched else INPUT_NAMES
    with _step(f"converting to ONNX (opset {opset})"):
        onnx_program = torch.onnx.export(
            program,
            input_names=list(input_names[: 2 if deployable.is_sparse else 1]),
            output_names=list(BATCHED_OUTPUT_NAMES if batched else OUTPUT_NAMES),
            opset_version=opset,
            dynamo=True,
            verbose=False,
            custom_translation_table=plugin_op.deform_attn_translation() if plugin else None,
        )
    proto = onnx_program.model_proto
    _name_image_dims(proto, input_names[0], batched)
    if plugin:
        plugin_op.type_plugin_outputs(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _step(f"writing {path}"):
        onnx.save(proto, str(path))
    with _step("checking the file (onnx.checker, strict shape inference)"):
        check_onnx(path)
    return path


def _name_image_dims(proto, image_name: str, batched: bool) -> None:
    """Call the image's symbolic dims ``batch``, ``height`` and ``width`` everywhere in the graph."""
    image = next(i for i in proto.graph.input if i.name == image_name)
    dims = image.type.tensor_type.shape.dim
    if batched:
        names = {dims[0].dim_param: "batch", dims[2].dim_param: "height", dims[3].dim_param: "width"}
    else:
        names = {dims[1].dim_param: "height", dims[2].dim_param: "width"}
    graph = proto.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _metadata(
    deployable: DeployableSparseDETR, deployment: DeploymentInfo | None, deform_attn: str | None = None
) -> dict[str, str]:
    """The file's ``sparse_detr.*`` metadata: :func:`export_metadata` and the inputs' domain.

    ``deform_attn`` is the form the file holds (default the deployable's; "plugin" for plugin ONNX files).
    """
    rho = float(deployable.default_keep_ratio) if deployable.is_sparse else None
    metadata = export_metadata(
        deployable.model,
        deployment,
        default_keep_ratio=rho,
        batched=deployable.batched,
        deform_attn=deform_attn or deployable.deform_attn,
    )
    metadata.update(input_domain.domain_metadata(deployable.model))
    return metadata


def export_openvino(
    model: nn.Module,
    path: str | Path,
    *,
    image_size: tuple[int, int] = (640, 640),
    keep_ratio: float | None = None,
    batched: bool = False,
    deployment: DeploymentInfo | None = None,
) -> Path:
    """Export the detector as an OpenVINO IR (``path`` ``.xml`` + ``.bin``): the ONNX graph of
    :func:`export_onnx`, float32 weights (no fp16 compression), the metadata in the IR's ``rt_info``
    (:func:`~sparse_detr.export.read_metadata`) and f32 inference precision recorded in its runtime
    options (``rt_info["runtime_options"]["INFERENCE_PRECISION_HINT"]``).

    OpenVINO 2026.4's CPU plugin applies only its KV-cache and dynamic-quantization runtime options from
    a model, so on CPUs with bf16 units compile with ``{"INFERENCE_PRECISION_HINT": "f32"}`` for float32
    results, as :func:`~sparse_detr.export.openvino_model` does (without it scores move by ~1e-2;
    ``benchmarks/openvino_precision.py``).
    """
    import tempfile

    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"{path}: an OpenVINO IR is written as a .xml file (with its .bin beside it)")
    with tempfile.TemporaryDirectory() as directory:
        onnx_path = export_onnx(
            model,
            Path(directory) / "model.onnx",
            image_size=image_size,
            keep_ratio=keep_ratio,
            batched=batched,
            deployment=deployment,
        )
        return onnx_to_openvino(onnx_path, path)


def onnx_to_openvino(onnx_path: str | Path, path: str | Path) -> Path:
    """Convert an ONNX file of :func:`export_onnx` into the OpenVINO IR ``path`` (see
    :func:`export_openvino`): float32 weights, the metadata and f32 runtime options in ``rt_info``."""
    import openvino as ov

    path = Path(path)
    metadata = read_metadata(onnx_path)
    ov_model = ov.convert_model(str(onnx_path))
    ov_model.set_rt_info("f32", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    ov_model.set_rt_info(json.dumps(metadata), OPENVINO_RT_INFO_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path


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
    batched: bool = False,
    deployment: DeploymentInfo | None = None,
) -> Path:
    """Export ``model`` to ``output`` in ``export_format`` (see :data:`EXPORT_FORMATS`); returns the path.

    ``deform_attn``: "grid_sample" or "plugin" for ONNX (:func:`export_onnx`), "grid_sample" for OpenVINO,
    "grid_sample" or "extension" for torch-export (:func:`export_torch_program`).
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    common = dict(image_size=image_size, keep_ratio=keep_ratio, batched=batched, deployment=deployment)
    if export_format == "onnx":
        if deform_attn not in ONNX_DEFORM_ATTN:
            raise ValueError(f"ONNX export takes deform_attn in {ONNX_DEFORM_ATTN}, got {deform_attn!r}")
        return export_onnx(model, output, deform_attn=deform_attn, **common)
    if export_format == "openvino":
        if deform_attn != "grid_sample":
            raise ValueError(
                "openvino export uses deform_attn='grid_sample' (standard ops only); for the plugin node "
                "export ONNX and open it with sparse_detr.export.openvino_model"
            )
        return export_openvino(model, output, **common)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    export_torch_program(model, output, deform_attn=deform_attn, **common)
    return output
