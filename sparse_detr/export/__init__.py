"""Deployment: Sparse DETR as one exported function of an image (ONNX, OpenVINO IR, torch.export).

    from sparse_detr.export import export_model, load_exported, preprocess
    export_model(model, "model.onnx")                 # or "model.xml" (OpenVINO IR), "model.pt2"
    detector = load_exported("model.onnx")            # runtime="openvino" for an .onnx in OpenVINO
    photo = preprocess(image_rgb, detector.metadata)  # Detectron2's test resize and channel order
    boxes, scores, classes = detector.run(photo.image)
    boxes = photo.boxes_to_original(boxes)

Every file records what a deployment needs (:func:`read_metadata`, :class:`DeploymentInfo`) and digests of
its weights and graph, which :func:`load_exported` checks before anything runs.
"""
from .exporters import export_model
from .metadata import preprocess, read_metadata
from .runtimes import load_exported

__all__ = ["export_model", "load_exported", "preprocess", "read_metadata"]
