"""Deployment: Sparse DETR as one exportable function of one image (ONNX, torch.export).

``export_onnx`` / ``export_torch_program`` (or ``export_model`` by format name) take a built
:class:`~sparse_detr.modeling.SparseDETR`; :class:`DeployableSparseDETR` is the traced module.
"""

from .deployable import DEFORM_ATTN_IMPLS, DeployableSparseDETR, check_exportable
from .exporters import (
    EXPORT_FORMATS,
    MIN_IMAGE_SIZE,
    ONNX_OPSET,
    check_onnx,
    example_inputs,
    export_model,
    export_onnx,
    export_torch_program,
)

__all__ = [
    "DEFORM_ATTN_IMPLS",
    "DeployableSparseDETR",
    "EXPORT_FORMATS",
    "MIN_IMAGE_SIZE",
    "ONNX_OPSET",
    "check_exportable",
    "check_onnx",
    "example_inputs",
    "export_model",
    "export_onnx",
    "export_torch_program",
]
