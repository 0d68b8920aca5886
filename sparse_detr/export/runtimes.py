"""Open an exported file: :func:`load_exported`, checked runs of the detector it holds.

    detector = sparse_detr.export.load_exported("model.onnx", threads=2)   # .xml: OpenVINO, .pt2: torch
    boxes, scores, classes = detector.run(image, keep_ratio=0.1)          # image Float[3, H, W]

Before anything runs, the file is checked: its kind is read from its first bytes (an OpenVINO IR named
``.onnx`` or opened with ``runtime="onnxruntime"`` is named as such), its ``sparse_detr.*`` metadata must be
there and valid (:func:`~sparse_detr.export.metadata.checked_metadata`; a file not written by the exporter is
refused at open) and its weights and graph must match the digests recorded at export
(:mod:`.integrity`).

``.onnx`` files open in ONNX Runtime (default) or OpenVINO (``runtime="openvino"``), ``grid_sample`` files
(standard ops) and ``plugin`` files alike, whose ``MultiscaleDeformableAttnPlugin_TRT`` nodes
(:mod:`.plugin_op`) run the project's C++ CPU kernel (``torch.ops.sparse_detr.ms_deform_attn``):

- ONNX Runtime: as a Python custom op of onnxruntime-extensions (neither the onnxruntime nor the
  onnxruntime-extensions wheel ships the C API headers a custom-op library would be built against). The
  node's domain is mapped to the one those ops live in (``ai.onnx.contrib``) in the session's in-memory
  copy; the file is unchanged.
- OpenVINO: a Python ``openvino.Op`` whose ``evaluate`` calls the kernel, created from the ONNX node by a
  frontend ``ConversionExtension``; compiled with ``INFERENCE_PRECISION_HINT`` f32 (OpenVINO IRs too: the
  CPU plugin ignores the hint the IR records, and runs bf16 where the CPU has it).

A node costs the kernel plus one Python call and a memcpy of its output (ONNX Runtime also copies its
inputs): a few milliseconds per node against 0.3-0.5 s of sampling for a dense encoder layer at
800 x 1216. The kernel runs on torch's intra-op threads, set to ``threads`` inside the node (one setting per
process and runtime: the ``threads`` of the session opened last).

:meth:`DetectorSession.run` refuses inputs outside the graph's domain by name before running
(:mod:`.input_domain`). A plain ``onnxruntime.InferenceSession`` of a plugin file fails at load with
"trt.plugins:MultiscaleDeformableAttnPlugin_TRT(-1) is not a registered function/op", a plain
``openvino.Core().compile_model`` with "No conversion rule found for operations:
trt.plugins.MultiscaleDeformableAttnPlugin_TRT"; bare runtimes check no digest either.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from . import input_domain, integrity
from .metadata import OPENVINO_RT_INFO_PATH, checked_metadata, read_metadata
from .plugin_op import PLUGIN_DOMAIN, PLUGIN_OP_TYPE

__all__ = ["DetectorSession", "load_exported"]

ORT_CUSTOM_DOMAIN = "ai.onnx.contrib"  # where onnxruntime-extensions registers Python ops
OUTPUT_NAMES = ("boxes", "scores", "classes")
RUNTIMES = {"onnx": ("onnxruntime", "openvino"), "openvino-ir": ("openvino",), "torch-export": ("torch",)}
_KIND_NAMES = {
    "onnx": "an ONNX file", "openvino-ir": "an OpenVINO IR", "torch-export": "a torch.export program"
}


class DetectorSession:
    """An exported detector opened in a runtime: checked runs of one image (or of a same-size batch).

    Attributes:
        runtime: "onnxruntime", "openvino" or "torch".
        raw: the ``onnxruntime.InferenceSession``, ``openvino.CompiledModel`` or the ``torch.export``
            program's module (for your own feeds; its inputs are not checked).
        metadata: the file's ``sparse_detr.*`` metadata (input format, default keep ratio, domain...).
        uses_plugin: whether the graph holds ``MultiscaleDeformableAttnPlugin_TRT`` nodes.
        batched: whether the graph takes a batch ``images`` Float[B, 3, H, W] of one size.
        token_strides: input pixels per encoder token, per level (from the metadata).
        min_image_size: the smallest side the graph takes (from the strides: the coarsest level is 2 x 2).
    """

    def __init__(self, runtime: str, raw, metadata: dict[str, str], path: Path, uses_plugin: bool = False):
        info = checked_metadata(metadata, path)
        self.runtime = runtime
        self.raw = raw
        self.metadata = metadata
        self.uses_plugin = uses_plugin
        self.batched = info.batched
        self.is_sparse = info.default_keep_ratio is not None
        self.default_keep_ratio = info.default_keep_ratio
        self.token_strides = info.token_strides
        self.min_image_size = info.min_image_size

    def feeds(self, image: Any, keep_ratio: Any = None) -> dict[str, np.ndarray]:
        """The graph's input dict for ``image`` Float[3, H, W] (batched: Float[B, 3, H, W] or a list of
        same-size Float[3, H, W]) and ``keep_ratio`` (default: the file's), or ValueError naming the input
        outside the graph's domain."""
        if self.batched:
            images = [
                input_domain.check_image(x, self.min_image_size, f"images[{i}]") for i, x in enumerate(image)
            ]
            sizes = sorted({x.shape[1:] for x in images})
            if len(sizes) != 1:
                raise ValueError(
                    f"images of {len(sizes)} sizes {sizes}: a batched graph takes images of one size "
                    "(padding would change the smaller images' detections); run each size as its own batch"
                )
            feeds = {"images": np.stack(images)}
            height, width = sizes[0]
        else:
            array = input_domain.check_image(image, self.min_image_size)
            feeds = {"image": array}
            height, width = array.shape[1:]
        if not self.is_sparse:
            if keep_ratio is not None:
                raise ValueError(
                    f"keep_ratio {keep_ratio!r}: this graph has a dense encoder (no keep_ratio input)"
                )
            return feeds
        if keep_ratio is None:
            keep_ratio = self.default_keep_ratio
        feeds["keep_ratio"] = input_domain.check_keep_ratio(keep_ratio, height, width, self.token_strides)
        return feeds

    def run(self, image: Any, keep_ratio: Any = None):
        """(boxes Float[K, 4] x1 y1 x2 y2 in input pixels, scores Float[K], classes Int64[K]) of ``image``;
        for a batched graph, a list of such triples, one per image.

        Args:
            image: Float[3, H, W], the model's channel order (metadata ``sparse_detr.input_format``), 0-255,
                H, W >= :attr:`min_image_size`, finite (batched: a list or array of same-size ones).
            keep_ratio: rho of a sparse graph, in (0, 1] and at least one token (default: the file's).
        """
        feeds = self.feeds(image, keep_ratio)
        names = (*OUTPUT_NAMES, "nonempty") if self.batched else OUTPUT_NAMES
        if self.runtime == "onnxruntime":
            outputs = self.raw.run(list(names), feeds)
        elif self.runtime == "openvino":
            results = self.raw(feeds)
            outputs = [results[self.raw.output(name)] for name in names]
        else:
            import torch

            with torch.no_grad():
                outputs = [x.numpy() for x in self.raw(*(torch.from_numpy(v) for v in feeds.values()))]
        if not self.batched:
            return tuple(outputs)
        boxes, scores, classes, nonempty = outputs
        return [(b[k], s[k], c[k]) for b, s, c, k in zip(boxes, scores, classes, nonempty)]


def _file_kind(path: Path) -> str:
    """"onnx", "openvino-ir" or "torch-export", from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith((b"<?xml", b"<net")):
        return "openvino-ir"
    if head.startswith(b"PK\x03\x04"):
        return "torch-export"
    return "onnx"


def load_exported(
    path: str | Path, runtime: str | None = None, *, device: str = "CPU", threads: int | None = None
) -> DetectorSession:
    """Open a file written by :func:`~sparse_detr.export.export_model` in the runtime that runs it.

    Args:
        path: an exported ``.onnx`` (ONNX Runtime by default), OpenVINO ``.xml`` IR (OpenVINO) or
            ``.pt2`` program (``torch.export.load``; ``deform_attn="extension"`` programs need
            ``sparse_detr``'s compiled op, which importing this package loads).
        runtime: "onnxruntime" or "openvino" for an ``.onnx`` file; default the file's own runtime.
        device: OpenVINO device ("CPU"; the plugin kernel and ``torch`` programs run on the CPU).
        threads: intra-op threads of the runtime and of the plugin kernel (default: the runtime's).
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a runtime that cannot open this kind of file, a file without the exporter's metadata or
            with invalid metadata (the key, the file and the value named), or a file whose weights or graph
            differ from the digests recorded at export (:class:`~.integrity.CorruptedExportError`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    kind = _file_kind(path)
    runtime = runtime or RUNTIMES[kind][0]
    if runtime not in RUNTIMES[kind]:
        if kind == "openvino-ir":
            raise ValueError(
                f"{path} is an OpenVINO IR: {runtime} cannot open it; load_exported(path) opens it with "
                "OpenVINO"
            )
        raise ValueError(
            f"{path} is {_KIND_NAMES[kind]}: runtime {runtime!r} cannot open it; choose one of "
            f"{RUNTIMES[kind]}"
        )
    if kind == "openvino-ir":
        return _openvino_ir(path, device, threads)
    if kind == "torch-export":
        return _torch_program(path)
    proto, metadata, uses_plugin = _load_onnx(path)
    if runtime == "onnxruntime":
        return _onnxruntime_session(path, proto, metadata, uses_plugin, threads)
    return _openvino_model(path, metadata, uses_plugin, device, threads)


def _load_onnx(path: Path):
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001  (protobuf raises several types for a broken file)
        raise ValueError(f"{path} is not a readable ONNX file: {error}") from error
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    checked_metadata(metadata, path)
    integrity.verify(path, metadata, integrity.onnx_digests(proto))
    uses_plugin = any(node.op_type == PLUGIN_OP_TYPE for node in proto.graph.node)
    return proto, metadata, uses_plugin


def _torch_program(path: Path) -> DetectorSession:
    import torch

    import sparse_detr.layers  # noqa: F401  (the compiled op of "extension" programs)
    from sparse_detr.utils.zip_integrity import check_zip_members

    try:
        check_zip_members(path)
    except ValueError as error:
        raise integrity.CorruptedExportError(str(error)) from error
    metadata = read_metadata(path)
    checked_metadata(metadata, path)
    program = torch.export.load(str(path))
    return DetectorSession("torch", program.module(), metadata, path)


def _run_kernel(value, spatial_shapes, level_start_index, locations, weights, threads: int | None):
    """The plugin node on numpy arrays: Float[N, Lq, M, D] from the project's C++ kernel."""
    import torch

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)  # per calling thread with OpenMP: the runtime's thread may be new
    output = torch.ops.sparse_detr.ms_deform_attn(
        torch.from_numpy(value),
        torch.from_numpy(spatial_shapes).long(),
        torch.from_numpy(level_start_index).long(),
        torch.from_numpy(locations),
        torch.from_numpy(weights),
    )
    return output.view(value.shape[0], locations.shape[1], value.shape[2], value.shape[3])


def _require_kernel() -> None:
    from sparse_detr import _ext

    _ext.require_extension()
    import sparse_detr.layers  # noqa: F401  (registers the op's fake kernel)


_ort_threads: dict[str, int | None] = {"threads": None}  # the kernel's threads in ONNX Runtime


@functools.cache
def _register_ort_op() -> str:
    """Register the plugin node's kernel with onnxruntime-extensions once; returns its library path.

    onnxruntime-extensions hands a Python op's inputs over as numpy copies (a memcpy) but takes its outputs
    back through ``array.flatten().tolist()``: ~1 s for the 20 MB of one dense encoder layer at 800 x 1216.
    The invocation hook installed here returns this op's array itself (copied into ONNX Runtime's output
    with one memcpy) and leaves every other Python op to the package's own hook.
    """
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
        from onnxruntime_extensions._ocos import Opdef, _on_pyop_invocation
    except ImportError as error:
        raise ImportError(
            f"this ONNX file holds {PLUGIN_OP_TYPE} nodes (exported with deform_attn='plugin'); running "
            "them in ONNX Runtime needs onnxruntime-extensions: pip install 'sparse_detr[export]'"
        ) from error
    _require_kernel()
    floating, int32 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32

    def multiscale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights):
        threads = _ort_threads["threads"]
        return _run_kernel(value, spatial_shapes, level_start_index, locations, weights, threads).numpy()

    signature = dict(inputs=[floating, int32, int32, floating, floating], outputs=[floating])
    onnx_op(op_type=PLUGIN_OP_TYPE, **signature)(multiscale_deformable_attn)
    plugin_ids = {op_id for op_id, op in Opdef._odlist.items() if op.body is multiscale_deformable_attn}

    def invoke(op_id, inputs, attributes):
        if op_id not in plugin_ids:
            return _on_pyop_invocation(op_id, inputs, attributes)
        output = multiscale_deformable_attn(*inputs)
        return op_id, output.shape, np.ascontiguousarray(output)

    PyCustomOpDef.install_hooker(invoke)
    return get_library_path()


def _onnxruntime_session(
    path: Path, proto, metadata: dict[str, str], uses_plugin: bool, threads: int | None
) -> DetectorSession:
    """ONNX Runtime on the CPU, with the plugin node's kernel when the graph holds one."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    model: str | bytes = str(path)
    if uses_plugin:
        # ONNX Runtime's idle pool threads would spin through the kernel's OpenMP work on the same cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.register_custom_ops_library(_register_ort_op())
        _ort_threads["threads"] = threads
        for node in proto.graph.node:
            if node.domain == PLUGIN_DOMAIN:
                node.domain = ORT_CUSTOM_DOMAIN
        for opset in proto.opset_import:
            if opset.domain == PLUGIN_DOMAIN:
                opset.domain = ORT_CUSTOM_DOMAIN
        model = proto.SerializeToString()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return DetectorSession("onnxruntime", session, metadata, path, uses_plugin)


@functools.cache
def _openvino_plugin_op():
    """The ``openvino.Op`` class running the plugin node with the project's kernel (created once)."""
    import openvino as ov

    _require_kernel()

    class MultiscaleDeformableAttn(ov.Op):
        """Float[N, Lq, M, D] from (value, spatial_shapes, level_start_index, locations, weights)."""

        threads: int | None = None

        def __init__(self, inputs=None):
            super().__init__(self, inputs)

        def validate_and_infer_types(self):
            value = self.get_input_partial_shape(0)
            locations = self.get_input_partial_shape(3)
            shape = ov.PartialShape([value[0], locations[1], value[2], value[3]])
            self.set_output_type(0, self.get_input_element_type(0), shape)

        def clone_with_new_inputs(self, new_inputs):
            return MultiscaleDeformableAttn(new_inputs)

        def visit_attributes(self, visitor):
            return True

        def has_evaluate(self):
            return True

        def evaluate(self, outputs, inputs):
            import torch

            arrays = [tensor.data for tensor in inputs]
            result = _run_kernel(*arrays, threads=MultiscaleDeformableAttn.threads)
            outputs[0].shape = list(result.shape)
            torch.from_numpy(outputs[0].data).copy_(result)
            return True

    return MultiscaleDeformableAttn


def _openvino_config(threads: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _openvino_model(
    path: Path, metadata: dict[str, str], uses_plugin: bool, device: str, threads: int | None
) -> DetectorSession:
    """An ``.onnx`` compiled by OpenVINO in f32 (``INFERENCE_PRECISION_HINT``), with the plugin kernel."""
    import openvino as ov

    core = ov.Core()
    if uses_plugin:
        from openvino.frontend.onnx import ConversionExtension

        if device != "CPU":
            raise ValueError(
                f"device {device!r}: the {PLUGIN_OP_TYPE} kernel of this file runs on the CPU only"
            )
        op = _openvino_plugin_op()
        op.threads = threads

        def convert(context):
            return op([context.get_input(index) for index in range(5)]).outputs()

        core.add_extension(ConversionExtension(PLUGIN_OP_TYPE, PLUGIN_DOMAIN, convert))
    compiled = core.compile_model(core.read_model(str(path)), device, _openvino_config(threads))
    return DetectorSession("openvino", compiled, metadata, path, uses_plugin)


def _openvino_ir(path: Path, device: str, threads: int | None) -> DetectorSession:
    """An OpenVINO IR (``.xml`` and the ``.bin`` beside it) compiled in f32, its weights checked first."""
    import json

    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as error:
        raise ValueError(f"{path} is not a readable OpenVINO IR (with {path.with_suffix('.bin').name}): "
                         f"{str(error).splitlines()[0]}") from error
    if not model.has_rt_info(OPENVINO_RT_INFO_PATH):
        raise ValueError(f"{path}: no sparse_detr metadata in the IR: not a file written by "
                         "sparse_detr.export.export_model")
    metadata = json.loads(model.get_rt_info(OPENVINO_RT_INFO_PATH).astype(str))
    checked_metadata(metadata, path)
    integrity.verify(path, metadata, {integrity.IR_XML_KEY: integrity.ir_xml_sha256(path)})
    integrity.verify(path.with_suffix(".bin"), metadata,
                     {integrity.IR_BIN_KEY: integrity.file_sha256(path.with_suffix(".bin"))})
    compiled = core.compile_model(model, device, _openvino_config(threads))
    return DetectorSession("openvino", compiled, metadata, path)
