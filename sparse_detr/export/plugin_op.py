"""Deformable attention as one ONNX node in the layout of TensorRT's ``MultiscaleDeformableAttnPlugin_TRT``.

With ``export_model(..., format="onnx", deform_attn="plugin")`` every call of the compiled op
``sparse_detr::ms_deform_attn`` becomes one node ``MultiscaleDeformableAttnPlugin_TRT`` (domain
``trt.plugins``, version 1, no attributes):

- inputs ``value`` Float[N, S, M, D], ``spatial_shapes`` Int32[L, 2] (H, W), ``level_start_index``
  Int32[L], ``sampling_locations`` Float[N, Lq, M, L, P, 2] (normalised x, y), ``attention_weights``
  Float[N, Lq, M, L, P];
- output Float[N, Lq, M, D] (the exported graph reshapes it to the op's [N, Lq, M * D]).

That is the node NVIDIA's plugin library (``libnvinfer_plugin``, TensorRT OSS
``plugin/multiscaleDeformableAttnPlugin``) implements: TensorRT's ONNX parser maps a node it has no importer
for to the registered plugin of the same name (version from a ``plugin_version`` attribute, "1" when absent).
``trt.plugins`` is the domain TensorRT's tools and ONNX Runtime's TensorRT provider use for such nodes.
The sampling is Deformable DETR's (bilinear, ``align_corners=False``, zeros outside), the same as the CUDA
plugin's kernel and the project's kernels.

ONNX Runtime and OpenVINO have no such op: :mod:`sparse_detr.export.runtimes` registers the project's C++
kernel for it.
"""

from __future__ import annotations

__all__ = [
    "PLUGIN_DOMAIN",
    "PLUGIN_OP_TYPE",
    "PLUGIN_VERSION",
    "deform_attn_translation",
    "plugin_nodes",
    "type_plugin_outputs",
]

PLUGIN_OP_TYPE = "MultiscaleDeformableAttnPlugin_TRT"
PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_VERSION = 1



def _plugin_schema():
    """The node's signature for onnxscript (not registered with onnx: checkers skip custom domains)."""
    from onnx.defs import OpSchema

    parameter = OpSchema.FormalParameter
    return OpSchema(
        PLUGIN_OP_TYPE,
        PLUGIN_DOMAIN,
        PLUGIN_VERSION,
        doc="Multi-scale deformable attention (TensorRT plugin layout); output [N, Lq, M, D].",
        inputs=[
            parameter("value", "T"),
            parameter("spatial_shapes", "tensor(int32)"),
            parameter("level_start_index", "tensor(int32)"),
            parameter("sampling_locations", "T"),
            parameter("attention_weights", "T"),
        ],
        outputs=[parameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float32 or float16 (as the plugin)")],
    )


def deform_attn_translation() -> dict:
    """The dynamo exporter's ``custom_translation_table``: ``sparse_detr::ms_deform_attn`` -> plugin node."""
    import onnx
    import torch
    from onnxscript import opset18 as op
    from onnxscript.values import Op, Opset

    from sparse_detr import _ext

    _ext.require_extension()
    plugin = Op(Opset(PLUGIN_DOMAIN, PLUGIN_VERSION), PLUGIN_OP_TYPE, _plugin_schema())

    def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        int32 = onnx.TensorProto.INT32
        output = plugin(
            value,
            op.Cast(spatial_shapes, to=int32),
            op.Cast(level_start_index, to=int32),
            sampling_locations,
            attention_weights,
        )
        return op.Reshape(output, op.Constant(value_ints=[0, 0, -1]))  # [N, Lq, M, D] -> [N, Lq, M * D]

    return {torch.ops.sparse_detr.ms_deform_attn.default: ms_deform_attn}


def plugin_nodes(proto) -> list:
    """The graph's ``MultiscaleDeformableAttnPlugin_TRT`` nodes (any domain)."""
    return [node for node in proto.graph.node if node.op_type == PLUGIN_OP_TYPE]


def type_plugin_outputs(proto) -> None:
    """Give every plugin node's output its type and shape [N, Lq, M, D] (ONNX cannot infer a custom op's).

    Dims are copied from the inputs as shape inference typed them: N, M, D of ``value``, Lq of
    ``sampling_locations``.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    values = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.input)}
    typed = {v.name for v in proto.graph.value_info}
    for node in plugin_nodes(proto):
        if node.output[0] in typed:
            continue
        value = values[node.input[0]].type.tensor_type
        locations = values[node.input[3]].type.tensor_type
        dims = [value.shape.dim[0], locations.shape.dim[1], value.shape.dim[2], value.shape.dim[3]]
        info = onnx.helper.make_tensor_value_info(
            node.output[0], value.elem_type, [d.dim_param or d.dim_value or None for d in dims]
        )
        proto.graph.value_info.append(info)
