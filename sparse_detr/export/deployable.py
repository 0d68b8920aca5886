"""The exported function of a :class:`SparseDETR`: the model's own forward, for unpadded images.

:class:`DeployableSparseDETR` is a thin adapter: normalise -> ``SparseDETR.predict`` without a padding mask
and with the keep ratio as a tensor -> the model's ``top_detections`` -> boxes clipped to the image
(``clipped_pixel_boxes``). The components themselves are written for graphs (level sizes read from map
shapes, the number of kept tokens bounded with ``torch._check``, branches decided from shapes), so
``torch.export`` and the ONNX exporter capture the very code the Detectron2 model runs, with every size
derived from the image shape (dynamic B, H and W) and the number of refined encoder tokens computed in the
graph from the ``keep_ratio`` input. Only how deformable attention is written differs, chosen with
``deform_attn`` (standard ``grid_sample`` ops so that ONNX Runtime / OpenVINO run it as is, or the compiled
op for ``torch.export`` programs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sparse_detr.layers.ms_deform_attn_function import forced_backend
from sparse_detr.modeling.backbone import SwinBackbone
from sparse_detr.modeling.backbone.precision import CONFIG_KEY as BACKBONE_DTYPE_KEY
from sparse_detr.modeling.encoder import SparseDeformableEncoder
from sparse_detr.modeling.postprocess import clipped_pixel_boxes, top_detections
from sparse_detr.modeling.scorers import RandomScorer
from sparse_detr.utils.keep_ratio import check_keep_ratio

__all__ = ["DeployableSparseDETR", "check_exportable", "DEFORM_ATTN_IMPLS"]

# "grid_sample": standard ops only (ONNX GridSample); "extension": the compiled op (torch.export only)
DEFORM_ATTN_IMPLS = ("grid_sample", "extension")


def check_exportable(model: nn.Module, batched: bool = False) -> None:
    """Raise ValueError naming the config setting that the exported graph (one image, or a batch with
    ``batched``) does not support."""
    from sparse_detr.modeling.meta_arch import SparseDETR

    if not isinstance(model, SparseDETR):
        raise ValueError(f"export supports the SparseDETR meta-architecture, got {type(model).__name__}")
    if model.size_divisibility > 1:
        raise ValueError(
            f"MODEL.SPARSE_DETR.SIZE_DIVISIBILITY (LazyConfig: model.size_divisibility) = "
            f"{model.size_divisibility}: the exported graph takes one unpadded image; set it to 0"
        )
    backbone_dtype = getattr(model.backbone, "backbone_dtype", "float32")
    if backbone_dtype != "float32":
        raise ValueError(
            f"{BACKBONE_DTYPE_KEY} = {backbone_dtype!r}: export runs the backbone in float32; "
            "set it to 'float32'"
        )
    if isinstance(model.token_scorer, RandomScorer):
        raise ValueError(
            "MODEL.SPARSE_DETR.TOKEN_SCORER (LazyConfig: model.token_scorer) = 'random': random token "
            "selection cannot be exported; use 'dam' or 'objectness'"
        )
    if type(model.encoder) is not SparseDeformableEncoder:
        raise ValueError(
            f"MODEL.SPARSE_DETR.ENCODER_NAME (LazyConfig: model.encoder) = {type(model.encoder).__name__}: "
            "export supports SparseDeformableEncoder"
        )
    if batched and isinstance(model.backbone, SwinBackbone):
        raise ValueError(
            "MODEL.BACKBONE.NAME (LazyConfig: model.backbone) = SwinBackbone: batched export supports "
            "ResNet backbones (Swin's window counts are traced size-obliviously, which would fix the "
            "batch to more than one image); export single images (without --batch / batched=True)"
        )


# deform_attn choice -> the multi_scale_deform_attn backend forced while the graph is traced / run
DEFORM_ATTN_BACKENDS = {"grid_sample": "pytorch", "extension": "extension"}


class DeployableSparseDETR(nn.Module):
    """A :class:`SparseDETR` (shared weights) as one exportable function of an image or a batch.

    ``forward(image, keep_ratio=None)``:

    - ``image``: Float[3, H, W] (or Float[B, 3, H, W] same-size images with ``batched``), the model's input
      format (``model.input_format`` channel order, 0-255), i.e. the tensor Detectron2's
      ``DefaultPredictor`` hands the model.
    - ``keep_ratio``: Float[] rho of the sparse encoder (default: the model's inference rho); ignored by a
      dense model.
    - one image: ``boxes`` Float[K, 4] (x1, y1, x2, y2) in input pixels, ``scores`` Float[K], ``classes``
      Int64[K], K <= the model's detections per image (boxes left empty after clipping are dropped, as
      ``detector_postprocess`` does).
    - ``batched``: ``boxes`` Float[B, K, 4], ``scores`` Float[B, K], ``classes`` Int64[B, K] and
      ``nonempty`` Bool[B, K], K = the detections per image; image b's single-image result is
      ``boxes[b][nonempty[b]]`` (and the same for scores and classes).

    Args:
        model: the detector; its settings are checked by :func:`check_exportable`.
        deform_attn: "grid_sample" (standard ops; ONNX) or "extension" (the compiled kernel; torch.export
            programs that run where ``sparse_detr`` is importable).
        batched: take a batch Float[B, 3, H, W] instead of one image.
    """

    def __init__(self, model: nn.Module, deform_attn: str = "grid_sample", batched: bool = False):
        super().__init__()
        check_exportable(model, batched)
        if deform_attn not in DEFORM_ATTN_IMPLS:
            raise ValueError(f"deform_attn must be one of {DEFORM_ATTN_IMPLS}, got {deform_attn!r}")
        if deform_attn == "extension":
            import sparse_detr._ext as _ext

            _ext.require_extension()
        self.model = model.eval()
        self.deform_attn = deform_attn
        self.batched = batched
        scorer = model.token_scorer
        self.sparse = scorer is not None and model.encoder.num_layers > 0
        default = scorer.keep_ratio if self.sparse else 1.0
        self.register_buffer("default_keep_ratio", torch.tensor(default, dtype=torch.float32), False)

    @property
    def is_sparse(self) -> bool:
        """Whether the graph takes ``keep_ratio`` (a scorer and at least one encoder layer)."""
        return self.sparse

    def forward(self, image: Tensor, keep_ratio: Tensor | None = None) -> tuple[Tensor, ...]:
        model = self.model
        images = image if self.batched else image.unsqueeze(0)
        images = (images - model.pixel_mean) / model.pixel_std
        if self.sparse:
            keep_ratio = (self.default_keep_ratio if keep_ratio is None else keep_ratio).to(torch.float32)
        else:
            keep_ratio = None
        with forced_backend(DEFORM_ATTN_BACKENDS[self.deform_attn]):
            outputs = model.predict(images, keep_ratio=keep_ratio).predictions
        max_detections = model.top_detections.max_detections
        detections = top_detections(outputs["pred_logits"], outputs["pred_boxes"], max_detections)
        boxes, nonempty = clipped_pixel_boxes(detections, images.shape[-2], images.shape[-1])
        if self.batched:
            return boxes, detections.scores, detections.labels, nonempty
        keep = nonempty[0]
        return boxes[0][keep], detections.scores[0][keep], detections.labels[0][keep]


def default_keep_ratio(model: nn.Module, keep_ratio: float | None) -> float | None:
    """The rho an export records as default: ``keep_ratio`` if given (validated), else the model's."""
    if keep_ratio is not None:
        return check_keep_ratio(keep_ratio, "--rho / keep_ratio")
    scorer = getattr(model, "token_scorer", None)
    return None if scorer is None else scorer.keep_ratio
