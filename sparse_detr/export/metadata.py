"""What a deployment needs besides the graph, stored in the exported file, and the test resize it describes.

Every exported file carries ``sparse_detr.*`` string entries (:func:`export_metadata`): the test resize
(shortest edge, max size: Detectron2's ``ResizeShortestEdge``), the input format and normalisation, the
class names and dataset category ids of the labels, the default keep ratio, the graph's layout (one image or
a batch) and the exporter's version. They live in the ONNX ``metadata_props``, in the ``torch.export``
program's extra file ``sparse_detr_metadata.json`` and in an OpenVINO IR's ``rt_info``; :func:`read_metadata`
reads them back from any of the three. :func:`preprocess` turns a photo into the graph's input with them,
and maps the detected boxes back to the photo.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparse_detr._version import __version__
from sparse_detr.modeling.input_size import minimum_image_side

__all__ = [
    "DeploymentInfo",
    "GraphInfo",
    "checked_metadata",
    "Preprocessed",
    "export_metadata",
    "preprocess",
    "read_metadata",
    "resized_shape",
    "METADATA_FILE",
]

# name of the torch.export program's extra file holding the metadata (a JSON object)
METADATA_FILE = "sparse_detr_metadata.json"
# where an OpenVINO IR holds the metadata JSON in its rt_info
OPENVINO_RT_INFO_PATH = ["sparse_detr", "metadata"]
PREFIX = "sparse_detr."
NOT_OURS = "not a file written by sparse_detr.export.export_model"
# Detectron2's test resize of the official configs (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``)
DEFAULT_SHORTEST_EDGE, DEFAULT_MAX_SIZE = 800, 1333


@dataclass
class DeploymentInfo:
    """What the exporter cannot read from the model: the test resize and the meaning of the labels.

    Attributes:
        shortest_edge: the test resize's shorter side (``INPUT.MIN_SIZE_TEST``).
        max_size: the cap on the longer side (``INPUT.MAX_SIZE_TEST``).
        class_names: name of each label (the model's logits), or None when unknown.
        category_ids: the dataset's category id of each label (``thing_dataset_id_to_contiguous_id``
            inverted; the COCO ids for COCO), or None when unknown.
    """

    shortest_edge: int = DEFAULT_SHORTEST_EDGE
    max_size: int = DEFAULT_MAX_SIZE
    class_names: Sequence[str] | None = None
    category_ids: Sequence[int] | None = None

    def __post_init__(self):
        if int(self.shortest_edge) < 1 or int(self.max_size) < int(self.shortest_edge):
            raise ValueError(
                f"test resize: shortest_edge ({self.shortest_edge}) must be >= 1 and max_size "
                f"({self.max_size}) >= shortest_edge"
            )
        ids = self.category_ids
        if ids is not None and len(set(ids)) != len(ids):
            raise ValueError(f"DeploymentInfo.category_ids has duplicates: {list(ids)}")


def export_metadata(
    model, info: DeploymentInfo | None, *, default_keep_ratio: float | None, batched: bool, deform_attn: str
) -> dict[str, str]:
    """The ``sparse_detr.*`` entries of an exported :class:`SparseDETR` (all values strings).

    Raises:
        ValueError: ``info``'s class names or category ids do not number the model's labels.
    """
    import torch

    info = info or DeploymentInfo()
    num_classes = model.heads.class_heads[0].out_features
    metadata = {
        "exporter_version": f"sparse_detr {__version__} (torch {torch.__version__})",
        "input_format": model.input_format,
        "pixel_mean": json.dumps(model.pixel_mean.flatten().tolist()),
        "pixel_std": json.dumps(model.pixel_std.flatten().tolist()),
        "test_shortest_edge": str(int(info.shortest_edge)),
        "test_max_size": str(int(info.max_size)),
        "num_classes": str(num_classes),
        "max_detections": str(model.top_detections.max_detections),
        "batched": json.dumps(batched),
        "deform_attn": deform_attn,
    }
    metadata["min_image_size"] = str(minimum_image_side(model.level_strides))
    for name in ("class_names", "category_ids"):
        value = getattr(info, name)
        if value is None:
            continue
        if len(value) != num_classes:
            raise ValueError(
                f"{name}: {len(value)} entries for a model with {num_classes} class logits "
                "(MODEL.SPARSE_DETR.NUM_CLASSES / model.heads.num_classes)"
            )
        metadata[name] = json.dumps([str(v) if name == "class_names" else int(v) for v in value])
    if default_keep_ratio is not None:
        # the float32 rho of the graph, printed as the decimal it was given as ("0.1", not "0.10000000149")
        metadata["default_keep_ratio"] = f"{float(default_keep_ratio):.7g}"
    return {PREFIX + key: value for key, value in metadata.items()}


@dataclass(frozen=True)
class GraphInfo:
    """What running an exported graph needs from its metadata, validated (:func:`checked_metadata`).

    Attributes:
        token_strides: input pixels per encoder token, per level (positive integers).
        min_image_size: the smallest image side: the coarsest level must be 2 x 2 (from the strides).
        default_keep_ratio: rho of a sparse graph in (0, 1], None for a dense one.
        batched: the graph takes ``images`` Float[B, 3, H, W].
    """

    token_strides: list[int]
    min_image_size: int
    default_keep_ratio: float | None
    batched: bool


def _entry(metadata: Mapping[str, str], key: str, path, parse, expected: str, required: bool = True):
    """``parse(metadata[PREFIX + key])``, or ValueError naming the key, the file and the value."""
    name = PREFIX + key
    if name not in metadata:
        if not required:
            return None
        raise ValueError(f"{path}: metadata {name} is missing ({expected} expected): {NOT_OURS}, or altered")
    raw = metadata[name]
    try:
        value = parse(raw)
    except (TypeError, ValueError):  # json.JSONDecodeError is a ValueError
        value = None
    if value is None:
        raise ValueError(f"{path}: metadata {name} = {raw!r} is not {expected}")
    return value


def _strides(text: str) -> list[int] | None:
    strides = json.loads(text)
    ok = isinstance(strides, list) and strides and all(type(s) is int and s > 0 for s in strides)
    return strides if ok else None


def _keep_ratio(text: str) -> float | None:
    value = float(text)
    return value if 0.0 < value <= 1.0 else None  # NaN fails both


def _positive_int(text: str) -> int | None:
    value = int(text)
    return value if value > 0 else None


def checked_metadata(metadata: Mapping[str, str], path) -> GraphInfo:
    """Validate an exported file's metadata (``path`` names the file in errors) -> :class:`GraphInfo`.

    ``min_image_size`` follows from ``token_strides``; a recorded value that contradicts them is refused.
    """
    if not any(key.startswith(PREFIX) for key in metadata):
        raise ValueError(f"{path}: no sparse_detr metadata: {NOT_OURS}")
    strides = _entry(metadata, "token_strides", path, _strides, "a JSON list of positive integers")
    smallest = minimum_image_side(strides)
    recorded = _entry(metadata, "min_image_size", path, int, "an integer", required=False)
    if recorded is not None and recorded != smallest:
        raise ValueError(
            f"{path}: metadata {PREFIX}min_image_size = {recorded!r} contradicts the graph's token strides "
            f"{strides} (the coarsest level must be 2 x 2: {smallest})"
        )
    for key in ("test_shortest_edge", "test_max_size", "num_classes"):
        _entry(metadata, key, path, _positive_int, "a positive integer")
    _entry(metadata, "input_format", path, lambda v: v if v in ("RGB", "BGR") else None, '"RGB" or "BGR"')
    batched = _entry(metadata, "batched", path, {"true": True, "false": False}.get, "true or false")
    rho = _entry(metadata, "default_keep_ratio", path, _keep_ratio, "a number in (0, 1]", required=False)
    return GraphInfo(token_strides=strides, min_image_size=smallest, default_keep_ratio=rho, batched=batched)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``sparse_detr.*`` entries of an exported ``.onnx``, ``.pt2`` or OpenVINO ``.xml`` file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as error:  # noqa: BLE001  (protobuf raises several types for a broken file)
            raise ValueError(f"{path} is not a readable ONNX file: {error}") from error
        metadata = {p.key: p.value for p in proto.metadata_props if p.key.startswith(PREFIX)}
        if not metadata:
            raise ValueError(f"{path}: no sparse_detr metadata in the ONNX file: {NOT_OURS}")
        return metadata
    if path.suffix == ".pt2":
        import torch

        extra = {METADATA_FILE: ""}
        torch.export.load(str(path), extra_files=extra)
        if not extra[METADATA_FILE]:
            raise ValueError(f"{path}: no {METADATA_FILE} in the program: {NOT_OURS}")
        return json.loads(extra[METADATA_FILE])
    if path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        if not model.has_rt_info(OPENVINO_RT_INFO_PATH):
            raise ValueError(f"{path}: no sparse_detr metadata in the IR: {NOT_OURS}")
        return json.loads(model.get_rt_info(OPENVINO_RT_INFO_PATH).astype(str))
    raise ValueError(f"{path}: expected an exported .onnx, .pt2 or OpenVINO .xml file")


def resized_shape(height: int, width: int, shortest_edge: int, max_size: int) -> tuple[int, int]:
    """(H', W') of Detectron2's ``ResizeShortestEdge(shortest_edge, max_size)`` test resize.

    The shorter side becomes ``shortest_edge`` unless the longer one would then exceed ``max_size``, in
    which case the longer side becomes ``max_size``; both are rounded half up.
    """
    size = float(shortest_edge)
    scale = size / min(height, width)
    # the shorter side is set, the longer one scaled, then both capped: Detectron2's order of operations,
    # so that the rounding agrees
    new_height, new_width = (size, scale * width) if height < width else (scale * height, size)
    longest = max(new_height, new_width)
    if longest > max_size:
        cap = max_size / longest
        new_height, new_width = new_height * cap, new_width * cap
    return int(new_height + 0.5), int(new_width + 0.5)


@dataclass
class Preprocessed:
    """A photo as the exported graph's input, and the way back to the photo's pixels.

    Attributes:
        image: Float32[3, H', W'] 0-255 in the model's channel order (the graph's ``image`` input).
        original_size: (H, W) of the photo.
    """

    image: np.ndarray
    original_size: tuple[int, int]

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Float[K, 4] (x1, y1, x2, y2) in the graph's input pixels -> in the photo's, clipped to it
        (Detectron2's ``detector_postprocess`` to the original ``height`` / ``width``)."""
        height, width = self.original_size
        scale = np.array([width / self.image.shape[2], height / self.image.shape[1]] * 2, dtype=np.float32)
        limits = np.array([width, height] * 2, dtype=np.float32)
        return np.clip(np.asarray(boxes, dtype=np.float32) * scale, 0, limits)


def preprocess(image: np.ndarray, metadata: Mapping[str, str], image_format: str = "RGB") -> Preprocessed:
    """Detectron2's test-time input for an exported model: the test resize and the channel order.

    Args:
        image: (H, W, 3) uint8 photo in ``image_format`` channel order ("RGB", e.g. from PIL, or "BGR",
            e.g. from OpenCV).
        metadata: the exported file's entries (:func:`read_metadata`, ONNX Runtime's
            ``session.get_modelmeta().custom_metadata_map``).
    Returns:
        the resized image (bilinear, as Detectron2's ``ResizeTransform`` on uint8 images) and its size.
    """
    from PIL import Image

    from sparse_detr.utils.input_checks import check_image_array, check_input_format

    check_input_format(image_format, "image_format")
    check_image_array(image, image_format, "image")
    source = "the metadata"
    shortest_edge = _entry(metadata, "test_shortest_edge", source, _positive_int, "a positive integer")
    max_size = _entry(metadata, "test_max_size", source, _positive_int, "a positive integer")
    input_format = _entry(metadata, "input_format", source, lambda v: v if v in ("RGB", "BGR") else None,
                          '"RGB" or "BGR"')
    if image_format != input_format:
        image = image[:, :, ::-1]
    height, width = image.shape[:2]
    new_height, new_width = resized_shape(height, width, shortest_edge, max_size)
    if (new_height, new_width) != (height, width):
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((new_width, new_height), Image.BILINEAR)
        image = np.asarray(resized)
    tensor = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    return Preprocessed(image=tensor, original_size=(height, width))
