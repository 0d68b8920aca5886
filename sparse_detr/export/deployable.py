"""One-image inference graph of a :class:`SparseDETR` that ``torch.export`` and the ONNX exporter can capture.

:class:`DeployableSparseDETR` runs the same layers with the same weights as the Detectron2 model, for one
image without padding, with every size derived from the image shape (dynamic H and W) and the number of
refined encoder tokens computed in the graph from the ``keep_ratio`` input (dynamic sparsification
survives export). Its outputs equal the model's ``Instances`` for that image: top-``max_detections``
(query, class) pairs, boxes in input pixels clipped to the image, empty boxes dropped (as Detectron2's
``detector_postprocess`` does).

What differs from the model's own forward is only how the graph is written: no host synchronisation
(``.item()``, ``.tolist()``, ``bool(tensor)``) on data, no Python branches on data, and a deformable
attention built from standard ops (``grid_sample``), so that ONNX Runtime / OpenVINO run it as is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sparse_detr.layers import MSDeformAttn
from sparse_detr.layers.ms_deform_attn_pytorch import ms_deform_attn_pytorch
from sparse_detr.modeling.encoder import SparseDeformableEncoder
from sparse_detr.modeling.position_encoding import mask_sine_embedding
from sparse_detr.modeling.postprocess import top_detections
from sparse_detr.modeling.scorers import RandomScorer, kept_token_counts, validate_keep_ratio
from sparse_detr.modeling.tokens import inverse_sigmoid

__all__ = ["DeployableSparseDETR", "check_exportable", "DEFORM_ATTN_IMPLS"]

# "grid_sample": standard ops only (ONNX GridSample); "extension": the compiled op (torch.export only)
DEFORM_ATTN_IMPLS = ("grid_sample", "extension")


def check_exportable(model: nn.Module) -> None:
    """Raise ValueError naming the config setting that the exported one-image graph does not support."""
    from sparse_detr.modeling.meta_arch import SparseDETR

    if not isinstance(model, SparseDETR):
        raise ValueError(f"export supports the SparseDETR meta-architecture, got {type(model).__name__}")
    if model.size_divisibility > 1:
        raise ValueError(
            f"MODEL.SPARSE_DETR.SIZE_DIVISIBILITY (LazyConfig: model.size_divisibility) = "
            f"{model.size_divisibility}: the exported graph takes one unpadded image; set it to 0"
        )
    if model.backbone_dtype != "float32":
        raise ValueError(
            "MODEL.SPARSE_DETR.BACKBONE_DTYPE (LazyConfig: model.backbone_dtype) = "
            f"{model.backbone_dtype!r}: export runs the backbone in float32; set it to 'float32'"
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


def _size_tensor(size, like: Tensor) -> Tensor:
    """A (possibly symbolic) int as a 0-dim float tensor of ``like``'s dtype and device."""
    return torch.scalar_tensor(size, dtype=like.dtype, device=like.device)


def _spatial_shapes(level_shapes: list[tuple], device: torch.device) -> Tensor:
    """Long[L, 2] (H_l, W_l) from (possibly symbolic) sizes, computed in the graph."""
    return torch.stack(
        [
            torch.stack([torch.scalar_tensor(size, dtype=torch.long) for size in shape])
            for shape in level_shapes
        ]
    ).to(device)


def _deform_attend(
    attn: MSDeformAttn,
    query: Tensor,
    reference_points: Tensor,
    value: Tensor,
    level_shapes: list[tuple],
    spatial_shapes: Tensor,
    impl: str,
) -> Tensor:
    """``MSDeformAttn.forward`` without padding: Float[1, Q, C] queries over Float[1, S, C] values.

    Args:
        reference_points: Float[1, Q, L, 2] points or [1, Q, L, 4] boxes, normalised.
        level_shapes: L pairs (H_l, W_l), Python or symbolic ints; spatial_shapes: the same as Long[L, 2].
        impl: "grid_sample" (standard ops) or "extension" (the compiled op).
    """
    locations, weights = attn.sampling(query, reference_points, spatial_shapes)
    projected = attn.project_values(value)
    if impl == "extension":
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        sampled = torch.ops.sparse_detr.ms_deform_attn(
            projected, spatial_shapes, level_start_index, locations, weights
        )
    else:
        sampled = ms_deform_attn_pytorch(projected, level_shapes, locations, weights)
    return attn.output_proj(sampled)


class DeployableSparseDETR(nn.Module):
    """A :class:`SparseDETR` (shared weights) as one exportable function of one image.

    ``forward(image, keep_ratio=None) -> (boxes, scores, classes)``:

    - ``image``: Float[3, H, W], the model's input format (``model.input_format`` channel order, 0-255),
      i.e. the tensor Detectron2's ``DefaultPredictor`` hands the model.
    - ``keep_ratio``: Float[] rho of the sparse encoder (default: the model's inference rho); ignored by a
      dense model.
    - ``boxes`` Float[K, 4] (x1, y1, x2, y2) in input pixels, ``scores`` Float[K], ``classes`` Int64[K],
      K <= the model's detections per image (boxes left empty after clipping are dropped).

    Args:
        model: the detector; its settings are checked by :func:`check_exportable`.
        deform_attn: "grid_sample" (standard ops; ONNX) or "extension" (the compiled kernel; torch.export
            programs that run where ``sparse_detr`` is importable).
    """

    def __init__(self, model: nn.Module, deform_attn: str = "grid_sample"):
        super().__init__()
        check_exportable(model)
        if deform_attn not in DEFORM_ATTN_IMPLS:
            raise ValueError(f"deform_attn must be one of {DEFORM_ATTN_IMPLS}, got {deform_attn!r}")
        if deform_attn == "extension":
            import sparse_detr._ext as _ext

            _ext.require_extension()
        self.model = model.eval()
        self.deform_attn = deform_attn
        scorer = model.token_scorer
        self.sparse = scorer is not None and model.encoder.num_layers > 0
        default = scorer.active_keep_ratio if self.sparse else 1.0
        self.register_buffer("default_keep_ratio", torch.tensor(default, dtype=torch.float32), False)

    @property
    def is_sparse(self) -> bool:
        """Whether the graph takes ``keep_ratio`` (a scorer and at least one encoder layer)."""
        return self.sparse

    def forward(self, image: Tensor, keep_ratio: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        model = self.model
        images = ((image - model.pixel_mean) / model.pixel_std).unsqueeze(0)
        features = model.run_backbone(images)
        maps = self._level_maps([features[f] for f in model.in_features])
        level_shapes = [tuple(m.shape[-2:]) for m in maps]
        tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        pos = torch.cat([self._position(m, level) for level, m in enumerate(maps)], 1)
        padding_mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        proposals, proposal_valid = self._grid_proposals(level_shapes, tokens)

        if self.sparse:
            if keep_ratio is None:
                keep_ratio = self.default_keep_ratio
            selected = self._select_tokens(tokens, pos, proposals, proposal_valid, padding_mask, keep_ratio)
        else:
            selected = None
        geometry = (level_shapes, _spatial_shapes(level_shapes, tokens.device))
        memory = self._encode(tokens, pos, geometry, selected)
        queries, query_pos, reference = self._decoder_queries(memory, proposals, proposal_valid)
        logits, boxes = self._decode(queries, query_pos, reference, memory, geometry)
        return self._postprocess(logits, boxes, image)

    # ------------------------------------------------------------------ tokens
    def _level_maps(self, features: list[Tensor]) -> list[Tensor]:
        """The neck's projections (``MultiScaleNeck.forward`` without masks)."""
        neck = self.model.neck
        maps = [proj(f) for proj, f in zip(neck.level_projections, features)]
        for level in range(neck.num_backbone_levels, neck.num_levels):
            source = features[-1] if level == neck.num_backbone_levels else maps[-1]
            maps.append(neck.level_projections[level](source))
        return maps

    def _position(self, level_map: Tensor, level: int) -> Tensor:
        """Float[1, H_l * W_l, C]: sine embedding of an unpadded level + its level embedding."""
        neck = self.model.neck
        mask = torch.zeros(
            level_map.shape[0:1] + level_map.shape[2:], dtype=torch.bool, device=level_map.device
        )
        pos = mask_sine_embedding(mask, neck.hidden_dim // 2) + neck.level_embed[level].view(1, -1, 1, 1)
        return pos.flatten(2).transpose(1, 2)

    @staticmethod
    def _level_grids(level_shapes: list[tuple], like: Tensor) -> list[Tensor]:
        """Per level Float[H_l * W_l, 2] token centres (x, y) normalised by the level size."""
        grids = []
        for height, width in level_shapes:
            ys = torch.arange(height, dtype=torch.float32, device=like.device)
            xs = torch.arange(width, dtype=torch.float32, device=like.device)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([grid_x, grid_y], -1) + 0.5
            scale = torch.stack([_size_tensor(width, like), _size_tensor(height, like)])
            grids.append((grid / scale).reshape(-1, 2))
        return grids

    def _grid_proposals(self, level_shapes: list[tuple], like: Tensor) -> tuple[Tensor, Tensor]:
        """``tokens.grid_proposals`` of an unpadded image: Float[1, N, 4] logit boxes, Bool[1, N] valid."""
        proposals = []
        for level, grid in enumerate(self._level_grids(level_shapes, like)):
            size = torch.full_like(grid, 0.05 * (2.0**level))
            proposals.append(torch.cat((grid, size), -1))
        proposals = torch.cat(proposals, 0)[None]
        valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1)
        proposals = torch.log(proposals / (1 - proposals))
        return proposals.masked_fill(~valid.unsqueeze(-1), float("inf")), valid

    # ------------------------------------------------------------------ encoder
    def _select_tokens(self, tokens, pos, proposals, proposal_valid, padding_mask, keep_ratio) -> Tensor:
        """Long[1, k] the top-k tokens of the scorer, k = ``kept_token_counts`` computed in the graph."""
        model = self.model
        scorer = model.token_scorer
        token_features = None
        if scorer.uses_token_features:
            token_features = model.token_projection(tokens + pos, proposal_valid)
        scores, _ = scorer.score(token_features, proposals, padding_mask, False)
        num_kept = kept_token_counts(padding_mask, keep_ratio.to(torch.float32))
        k = num_kept[0].item()
        torch._check(k >= 1)
        torch._check(k <= scores.shape[1])
        return torch.topk(scores, k, dim=1).indices

    def _encode(self, tokens: Tensor, pos: Tensor, geometry: tuple, selected: Tensor | None) -> Tensor:
        """The sparse encoder (``SparseDeformableEncoder.forward`` for one unpadded image).

        ``geometry``: (level shapes as ints, Long[L, 2] spatial shapes); ``selected``: Long[1, k] or None.
        """
        encoder = self.model.encoder
        level_shapes = geometry[0]
        if encoder.num_layers == 0:
            return tokens + pos
        reference = torch.cat(self._level_grids(level_shapes, tokens), 0)  # valid ratios are all 1
        reference = reference[None, :, None].expand(1, -1, len(level_shapes), 2)
        memory, query_pos, queries = tokens, pos, tokens
        if selected is not None:
            reference = torch.gather(
                reference, 1, selected[..., None, None].expand(-1, -1, *reference.shape[2:])
            )
            query_pos = torch.gather(pos, 1, selected[..., None].expand(-1, -1, pos.shape[-1]))
            queries = torch.gather(tokens, 1, selected[..., None].expand(-1, -1, tokens.shape[-1]))
            scatter_index = selected[..., None].expand(-1, -1, tokens.shape[-1])
        for layer in encoder.layers:

            def attend(query, reference_points, layer=layer, value=memory):
                return _deform_attend(
                    layer.self_attn, query, reference_points, value, *geometry, self.deform_attn
                )

            queries, _, _ = layer._refine(attend, queries, query_pos, reference, False)
            memory = queries if selected is None else memory.scatter(1, scatter_index, queries)
        if encoder.final_norm is not None:
            memory = encoder.final_norm(memory)
        return memory

    # ------------------------------------------------------------------ decoder
    def _decoder_queries(self, memory: Tensor, proposals: Tensor, proposal_valid: Tensor):
        """Two-stage top-Q queries (inference branch of the model) or the learned queries."""
        model = self.model
        if not model.two_stage:
            queries = model.query_init(1)
            return queries.queries, queries.query_pos, queries.reference
        projected = model.token_projection(memory, proposal_valid)
        site = model.heads.two_stage_site()
        token_indices = model.query_init.select(model.heads.class_heads[site](projected))
        index = token_indices.unsqueeze(-1)
        boxes = model.heads.box_heads[site](
            torch.gather(projected, 1, index.expand(-1, -1, projected.shape[-1]))
        )
        boxes = boxes + torch.gather(proposals, 1, index.expand(-1, -1, 4))
        queries = model.query_init(memory, token_indices, boxes)
        return queries.queries, queries.query_pos, queries.reference

    def _decode(self, queries, query_pos, reference, memory, geometry) -> tuple[Tensor, Tensor]:
        """``DeformableDecoder.forward`` + the last layer's heads -> (Float[1, Q, K], Float[1, Q, 4])."""
        model = self.model
        box_heads = model.heads.decoder_box_heads() if model.box_refine else None
        num_levels = len(geometry[0])
        last = model.decoder.num_layers - 1
        for lid, layer in enumerate(model.decoder.layers):
            start_reference = reference
            q = k = queries + query_pos
            attn = layer.self_attn(q, k, queries, need_weights=False)[0]
            queries = layer.self_attn_norm(queries + attn)
            reference_input = reference[:, :, None].expand(-1, -1, num_levels, -1)  # valid ratios are all 1
            attn = _deform_attend(
                layer.cross_attn, queries + query_pos, reference_input, memory, *geometry, self.deform_attn
            )
            queries = layer.cross_attn_norm(queries + attn)
            queries = layer.ffn_norm(queries + layer.ffn(queries))
            if box_heads is not None and lid < last:
                offsets = box_heads[lid](queries)
                if reference.shape[-1] == 4:
                    reference = (offsets + inverse_sigmoid(reference)).sigmoid()
                else:
                    reference = torch.cat(
                        [offsets[..., :2] + inverse_sigmoid(reference), offsets[..., 2:]], -1
                    ).sigmoid()
        prediction = model.heads.predict_from_reference(
            model.heads.decoder_site(last), queries, start_reference
        )
        return prediction["pred_logits"], prediction["pred_boxes"]

    # ------------------------------------------------------------------ outputs
    def _postprocess(self, logits: Tensor, boxes: Tensor, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top detections -> input pixels, clipped, empty boxes dropped (``detector_postprocess``)."""
        detections = top_detections(logits, boxes, self.model.max_detections)
        height = _size_tensor(image.shape[-2], boxes)
        width = _size_tensor(image.shape[-1], boxes)
        scale = torch.stack([width, height, width, height])
        pixel_boxes = detections.boxes[0] * scale
        low = torch.zeros_like(scale)
        pixel_boxes = torch.minimum(torch.maximum(pixel_boxes, low), scale)
        keep = (pixel_boxes[:, 2] > pixel_boxes[:, 0]) & (pixel_boxes[:, 3] > pixel_boxes[:, 1])
        return pixel_boxes[keep], detections.scores[0][keep], detections.labels[0][keep]


def default_keep_ratio(model: nn.Module, keep_ratio: float | None) -> float | None:
    """The rho an export records as default: ``keep_ratio`` if given (validated), else the model's."""
    if keep_ratio is not None:
        return validate_keep_ratio(keep_ratio, "--rho / keep_ratio")
    scorer = getattr(model, "token_scorer", None)
    return None if scorer is None else scorer.active_keep_ratio
