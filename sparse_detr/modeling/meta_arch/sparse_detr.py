"""The Sparse DETR meta-architecture (Roh et al., ICLR 2022) on Detectron2.

Data flow: normalise + pad -> backbone -> multi-scale neck (tokens) -> token scorer (top rho tokens)
-> sparse encoder -> two-stage query selection -> decoder with box refinement -> heads.
In training the criterion turns the raw outputs (see :meth:`SparseDETR.predict`) into weighted
losses; in inference the top-100 (query, class) pairs become ``Instances``.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList
from torch import Tensor, nn

from ...utils.input_checks import check_input_format, check_model_inputs, tracing
from ..analysis import token_statistics
from ..backbone.precision import BACKBONE_DTYPES, CONFIG_KEY, resolve_backbone_dtype
from ..criterion import targets_from_instances
from ..decoder import DeformableDecoder
from ..heads import PredictionHeads
from ..input_size import check_image_size, level_strides
from ..neck import MultiScaleNeck
from ..outputs import DecoderSampling, NetworkInternals, SparseDETROutput, TokenGeometry
from ..postprocess import detections_to_instances, top_detections
from ..query_selection import LearnedQueryInit, TokenProjection, TwoStageQueryInit, two_stage_queries
from ..scorers import TokenScorer, TokenSelection, validate_keep_ratio
from ..tokens import TokenBatch, gather_tokens, grid_proposals
from ..trained_heads import record_loaded_heads, refuse_untrained_heads
from ..training_rng import seed_for_trainer_iteration
from .graph import components_from_yacs

__all__ = ["SparseDETR"]


@META_ARCH_REGISTRY.register()
class SparseDETR(nn.Module):
    """Sparse DETR: Deformable DETR whose encoder refines only the top-rho tokens chosen by a scorer.

    Without a scorer (or with keep ratio 1) it is the dense Deformable DETR(+) baseline; with an encoder of
    zero layers it is the "no encoder" ablation.
    """

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
        token_scorer: TokenScorer | None = None,
        box_refine: bool = True,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        input_format: str = "RGB",
        size_divisibility: int = 0,
        max_detections: int = 100,
        score_threshold: float = 0.0,
        aux_loss: bool = True,
        channels_last: bool = False,
        backbone_dtype: str = "float32",
        train_seed: int | None = None,
        report_token_statistics: bool = False,
        weights_name: str = "",
    ):
        """
        Args:
            backbone: any Detectron2 ``Backbone``.
            in_features: the backbone maps fed to the neck, finest first.
            neck: projects the maps to the L token levels.
            encoder: a SPARSE_ENCODER_REGISTRY module (``forward(tokens, selected_indices, num_kept, ...)``).
            decoder: the deformable decoder.
            query_init: two-stage (top-k tokens) or learned decoder queries.
            heads: class/box heads of every prediction site.
            criterion: maps (outputs, targets) to a dict of weighted losses.
            token_scorer: picks the tokens the encoder refines; None = dense encoder.
            box_refine: iterative box refinement in the decoder.
            pixel_mean, pixel_std: normalisation of the input pixels (in the input's 0-255 scale).
            input_format: channel order of ``batched_inputs[i]["image"]`` ("RGB" or "BGR").
            size_divisibility: pad the batch to a multiple of this (0 = to the largest image only).
            max_detections: detections returned per image at inference.
            score_threshold: of those, only the ones scoring above this are returned (0 = all, as the
                official code and the COCO evaluation).
            aux_loss: return the decoder auxiliary layers' predictions in training (their losses).
            channels_last: run the backbone and the neck on channels-last (NHWC) maps: the same function,
                faster with oneDNN / cuDNN convolutions, different rounding (the converted official configs
                keep NCHW to match the official outputs to the last bits).
            backbone_dtype: "float32"; "auto" (bfloat16 where the device runs it natively, else float32);
                or "bfloat16" / "float16" (float32 with a warning where not native, see
                :mod:`~sparse_detr.modeling.backbone.precision`): the backbone under ``torch.autocast`` (its
                convolutions in that precision, the bulk of the CPU inference time); its maps return to
                float32, so everything from the neck on (token geometry, sampling locations, boxes) keeps
                full precision.
            train_seed: seed of the training randomness: inside a Detectron2 trainer every training forward
                first seeds the global RNGs from (train_seed, the trainer's iteration, rank), so a resumed run
                reproduces the uninterrupted one whichever trainer runs it (None: no seeding).
            report_token_statistics: eval outputs also carry ``"token_stats"`` per image (refined / valid
                tokens, Corr), which ``TokenStatisticsEvaluator`` averages; not while tracing or compiling.
            weights_name: the weights this model is meant to be loaded from (yacs ``MODEL.WEIGHTS``), only
                to name them when inference refuses class heads that were not loaded
                (:mod:`sparse_detr.modeling.trained_heads`).
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
        self.box_refine = box_refine
        self.two_stage = bool(getattr(query_init, "two_stage", False))
        self.input_format = check_input_format(input_format)
        self.size_divisibility = size_divisibility
        self.max_detections = max_detections
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(
                "score_threshold (MODEL.SPARSE_DETR.SCORE_THRESH_TEST / MODEL.ROI_HEADS.SCORE_THRESH_TEST) "
                f"must be in [0, 1], got {score_threshold}"
            )
        self.score_threshold = score_threshold
        self.aux_loss = aux_loss
        self.channels_last = channels_last
        if backbone_dtype not in BACKBONE_DTYPES:
            raise ValueError(f"{CONFIG_KEY} must be one of {BACKBONE_DTYPES}, got {backbone_dtype!r}")
        self.backbone_dtype = backbone_dtype
        self.train_seed = train_seed
        self.report_token_statistics = report_token_statistics
        needs_projection = self.two_stage or (token_scorer is not None and token_scorer.uses_token_features)
        self.token_projection = TokenProjection(neck.hidden_dim) if needs_projection else None
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self._check_consistency()
        self.weights_name = weights_name
        self.untrained_heads: str | None = None  # set by record_loaded_heads after each load_state_dict
        self.register_load_state_dict_post_hook(record_loaded_heads)

    def _check_consistency(self) -> None:
        """What ``graph.py`` cannot tie by interpolation: the backbone maps and the two-stage switch."""
        missing = [f for f in self.in_features if f not in self.backbone.output_shape()]
        if missing:
            raise ValueError(
                f"in_features {missing} are not backbone outputs {sorted(self.backbone.output_shape())}"
            )
        agnostic = getattr(self.criterion, "two_stage_class_agnostic", None)
        if self.heads.two_stage != self.two_stage or (
            self.two_stage and agnostic is not None and agnostic == self.query_init.class_specific
        ):
            raise ValueError(
                f"the two-stage switch disagrees: heads.two_stage={self.heads.two_stage}, query_init="
                f"{type(self.query_init).__name__}, criterion.two_stage_class_agnostic={agnostic} (must be "
                "the opposite of query_init.class_specific); build the model with "
                "sparse_detr_graph(two_stage=..., two_stage_class_agnostic=...)"
            )

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

    # ------------------------------------------------------------------ dynamic sparsification
    @property
    def is_sparse(self) -> bool:
        """Whether the encoder currently refines a subset of tokens (scorer present and rho < 1)."""
        return (
            self.token_scorer is not None
            and self.encoder.num_layers > 0
            and self.token_scorer.active_keep_ratio < 1.0
        )

    def set_keep_ratio(self, keep_ratio: float, test_keep_ratio: float | None = None) -> None:
        """Change rho at run time: ``keep_ratio`` (training, and inference unless ``test_keep_ratio``)."""
        if self.token_scorer is None:
            raise ValueError(
                "set_keep_ratio: this model has no token scorer (MODEL.SPARSE_DETR.TOKEN_SCORER is empty)"
            )
        self.token_scorer.keep_ratio = keep_ratio
        self.token_scorer.test_keep_ratio = test_keep_ratio

    # ------------------------------------------------------------------ Detectron2 interface
    def forward(self, batched_inputs: list[dict]):
        """Detectron2 interface: training -> dict of weighted losses; inference -> [{"instances": ...}]
        (and ``"token_stats"`` with ``report_token_statistics``)."""
        if not self.training:
            results, outputs = self.inference(batched_inputs)
            if self.report_token_statistics and not tracing():
                for result, stats in zip(results, token_statistics(outputs)):
                    result["token_stats"] = stats
            return results
        self.untrained_heads = None  # trained from here on
        if self.train_seed is not None:
            seed_for_trainer_iteration(self.train_seed)
        images, padding_mask = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor, padding_mask, with_loss_outputs=True)
        targets = targets_from_instances(batched_inputs, images.image_sizes, self.device)
        return self.criterion(outputs, targets)

    def inference(
        self, batched_inputs: list[dict], with_internals: bool = False
    ) -> tuple[list[dict], SparseDETROutput]:
        """The eval forward: (``[{"instances": Instances}]`` in each input's size, the network output).

        Raises:
            UntrainedModelError: the weights loaded last left the class heads random (and no training since).
        """
        refuse_untrained_heads(self)
        images, padding_mask = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor, padding_mask, with_internals=with_internals)
        return self.postprocess(outputs, batched_inputs, images.image_sizes), outputs

    def preprocess_image(self, batched_inputs: list[dict]) -> tuple[ImageList, Tensor]:
        """Normalise and pad with 0 to the largest image -> (ImageList, Bool[B, H, W] padding mask)."""
        check_model_inputs(batched_inputs)
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
        """Top ``max_detections`` (query, class) pairs scoring above ``score_threshold`` ->
        ``[{"instances": Instances}]`` at input size."""
        logits, boxes = outputs.predictions["pred_logits"], outputs.predictions["pred_boxes"]
        instances = detections_to_instances(top_detections(logits, boxes, self.max_detections), image_sizes)
        if self.score_threshold > 0:
            instances = [i[i.scores > self.score_threshold] for i in instances]
        return [
            {"instances": detector_postprocess(i, x.get("height", size[0]), x.get("width", size[1]))}
            for i, x, size in zip(instances, batched_inputs, image_sizes)
        ]

    # ------------------------------------------------------------------ the network
    def predict(
        self,
        images: Tensor,
        padding_mask: Tensor | None = None,
        with_loss_outputs: bool = False,
        with_internals: bool = False,
        keep_ratio: float | Tensor | None = None,
    ) -> SparseDETROutput:
        """Raw outputs of the network on a normalised, padded batch.

        Every size is read from the map shapes, every branch decided by shapes and settings, so the same
        forward is what ``torch.export`` captures (see :mod:`sparse_detr.export`).

        Args:
            images: Float[B, 3, H, W] normalised; padding_mask: Bool[B, H, W] True on padding, or None for
                same-size images without padding (nothing to mask: the padding-free path, no mask read).
            with_loss_outputs: also compute what only the losses need (decoder aux layers, the two-stage head
                on all tokens, encoder aux heads, the scorer's loss inputs); True in training.
            with_internals: also return :class:`NetworkInternals` (encoder sampling, memory, decoder inputs).
            keep_ratio: rho for this call, overriding the scorer's: a float, or a Float[] tensor (an exported
                graph's input; the sparse path is then taken for every value, 1 included). None = the
                scorer's :attr:`~TokenScorer.active_keep_ratio`. Ignored without scorer or encoder layers.
        """
        if images.dim() != 4 or (
            padding_mask is not None and padding_mask.shape != (images.shape[0], *images.shape[-2:])
        ):
            shape = None if padding_mask is None else tuple(padding_mask.shape)
            raise ValueError(
                f"images must be Float[B, 3, H, W] and padding_mask Bool[B, H, W] or None; got "
                f"{tuple(images.shape)} and {shape}"
            )
        features = self.run_backbone(images)
        tokens = self.neck([features[f] for f in self.in_features], padding_mask)
        proposals, proposal_valid = grid_proposals(tokens.padding_mask, tokens.level_shapes)
        selection = self._select_tokens(tokens, proposals, proposal_valid, with_loss_outputs, keep_ratio)
        encoded = self.encoder(
            tokens,
            selection.selected_indices if selection is not None else None,
            selection.num_kept if selection is not None else None,
            return_sampling=with_internals,
        )
        two_stage_predictions = None
        if self.two_stage:
            queries, two_stage_predictions = two_stage_queries(
                self.query_init,
                self.heads,
                self.token_projection(encoded.memory, proposal_valid),
                encoded.memory,
                proposals,
                with_predictions=with_loss_outputs,
            )
        else:
            queries = self.query_init(images.shape[0])
        decoded = self.decoder(
            queries.queries,
            queries.query_pos,
            queries.reference,
            encoded.memory,
            tokens,
            box_heads=self.heads.decoder_box_heads() if self.box_refine else None,
        )
        predictions = self.heads.decoder_predictions(
            decoded.hidden_states, decoded.references, with_aux=with_loss_outputs and self.aux_loss
        )
        outputs = SparseDETROutput(
            predictions=predictions[-1],
            tokens=TokenGeometry.of(tokens),
            decoder_sampling=DecoderSampling(decoded.sampling_locations, decoded.attention_weights),
            selection=selection,
            aux_predictions=predictions[:-1],
            two_stage_predictions=two_stage_predictions,
        )
        if with_loss_outputs and self.heads.num_encoder_aux:
            if selection is not None:
                proposals = gather_tokens(proposals, selection.selected_indices)
            aux = self.heads.encoder_aux_predictions(encoded.layer_queries, proposals)
            outputs.encoder_aux_predictions = aux
        if with_internals:
            outputs.internals = NetworkInternals(
                memory=encoded.memory,
                enc_sampling_locations=encoded.sampling_locations,
                enc_attention_weights=encoded.attention_weights,
                queries=queries,
                hidden_states=decoded.hidden_states,
                proposals=proposals,
                proposal_valid=proposal_valid,
            )
        return outputs

    def run_backbone(self, images: Tensor) -> dict[str, Tensor]:
        """The backbone as the model runs it (``channels_last``, ``backbone_dtype``) -> float32 maps.

        Args:
            images: Float[B, 3, H, W] normalised, padded.
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = resolve_backbone_dtype(self.backbone_dtype, images.device.type)
        if dtype is torch.float32:
            return self.backbone(images)
        with torch.autocast(images.device.type, dtype=dtype):
            features = self.backbone(images)
        return {name: feature.float() for name, feature in features.items()}

    def _select_tokens(
        self,
        tokens: TokenBatch,
        proposals: Tensor,
        proposal_valid: Tensor,
        with_loss_outputs: bool,
        keep_ratio: float | Tensor | None,
    ) -> TokenSelection | None:
        """Run the scorer when the encoder is sparse (None = dense): ``is_sparse``, or a rho tensor given."""
        if self.token_scorer is None or self.encoder.num_layers == 0:
            return None
        if not isinstance(keep_ratio, Tensor):
            rho = self.token_scorer.active_keep_ratio
            if keep_ratio is not None:
                rho = validate_keep_ratio(keep_ratio, "SparseDETR.predict(keep_ratio=...)")
            if rho >= 1.0:
                return None
            keep_ratio = rho
        token_features = None
        if self.token_scorer.uses_token_features:
            # the scoring network sees the projected backbone tokens, like the two-stage head
            token_features = self.token_projection(tokens.features + tokens.pos, proposal_valid)
        return self.token_scorer(
            token_features, proposals, tokens.padding_mask, with_loss_outputs, keep_ratio=keep_ratio
        )
