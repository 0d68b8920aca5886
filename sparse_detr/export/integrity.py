"""Digests of an exported file's weights and graph: recorded at export, compared when the file is opened.

A runtime runs whatever bytes it reads: one flipped bit in an ONNX initializer (or an OpenVINO IR's ``.bin``)
passes ``onnx.checker`` and gives other detections, or none. The exporter records SHA-256 digests in the
file's metadata; :func:`~sparse_detr.export.load_exported` recomputes them and refuses a file that differs,
naming it and the part that changed.

- ONNX: ``sparse_detr.weights_sha256`` (every initializer: name, type, shape, data) and
  ``sparse_detr.graph_sha256`` (nodes, inputs, outputs and opsets).
- OpenVINO IR: ``sparse_detr.ir_bin_sha256``, the ``.bin`` file (the weights), and
  ``sparse_detr.ir_xml_sha256``, the ``.xml`` (the graph) with the metadata's own value left out.
- ``torch.export`` ``.pt2``: a zip archive whose members carry CRC-32s, checked on open
  (:func:`~sparse_detr.utils.zip_integrity.check_zip_members`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["CorruptedExportError", "onnx_digests", "file_sha256", "verify"]

WEIGHTS_KEY = "sparse_detr.weights_sha256"
GRAPH_KEY = "sparse_detr.graph_sha256"
IR_BIN_KEY = "sparse_detr.ir_bin_sha256"
IR_XML_KEY = "sparse_detr.ir_xml_sha256"
# the IR's metadata element (rt_info sparse_detr/metadata), whose value holds the digests
_IR_METADATA = re.compile(rb'(<sparse_detr>\s*<metadata value=")[^"]*(")')


class CorruptedExportError(ValueError):
    """An exported file whose content no longer matches the digests recorded when it was written."""


def onnx_digests(proto) -> dict[str, str]:
    """``{WEIGHTS_KEY: ..., GRAPH_KEY: ...}`` of an ONNX ``ModelProto`` (its metadata is not covered)."""
    weights = hashlib.sha256()
    for tensor in proto.graph.initializer:
        weights.update(tensor.SerializeToString(deterministic=True))
    graph = hashlib.sha256()
    for part in (proto.graph.node, proto.graph.input, proto.graph.output, proto.opset_import):
        for message in part:
            graph.update(message.SerializeToString(deterministic=True))
    return {WEIGHTS_KEY: weights.hexdigest(), GRAPH_KEY: graph.hexdigest()}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ir_xml_sha256(path: str | Path) -> str:
    """SHA-256 of an IR's ``.xml`` with the value of its ``sparse_detr`` metadata element left out."""
    blanked, found = _IR_METADATA.subn(rb"\1\2", Path(path).read_bytes())
    if found != 1:
        raise CorruptedExportError(f"{path}: {found} sparse_detr metadata elements in the IR, 1 expected")
    return hashlib.sha256(blanked).hexdigest()


def verify(path: str | Path, metadata: dict[str, str], actual: dict[str, str]) -> None:
    """Raise :class:`CorruptedExportError` when a digest in ``actual`` differs from ``metadata``'s.

    A file without recorded digests is refused too: every file the exporter writes has them.
    """
    names = {
        WEIGHTS_KEY: "its weights",
        GRAPH_KEY: "its graph",
        IR_BIN_KEY: "its weights (the IR's .bin)",
        IR_XML_KEY: "its graph (the IR's .xml)",
    }
    for key, value in actual.items():
        recorded = metadata.get(key)
        if recorded is None:
            raise CorruptedExportError(
                f"{path}: no {key} in the metadata: not written by this version of "
                "sparse_detr.export.export_model (export the model again)"
            )
        if recorded != value:
            raise CorruptedExportError(
                f"{path}: {names[key]} changed since export ({key} recorded {recorded[:12]}..., the file "
                f"has {value[:12]}...): the file is corrupted; export the model again or copy it anew"
            )
