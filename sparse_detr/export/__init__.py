"""Deployment: Sparse DETR as one exportable function of one image (ONNX, torch.export).

``export_onnx`` / ``export_torch_program`` (or ``export_model`` by format name) take a built
:class:`~sparse_detr.modeling.SparseDETR`; :class:`DeployableSparseDETR` is the traced module.
``onnxruntime_session`` / ``openvino_model`` open an exported ``.onnx`` (deformable-attention plugin nodes
included) and run it with checked inputs.
"""

from .deployable import DEFORM_ATTN_IMPLS, DeployableSparseDETR, check_exportable
from .exporters import (
    EXPORT_FORMATS,
    MIN_IMAGE_SIZE,
    ONNX_DEFORM_ATTN,
    ONNX_OPSET,
    check_onnx,
    example_inputs,
    export_model,
    export_onnx,
    export_torch_program,
)
from .runtimes import DetectorSession, onnxruntime_session, openvino_model

__all__ = [
    "DEFORM_ATTN_IMPLS",
    "DeployableSparseDETR",
    "DetectorSession",
    "EXPORT_FORMATS",
    "MIN_IMAGE_SIZE",
    "ONNX_DEFORM_ATTN",
    "ONNX_OPSET",
    "check_exportable",
    "check_onnx",
    "example_inputs",
    "export_model",
    "export_onnx",
    "export_torch_program",
    "onnxruntime_session",
    "openvino_model",
]
