"""Open an exported ``.onnx`` in ONNX Runtime or OpenVINO (CPU), deformable-attention plugin nodes included.

    detector = sparse_detr.export.onnxruntime_session("model.onnx", threads=2)   # or openvino_model(path)
    boxes, scores, classes = detector.run(image, keep_ratio=0.1)                 # image Float[3, H, W]

Both open ``grid_sample`` files (standard ops) and ``plugin`` files, whose
``MultiscaleDeformableAttnPlugin_TRT`` nodes (:mod:`.plugin_op`) run the project's C++ CPU kernel
(``torch.ops.sparse_detr.ms_deform_attn``):

- ONNX Runtime: as a Python custom op of onnxruntime-extensions (neither the onnxruntime nor the
  onnxruntime-extensions wheel ships the C API headers a custom-op library would be built against). The
  node's domain is mapped to the one those ops live in (``ai.onnx.contrib``) in the session's in-memory
  copy; the file is unchanged.
- OpenVINO: a Python ``openvino.Op`` whose ``evaluate`` calls the kernel, created from the ONNX node by a
  frontend ``ConversionExtension``; compiled with ``INFERENCE_PRECISION_HINT`` f32.

A node costs the kernel plus one Python call and a memcpy of its output (ONNX Runtime also copies its
inputs): a few milliseconds per node against 0.3-0.5 s of sampling for a dense encoder layer at
800 x 1216. The kernel runs on torch's intra-op threads, set to ``threads`` inside the node (one setting per
process and runtime: the ``threads`` of the session opened last).

:meth:`DetectorSession.run` refuses inputs outside the graph's domain by name before running
(:mod:`.input_domain`). A plain ``onnxruntime.InferenceSession`` of a plugin file fails at load with
"trt.plugins:MultiscaleDeformableAttnPlugin_TRT(-1) is not a registered function/op", a plain
``openvino.Core().compile_model`` with "No conversion rule found for operations:
trt.plugins.MultiscaleDeformableAttnPlugin_TRT": open such files with these helpers.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import input_domain
from .plugin_op import PLUGIN_DOMAIN, PLUGIN_OP_TYPE

__all__ = ["DetectorSession", "onnxruntime_session", "openvino_model"]

ORT_CUSTOM_DOMAIN = "ai.onnx.contrib"  # where onnxruntime-extensions registers Python ops
OUTPUT_NAMES = ("boxes", "scores", "classes")


class DetectorSession:
    """An exported detector opened in a runtime: checked runs of one image.

    Attributes:
        runtime: "onnxruntime" or "openvino".
        raw: the ``onnxruntime.InferenceSession`` or ``openvino.CompiledModel`` (for your own feeds; its
            inputs are not checked).
        metadata: the file's ``sparse_detr.*`` metadata (input format, default keep ratio, domain...).
        uses_plugin: whether the graph holds ``MultiscaleDeformableAttnPlugin_TRT`` nodes.
    """

    def __init__(
        self, runtime: str, raw, metadata: dict[str, str], input_names: list[str], uses_plugin: bool
    ):
        self.runtime = runtime
        self.raw = raw
        self.metadata = metadata
        self.input_names = input_names
        self.uses_plugin = uses_plugin
        self.is_sparse = "keep_ratio" in input_names
        self.min_image_size = int(metadata.get("sparse_detr.min_image_size", 65))
        self.token_strides = json.loads(metadata.get("sparse_detr.token_strides", "[8, 16, 32, 64]"))

    @property
    def default_keep_ratio(self) -> float | None:
        value = self.metadata.get("sparse_detr.default_keep_ratio")
        return None if value is None else float(value)

    def feeds(self, image: Any, keep_ratio: Any = None) -> dict[str, np.ndarray]:
        """The graph's input dict for ``image`` Float[3, H, W] and ``keep_ratio`` (default: the file's),
        or ValueError naming the input outside the graph's domain."""
        array = input_domain.check_image(image, self.min_image_size)
        feeds = {"image": array}
        if not self.is_sparse:
            if keep_ratio is not None:
                raise ValueError(
                    f"keep_ratio {keep_ratio!r}: this graph has a dense encoder (no keep_ratio input)"
                )
            return feeds
        if keep_ratio is None:
            keep_ratio = self.default_keep_ratio
        feeds["keep_ratio"] = input_domain.check_keep_ratio(keep_ratio, *array.shape[1:], self.token_strides)
        return feeds

    def run(self, image: Any, keep_ratio: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes Float[K, 4] x1 y1 x2 y2 in input pixels, scores Float[K], classes Int64[K]) of ``image``.

        Args:
            image: Float[3, H, W], the model's channel order (metadata ``sparse_detr.input_format``), 0-255,
                H, W >= ``sparse_detr.min_image_size``, finite.
            keep_ratio: rho of a sparse graph, in (0, 1] and at least one token (default: the file's).
        """
        feeds = self.feeds(image, keep_ratio)
        if self.runtime == "onnxruntime":
            return tuple(self.raw.run(list(OUTPUT_NAMES), feeds))
        results = self.raw(feeds)
        return tuple(results[self.raw.output(name)] for name in OUTPUT_NAMES)


def _load(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001  (protobuf raises several types for a broken file)
        raise ValueError(f"{path} is not a readable ONNX file: {error}") from error
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    uses_plugin = any(node.op_type == PLUGIN_OP_TYPE for node in proto.graph.node)
    input_names = [value.name for value in proto.graph.input]
    return proto, metadata, uses_plugin, input_names


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


def onnxruntime_session(path: str | Path, threads: int | None = None) -> DetectorSession:
    """Open ``path`` in ONNX Runtime on the CPU, with the plugin node's kernel when the graph holds one.

    Args:
        path: a ``.onnx`` from :func:`~sparse_detr.export.export_onnx` (either ``deform_attn``).
        threads: intra-op threads of ONNX Runtime and of the plugin kernel (default: the runtimes').
    """
    import onnxruntime as ort

    proto, metadata, uses_plugin, input_names = _load(path)
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
    return DetectorSession("onnxruntime", session, metadata, input_names, uses_plugin)


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


def openvino_model(path: str | Path, device: str = "CPU", threads: int | None = None) -> DetectorSession:
    """Compile ``path`` with OpenVINO in f32 (``INFERENCE_PRECISION_HINT``), with the plugin node's kernel.

    Args:
        path: a ``.onnx`` from :func:`~sparse_detr.export.export_onnx` (either ``deform_attn``).
        device: OpenVINO device; the plugin kernel runs on the host CPU ("CPU" for plugin files).
        threads: ``INFERENCE_NUM_THREADS`` and the plugin kernel's threads (default: OpenVINO's).
    """
    import openvino as ov

    _, metadata, uses_plugin, input_names = _load(path)
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
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), device, config)
    return DetectorSession("openvino", compiled, metadata, input_names, uses_plugin)
