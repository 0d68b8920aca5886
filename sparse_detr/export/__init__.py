"""Deployment: Sparse DETR as one exportable function of an image or a batch (ONNX, OpenVINO, torch.export).

``export_onnx`` / ``export_openvino`` / ``export_torch_program`` (or ``export_model`` by format name) take
a built :class:`~sparse_detr.modeling.SparseDETR`; :class:`DeployableSparseDETR` is the traced module.
Every file records what a deployment needs (:func:`read_metadata`); :func:`preprocess` applies it to a
photo (Detectron2's test resize and channel order) and maps the boxes back.
``onnxruntime_session`` / ``openvino_model`` open an exported ``.onnx`` (deformable-attention plugin nodes
included) and run it with checked inputs.
"""
# ruff: noqa: F401  (the other names stay importable from the package; the public ones are in __all__)

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
    export_openvino,
    export_torch_program,
    onnx_to_openvino,
)
from .metadata import DeploymentInfo, Preprocessed, preprocess, read_metadata, resized_shape
from .runtimes import DetectorSession, onnxruntime_session, openvino_model

__all__ = ["export_model", "onnxruntime_session", "openvino_model", "preprocess"]
