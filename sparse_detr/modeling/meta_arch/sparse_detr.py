"""The Sparse DETR meta-architecture (Roh et al., ICLR 2022) on Detectron2.

normalise + pad -> backbone -> neck (tokens) -> scorer (top rho tokens) -> sparse encoder -> queries
-> decoder -> heads; the criterion (training) or the top detections (inference) follow.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList
from torch import Tensor, nn

from ...utils.input_checks import check_input_format, check_model_inputs, tracing
from ..criterion import targets_from_instances
from ..decoder import DeformableDecoder
from ..heads import PredictionHeads
from ..input_size import check_image_size, level_strides
from ..neck import MultiScaleNeck
from ..outputs import DecoderSampling, NetworkInternals, SparseDETROutput, TokenGeometry
from ..postprocess import TopDetections
from ..query_selection import LearnedQueryInit, TokenProjection, TwoStageQueryInit, two_stage_queries
from ..scorers import TokenScorer
from ..tokens import gather_tokens, grid_proposals
from .graph import check_components, components_from_yacs

__all__ = ["SparseDETR"]


@META_ARCH_REGISTRY.register()
class SparseDETR(nn.Module):
    """Deformable DETR whose encoder refines only the top-rho tokens chosen by a scorer (none, or rho = 1:
    the dense baseline; an encoder of zero layers: the "no encoder" ablation). Built by
    :func:`~sparse_detr.modeling.meta_arch.graph.sparse_detr_graph`."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        in_features: list[str],
        neck: MultiScaleNeck,
        encoder: nn.Module,
        decoder: DeformableDecoder,
        query_init: TwoStageQueryInit | LearnedQueryInit,
        heads: PredictionHeads,
        criterion: nn.Module,
        top_detections: TopDetections,
        token_scorer: TokenScorer | None = None,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        input_format: str = "RGB",
        size_divisibility: int = 0,
    ):
        """
        Args:
            backbone, in_features: a Detectron2 ``Backbone`` (how it runs, channels-last and precision, is
                set on it: :func:`~sparse_detr.modeling.backbone.precision.set_backbone_execution`) and its
                maps fed to the neck, finest first.
            neck, encoder, decoder, query_init, heads, criterion, token_scorer: the components (see theirs);
                ``token_scorer`` None = dense encoder.
            pixel_mean, pixel_std, input_format, size_divisibility: as Detectron2's models (0 = pad to the
                largest image only).
        """
        super().__init__()
        self.backbone = backbone
        self.in_features = list(in_features)
        self.neck = neck
        self.token_scorer = token_scorer
        self.encoder = encoder
        self.decoder = decoder
        self.query_init = query_init
        self.heads = heads
        self.criterion = criterion
        self.top_detections = top_detections
        self.two_stage = bool(getattr(query_init, "two_stage", False))
        check_components(backbone, self.in_features, query_init, heads, criterion)
        self.input_format = check_input_format(input_format)
        self.size_divisibility = size_divisibility
        needs_projection = self.two_stage or (token_scorer is not None and token_scorer.uses_token_features)
        self.token_projection = TokenProjection(neck.hidden_dim) if needs_projection else None
        mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (pixel_mean, pixel_std))
        self.register_buffer("pixel_mean", mean, False)
        self.register_buffer("pixel_std", std, False)

    @classmethod
    def from_config(cls, cfg):
        """yacs ``MODEL.SPARSE_DETR.*`` -> the components of :func:`sparse_detr_graph`'s model."""
        return components_from_yacs(cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def level_strides(self) -> list[int]:
        """Strides of the token levels, finest first (e.g. [8, 16, 32, 64])."""
        backbone = self.backbone.output_shape()
        return level_strides([backbone[f].stride for f in self.in_features], self.neck.num_levels)

    def check_image_size(self, height: int, width: int, name: str = "image") -> None:
        """Refuse an input of ``height x width`` (after resize) that leaves a level a single position."""
        check_image_size(height, width, self.level_strides, name)

    @property
    def is_sparse(self) -> bool:
        """Whether the encoder refines a subset of tokens (a scorer, encoder layers and rho < 1)."""
        scorer = self.token_scorer
        return scorer is not None and self.encoder.num_layers > 0 and scorer.keep_ratio < 1.0

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Change rho on the built model; ValueError outside (0, 1] or without a token scorer."""
        if self.token_scorer is None:
            raise ValueError(
                "set_keep_ratio: this model has no token scorer (MODEL.SPARSE_DETR.TOKEN_SCORER is empty)"
            )
        self.token_scorer.keep_ratio = keep_ratio

    def forward(self, batched_inputs: list[dict]):
        """Detectron2 interface: training -> dict of weighted losses; inference -> [{"instances": ...}]."""
        if not self.training:
            return self.inference(batched_inputs)[0]
        images, padding_mask = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor, padding_mask, with_loss_outputs=True)
        targets = targets_from_instances(batched_inputs, images.image_sizes, self.device)
        return self.criterion(outputs, targets)

    def inference(
        self, batched_inputs: list[dict], with_internals: bool = False
    ) -> tuple[list[dict], SparseDETROutput]:
        """The eval forward: (``[{"instances": Instances}]`` in each input's size, the network output)."""
        check_model_inputs(batched_inputs)  # Detectron2's DefaultPredictor's door; training trusts the mapper
        images, padding_mask = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor, padding_mask, with_internals=with_internals)
        return self.postprocess(outputs, batched_inputs, images.image_sizes), outputs

    def preprocess_image(self, batched_inputs: list[dict]) -> tuple[ImageList, Tensor]:
        """Normalise and pad with 0 to the largest image -> (ImageList, Bool[B, H, W] padding mask)."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility, pad_value=0.0)
        batch, _, height, width = images.tensor.shape
        if batch == 1 and not tracing():
            # in a batch the padding gives a small image the batch's size; alone it must be large enough
            item = batched_inputs[0]
            self.check_image_size(height, width, item.get("file_name", "batched_inputs[0]['image']"))
        padding_mask = torch.ones((batch, height, width), dtype=torch.bool, device=self.device)
        for i, (h, w) in enumerate(images.image_sizes):
            padding_mask[i, :h, :w] = False
        return images, padding_mask

    def postprocess(
        self, outputs: SparseDETROutput, batched_inputs: list[dict], image_sizes: list[tuple[int, int]]
    ) -> list[dict]:
        """:attr:`top_detections` -> ``[{"instances": Instances}]`` in each input's (height, width)."""
        logits, boxes = outputs.predictions["pred_logits"], outputs.predictions["pred_boxes"]
        instances = self.top_detections(logits, boxes, image_sizes)
        return [
            {"instances": detector_postprocess(i, x.get("height", size[0]), x.get("width", size[1]))}
            for i, x, size in zip(instances, batched_inputs, image_sizes)
        ]

    def predict(
        self, images: Tensor, padding_mask: Tensor | None = None, with_loss_outputs: bool = False,
        with_internals: bool = False, keep_ratio: float | Tensor | None = None,
    ) -> SparseDETROutput:
        """Raw outputs of the network on a normalised, padded batch (sizes read from shapes: what
        ``torch.export`` captures).

        Args:
            images: Float[B, 3, H, W] normalised; padding_mask: Bool[B, H, W] True on padding, or None for
                same-size images without padding.
            with_loss_outputs: also what only the losses need (aux layers, two-stage and scorer loss inputs).
            with_internals: also return :class:`NetworkInternals` (encoder sampling, memory, decoder inputs).
            keep_ratio: rho for this call (see :meth:`TokenScorer.select`); ignored without scorer or encoder
                layers.
        """
        features = self.backbone(images)
        tokens = self.neck([features[f] for f in self.in_features], padding_mask)
        proposals, proposal_valid = grid_proposals(tokens.padding_mask, tokens.level_shapes)
        selection, kept = None, (None, None)
        if self.token_scorer is not None and self.encoder.num_layers > 0:
            selection = self.token_scorer.select(
                tokens, proposals, proposal_valid, self.token_projection, with_loss_outputs, keep_ratio
            )
            if selection is not None:
                kept = (selection.selected_indices, selection.num_kept)
        encoded = self.encoder(tokens, *kept, return_sampling=with_internals)
        two_stage_predictions = None
        if self.two_stage:
            queries, two_stage_predictions = two_stage_queries(
                self.query_init, self.heads, self.token_projection(encoded.memory, proposal_valid),
                encoded.memory, proposals, with_predictions=with_loss_outputs,
            )
        else:
            queries = self.query_init(images.shape[0])
        decoded = self.decoder(
            queries.queries, queries.query_pos, queries.reference, encoded.memory, tokens,
            box_heads=self.heads.decoder_box_heads(),
        )
        heads = self.heads
        predictions = heads.decoder_predictions(decoded.hidden_states, decoded.references, with_loss_outputs)
        outputs = SparseDETROutput(
            predictions=predictions[-1], aux_predictions=predictions[:-1], tokens=TokenGeometry.of(tokens),
            decoder_sampling=DecoderSampling(decoded.sampling_locations, decoded.attention_weights),
            selection=selection, two_stage_predictions=two_stage_predictions,
        )
        if with_loss_outputs and heads.num_encoder_aux:
            if selection is not None:
                proposals = gather_tokens(proposals, selection.selected_indices)
            outputs.encoder_aux_predictions = heads.encoder_aux_predictions(encoded.layer_queries, proposals)
        if with_internals:
            outputs.internals = NetworkInternals(
                memory=encoded.memory, enc_sampling_locations=encoded.sampling_locations,
                enc_attention_weights=encoded.attention_weights, queries=queries,
                hidden_states=decoded.hidden_states, proposals=proposals, proposal_valid=proposal_valid,
            )
        return outputs
