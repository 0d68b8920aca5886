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
import io
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn
from torch.fx.experimental import _config as symbolic_shapes_config

from sparse_detr.modeling.input_size import minimum_image_side
from sparse_detr.utils.files import atomic_write

from . import input_domain, integrity
from .deployable import DeployableSparseDETR, default_keep_ratio
from .metadata import METADATA_FILE, OPENVINO_RT_INFO_PATH, DeploymentInfo, export_metadata, read_metadata

__all__ = ["EXPORT_FORMATS", "export_model"]

# format -> the file suffix it is written as
EXPORT_FORMATS = {"onnx": ".onnx", "openvino": ".xml", "torch-export": ".pt2"}
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
    smallest = _min_image_size(deployable)
    if min(height, width) < smallest:
        raise ValueError(f"image_size must be at least {smallest} x {smallest}, got {image_size}")
    device = deployable.model.device
    shape = (EXAMPLE_BATCH, 3, height, width) if deployable.batched else (3, height, width)
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(device) * 255
    if not deployable.is_sparse:
        return (image,)
    return image, deployable.default_keep_ratio.clone()


def _min_image_size(deployable: DeployableSparseDETR) -> int:
    return minimum_image_side(deployable.model.level_strides)


def _dynamic_shapes(deployable: DeployableSparseDETR):
    height = torch.export.Dim("height", min=_min_image_size(deployable))
    width = torch.export.Dim("width", min=_min_image_size(deployable))
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
            # into memory first: torch.export.save aborts the process on a full disk
            buffer = io.BytesIO()
            torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(metadata)})
            atomic_write(path, buffer.getbuffer())
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
            :func:`~sparse_detr.export.load_exported`;
            needs ``sparse_detr._C``).
        batched: a graph of same-size image batches (outputs also ``nonempty`` Bool[batch, K]).
        deployment: test resize and label meaning for the metadata (default the official 800 / 1333).
    Returns:
        the path written.
    """
    _import_onnx()
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
    metadata.update(integrity.onnx_digests(proto))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with _step("checking the graph (onnx.checker, strict shape inference)"):
        check_onnx(proto)
    path = Path(path)
    with _step(f"writing {path}"):
        atomic_write(path, proto.SerializeToString())
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
    results, as :func:`~sparse_detr.export.load_exported` does (without it scores move by ~1e-2;
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
    import tempfile

    import openvino as ov

    path = Path(path)
    metadata = read_metadata(onnx_path)
    for key in (integrity.WEIGHTS_KEY, integrity.GRAPH_KEY):  # those of the ONNX file, not of the IR
        metadata.pop(key, None)
    ov_model = ov.convert_model(str(onnx_path))
    ov_model.set_rt_info("f32", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    with tempfile.TemporaryDirectory() as directory:
        # written once to learn the digests, then with them: OpenVINO writes the same .bin again and the
        # same .xml but for the metadata's value, which the .xml's digest leaves out
        staged = Path(directory) / "model.xml"
        ov_model.set_rt_info(json.dumps(metadata), OPENVINO_RT_INFO_PATH)
        ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        digests = {
            integrity.IR_BIN_KEY: integrity.file_sha256(staged.with_suffix(".bin")),
            integrity.IR_XML_KEY: integrity.ir_xml_sha256(staged),
        }
        ov_model.set_rt_info(json.dumps(metadata | digests), OPENVINO_RT_INFO_PATH)
        ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        again = {
            integrity.IR_BIN_KEY: integrity.file_sha256(staged.with_suffix(".bin")),
            integrity.IR_XML_KEY: integrity.ir_xml_sha256(staged),
        }
        if again != digests:
            raise RuntimeError("OpenVINO wrote the same model twice differently: no digest can be recorded")
        # the .bin first: an .xml is never beside a .bin older than itself
        atomic_write(path.with_suffix(".bin"), staged.with_suffix(".bin").read_bytes())
        atomic_write(path, staged.read_bytes())
    return path


def check_onnx(path_or_proto) -> None:
    """``onnx.checker`` (full check) and strict shape inference: every value gets a type."""
    onnx = _import_onnx()
    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto))
    path = "the ONNX graph" if proto is path_or_proto else path_or_proto
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    typed = {v.name for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    typed |= {t.name for t in inferred.graph.initializer}
    missing = [out for node in inferred.graph.node for out in node.output if out and out not in typed]
    if missing:
        raise ValueError(f"{path}: shape inference left {len(missing)} values untyped, e.g. {missing[:5]}")


def export_model(
    model: nn.Module,
    path: str | Path,
    format: str | None = None,  # noqa: A002  (the word users know, as in torch.onnx / ultralytics)
    *,
    image_size: tuple[int, int] = (640, 640),
    keep_ratio: float | None = None,
    deform_attn: str = "grid_sample",
    batched: bool = False,
    deployment: DeploymentInfo | None = None,
) -> Path:
    """Export ``model`` to ``path`` as ``format``; :func:`~sparse_detr.export.load_exported` opens it.

    The graph takes ``image`` Float[3, H, W] (0-255, the model's channel order, any H and W the graph's token
    strides allow: 65 for the paper's models) and, for a sparse model, ``keep_ratio`` Float[]; it returns
    ``boxes`` Float[K, 4] (x1, y1, x2, y2 input pixels), ``scores`` Float[K] and ``classes`` Int64[K].
    The file records what a deployment needs (:func:`~sparse_detr.export.read_metadata`) and digests of its
    weights and graph, checked by :func:`~sparse_detr.export.load_exported`. It is written under a temporary
    name and renamed when complete (a full disk leaves an earlier file intact).

    Args:
        model: a :class:`SparseDETR` with its weights (on the device to trace on; ONNX and OpenVINO: CPU).
        path: the output file: ``.onnx``, OpenVINO ``.xml`` (its ``.bin`` beside it) or ``.pt2``.
        format: "onnx", "openvino" (an IR of the ONNX graph, float32 weights, f32 precision recorded) or
            "torch-export" (``torch.export.save``); default from ``path``'s suffix.
        image_size: (H, W) of the example image traced.
        keep_ratio: default rho recorded in the file (default: the model's).
        deform_attn: "grid_sample" (standard ops; any runtime); ONNX "plugin": each deformable attention one
            ``MultiscaleDeformableAttnPlugin_TRT`` node (:mod:`.plugin_op`; TensorRT's plugin, or the
            project's kernel through ``load_exported``); torch-export "extension": the compiled op (the
            program then needs ``import sparse_detr`` where it runs).
        batched: a graph of same-size image batches ``images`` Float[B, 3, H, W] (outputs [B, K, ...] and
            ``nonempty`` Bool[B, K]; images of different sizes go in separate calls).
        deployment: test resize and label meaning for the metadata (default the official 800 / 1333).
    Returns:
        the path written.
    """
    path = Path(path)
    if format is None:
        by_suffix = {suffix: name for name, suffix in EXPORT_FORMATS.items()}
        if path.suffix not in by_suffix:
            raise ValueError(f"{path}: name the format (one of {tuple(EXPORT_FORMATS)}) or use a suffix of "
                             f"{tuple(by_suffix)}")
        format = by_suffix[path.suffix]  # noqa: A001
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {tuple(EXPORT_FORMATS)}, got {format!r}")
    if path.suffix != EXPORT_FORMATS[format]:
        raise ValueError(f"{path}: a {format} export is written as a {EXPORT_FORMATS[format]} file")
    common = dict(image_size=image_size, keep_ratio=keep_ratio, batched=batched, deployment=deployment)
    if format == "onnx":
        if deform_attn not in ONNX_DEFORM_ATTN:
            raise ValueError(f"ONNX export takes deform_attn in {ONNX_DEFORM_ATTN}, got {deform_attn!r}")
        return export_onnx(model, path, deform_attn=deform_attn, **common)
    if format == "openvino":
        if deform_attn != "grid_sample":
            raise ValueError(
                "openvino export uses deform_attn='grid_sample' (standard ops only); for the plugin node "
                "export ONNX and open it with load_exported(path, runtime='openvino')"
            )
        return export_openvino(model, path, **common)
    export_torch_program(model, path, deform_attn=deform_attn, **common)
    return path
