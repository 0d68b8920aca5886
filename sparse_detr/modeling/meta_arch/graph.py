"""The one description of the Sparse DETR model graph, as a LazyConfig node.

:func:`sparse_detr_graph` turns the model's hyperparameters (one flat, documented set: the lower-case
names of the yacs keys ``MODEL.SPARSE_DETR.*``) into a ``LazyCall(SparseDETR)`` tree. Every other way of
describing a model is a delta on it: the LazyConfig base (``configs/common/models/sparse_detr_r50.py``),
the yacs path (:func:`graph_from_yacs`, used by ``SparseDETR.from_config``), the official-checkpoint converter
and the tests' tiny models. Values that must agree are written once: dimensions and level counts are
interpolated from ``neck``, the heads' sites from the encoder and decoder depths, the class count from
``heads.num_classes``, and the two-stage head, query init and criterion follow the ``two_stage`` /
``two_stage_class_agnostic`` switches.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.modeling import build_backbone
from omegaconf import DictConfig

from ..backbone.frozen_bn import fold_frozen_batchnorm
from ..backbone.precision import set_backbone_execution
from ..decoder import DeformableDecoder
from ..heads import PredictionHeads
from ..matcher import HungarianMatcher
from ..neck import MultiScaleNeck
from ..postprocess import TopDetections
from ..query_selection import LearnedQueryInit, TwoStageQueryInit
from ..registry import CRITERION_REGISTRY, SPARSE_ENCODER_REGISTRY
from ..scorers import SCORER_ALIASES, TOKEN_SCORER_REGISTRY

__all__ = [
    "DETECTRON2_KEYED_ARGUMENTS",
    "DETECTRON2_SCORE_THRESHOLD_KEYS",
    "check_components",
    "components_from_yacs",
    "graph_from_yacs",
    "scorer_node",
    "sparse_detr_graph",
]

# The meta-architecture is named by its import path: sparse_detr.py builds its yacs components from this
# module (``from_config``), so importing the class here would close an import cycle.
META_ARCHITECTURE = "sparse_detr.modeling.meta_arch.sparse_detr.SparseDETR"
# official normalisation: RGB, ImageNet mean/std, in 0-255 pixels
IMAGENET_PIXEL_MEAN = [123.675, 116.28, 103.53]
IMAGENET_PIXEL_STD = [58.395, 57.12, 57.375]
# yacs keys of MODEL.SPARSE_DETR that configure the backbone, not the graph below it
BACKBONE_KEYS = ("FOLD_FROZEN_BN",)
# graph arguments whose yacs home is one of Detectron2's own keys (path under the config root)
DETECTRON2_KEYED_ARGUMENTS = {
    "pixel_mean": "MODEL.PIXEL_MEAN",
    "pixel_std": "MODEL.PIXEL_STD",
    "input_format": "INPUT.FORMAT",
    "max_detections": "TEST.DETECTIONS_PER_IMAGE",
}
# Detectron2's test score thresholds, set by its demo/demo.py --confidence-threshold: the yacs model drops
# detections scoring at most the largest of them and MODEL.SPARSE_DETR.SCORE_THRESH_TEST
DETECTRON2_SCORE_THRESHOLD_KEYS = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.RETINANET.SCORE_THRESH_TEST")


def scorer_node(
    name: str | None, *, keep_ratio: float = 0.1
) -> DictConfig | None:
    """LazyCall of a registered token scorer (short name ``dam`` / ``objectness`` / ``random`` or class name).

    The model context a scorer may take (``dim``, ``num_classes``) is interpolated from the graph, passed only
    if the scorer's ``__init__`` accepts it. None -> None (the dense encoder).
    """
    if not name:
        return None
    scorer_cls = TOKEN_SCORER_REGISTRY.get(SCORER_ALIASES.get(name, name))
    context = {"dim": "${..neck.hidden_dim}", "num_classes": "${..heads.num_classes}"}
    accepted = inspect.signature(scorer_cls.__init__).parameters
    kwargs = {key: value for key, value in context.items() if key in accepted}
    return L(scorer_cls)(**kwargs, keep_ratio=keep_ratio)


def check_components(backbone, in_features, query_init, heads, criterion) -> None:
    """What :func:`sparse_detr_graph` cannot tie by interpolation, checked when ``SparseDETR`` is built (from
    yacs or from an edited LazyConfig): the backbone maps and the two-stage switch."""
    missing = [f for f in in_features if f not in backbone.output_shape()]
    if missing:
        raise ValueError(f"in_features {missing} are not backbone outputs {sorted(backbone.output_shape())}")
    two_stage = bool(getattr(query_init, "two_stage", False))
    agnostic = getattr(criterion, "two_stage_class_agnostic", None)
    if heads.two_stage != two_stage or (
        two_stage and agnostic is not None and agnostic == query_init.class_specific
    ):
        raise ValueError(
            f"the two-stage switch disagrees: heads.two_stage={heads.two_stage}, query_init="
            f"{type(query_init).__name__}, criterion.two_stage_class_agnostic={agnostic} (must be "
            "the opposite of query_init.class_specific); build the model with "
            "sparse_detr_graph(two_stage=..., two_stage_class_agnostic=...)"
        )


def sparse_detr_graph(
    *,
    backbone,
    in_channels: Sequence[int],
    in_features: Sequence[str] = ("res3", "res4", "res5"),
    num_classes: int = 80,
    hidden_dim: int = 256,
    num_feature_levels: int = 4,
    num_heads: int = 8,
    dim_feedforward: int = 1024,
    dropout: float = 0.1,
    encoder_name: str = "SparseDeformableEncoder",
    enc_layers: int = 6,
    enc_points: int = 4,
    pre_norm: bool = False,
    dec_layers: int = 6,
    dec_points: int = 4,
    num_queries: int = 300,
    two_stage: bool = True,
    query_init_from_memory: bool = True,
    two_stage_class_agnostic: bool = False,
    box_refine: bool = True,
    share_heads: bool = False,
    encoder_aux_loss: bool = True,
    aux_loss: bool = True,
    token_scorer: str | None = "dam",
    keep_ratio: float = 0.1,
    criterion_name: str = "SparseDETRCriterion",
    matcher_cost_class: float = 2.0,
    matcher_cost_bbox: float = 5.0,
    matcher_cost_giou: float = 2.0,
    focal_alpha: float = 0.25,
    matcher_focal_alpha: float | None = None,
    class_loss_weight: float = 2.0,
    bbox_loss_weight: float = 5.0,
    giou_loss_weight: float = 2.0,
    mask_prediction_loss_weight: float = 1.0,
    pixel_mean: Sequence[float] = IMAGENET_PIXEL_MEAN,
    pixel_std: Sequence[float] = IMAGENET_PIXEL_STD,
    input_format: str = "RGB",
    size_divisibility: int = 0,
    max_detections: int = 100,
    score_thresh_test: float = 0.0,
    channels_last: bool = True,
    backbone_dtype: str = "float32",
) -> DictConfig:
    """``LazyCall(SparseDETR)`` of the whole model; defaults = the paper's R-50 model with rho = 0.1.

    This signature is the one table of defaults: the yacs keys ``MODEL.SPARSE_DETR.<NAME>`` are its
    keyword arguments in upper case (``config/defaults.py`` reads them from here), except the arguments of
    :data:`DETECTRON2_KEYED_ARGUMENTS`, which Detectron2's own keys carry.

    Args:
        backbone: a LazyCall node (or a built ``Backbone``) whose ``in_features`` maps have ``in_channels``.
        in_features: the backbone maps fed to the neck, finest first.
        encoder_name: a SPARSE_ENCODER_REGISTRY entry.
        enc_layers: encoder depth; 0 = the "no encoder" ablation.
        pre_norm: Pre-LN layers (the official code is Post-LN).
        two_stage: two-stage queries (top-k encoder tokens) and the two-stage head, or learned queries.
        query_init_from_memory: Efficient DETR query init (official ``--eff_query_init``).
        two_stage_class_agnostic: rank proposals by logit 0 and train the two-stage and scorer detection
            heads class-agnostically (official without ``--eff_specific_head``).
        aux_loss: losses on every decoder layer.
        token_scorer: "dam", "objectness", "random" (see :func:`scorer_node`), or None / "" for the dense
            encoder.
        keep_ratio: rho in (0, 1], in training and inference; 1.0 = dense.
        criterion_name: a CRITERION_REGISTRY entry.
        matcher_focal_alpha: the matcher's focal alpha (None = ``focal_alpha``).
        size_divisibility: pad a batch to a multiple of this; 0 = to the largest image only, as the
            official batching.
        channels_last, backbone_dtype: how the backbone runs, set on it when the model is built by
            :func:`~sparse_detr.modeling.backbone.precision.set_backbone_execution` (LazyConfig:
            ``model.backbone.channels_last``, ``model.backbone.dtype``; the backbone itself is
            ``model.backbone.module``; the neck's weights follow ``channels_last``). Channels-last weights:
            backbone and neck on channels-last maps (same function, faster, different rounding from the
            official model). "float32", "auto", "bfloat16" / "float16": the backbone under
            ``torch.autocast`` (from the neck on everything stays float32).
        pixel_mean, pixel_std, input_format, max_detections: ``MODEL.PIXEL_MEAN``, ``MODEL.PIXEL_STD``,
            ``INPUT.FORMAT`` and ``TEST.DETECTIONS_PER_IMAGE`` in yacs.
        score_thresh_test: ``top_detections.score_threshold``: detections scoring at most this are dropped at
            inference (0 = keep the top ``max_detections``); in yacs also the largest of it and
            :data:`DETECTRON2_SCORE_THRESHOLD_KEYS` (what Detectron2's ``demo/demo.py`` sets).
        Others: widths, depths, point counts, matcher costs and loss weights of the paper's model.
    """
    attention = dict(
        dim="${..neck.hidden_dim}",
        ffn_dim=dim_feedforward,
        num_heads=num_heads,
        num_levels="${..neck.num_levels}",
        dropout=dropout,
    )
    if two_stage:
        query_init = L(TwoStageQueryInit)(
            dim="${..neck.hidden_dim}",
            num_queries=num_queries,
            from_memory=query_init_from_memory,
            class_specific=not two_stage_class_agnostic,
        )
    else:
        query_init = L(LearnedQueryInit)(dim="${..neck.hidden_dim}", num_queries=num_queries)
    return L(META_ARCHITECTURE)(
        backbone=L(set_backbone_execution)(
            module=backbone, channels_last=channels_last, dtype=backbone_dtype
        ),
        in_features=list(in_features),
        neck=L(MultiScaleNeck)(
            in_channels=list(in_channels),
            hidden_dim=hidden_dim,
            num_levels=num_feature_levels,
            channels_last="${..backbone.channels_last}",
        ),
        token_scorer=scorer_node(token_scorer, keep_ratio=keep_ratio),
        encoder=L(SPARSE_ENCODER_REGISTRY.get(encoder_name))(
            num_layers=enc_layers, num_points=enc_points, pre_norm=pre_norm, **attention
        ),
        decoder=L(DeformableDecoder)(num_layers=dec_layers, num_points=dec_points, **attention),
        query_init=query_init,
        heads=L(PredictionHeads)(
            hidden_dim="${..neck.hidden_dim}",
            num_classes=num_classes,
            num_decoder_layers="${..decoder.num_layers}",
            two_stage=two_stage,
            num_encoder_layers="${..encoder.num_layers}",
            encoder_aux=encoder_aux_loss,
            share=share_heads,
            box_refine=box_refine,
            aux_loss=aux_loss,
        ),
        criterion=L(CRITERION_REGISTRY.get(criterion_name))(
            num_classes="${..heads.num_classes}",
            matcher=L(HungarianMatcher)(
                cost_class=matcher_cost_class,
                cost_bbox=matcher_cost_bbox,
                cost_giou=matcher_cost_giou,
                focal_alpha=focal_alpha if matcher_focal_alpha is None else matcher_focal_alpha,
            ),
            class_weight=class_loss_weight,
            bbox_weight=bbox_loss_weight,
            giou_weight=giou_loss_weight,
            mask_prediction_weight=mask_prediction_loss_weight,
            focal_alpha=focal_alpha,
            two_stage_class_agnostic=two_stage_class_agnostic,
        ),
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
        input_format=input_format,
        size_divisibility=size_divisibility,
        top_detections=L(TopDetections)(max_detections=max_detections, score_threshold=score_thresh_test),
    )


def graph_from_yacs(cfg, backbone) -> DictConfig:
    """The model graph of a yacs config: ``MODEL.SPARSE_DETR.<KEY>`` -> ``sparse_detr_graph(<key>=...)``.

    Args:
        cfg: a config with ``add_sparse_detr_config`` keys.
        backbone: the built backbone (its output channels give the neck's ``in_channels``).
    """
    sd = cfg.MODEL.SPARSE_DETR
    knobs = {key.lower(): value for key, value in sd.items() if key not in BACKBONE_KEYS}
    unknown = sorted(set(knobs) - set(inspect.signature(sparse_detr_graph).parameters))
    if unknown:
        names = [key.upper() for key in unknown]
        raise KeyError(f"MODEL.SPARSE_DETR has keys the model graph does not know: {names}")
    shapes = backbone.output_shape()
    missing = [f for f in sd.IN_FEATURES if f not in shapes]
    if missing:
        raise ValueError(
            f"MODEL.SPARSE_DETR.IN_FEATURES {missing} are not backbone outputs {sorted(shapes)}"
        )
    knobs["score_thresh_test"] = max(
        sd.SCORE_THRESH_TEST, *(_select(cfg, key) for key in DETECTRON2_SCORE_THRESHOLD_KEYS)
    )
    threshold = knobs["score_thresh_test"]
    if not 0.0 <= threshold <= 1.0:
        keys = " / ".join(("MODEL.SPARSE_DETR.SCORE_THRESH_TEST", *DETECTRON2_SCORE_THRESHOLD_KEYS))
        raise ValueError(f"{keys}: a test score threshold must be in [0, 1], got {threshold}")
    return sparse_detr_graph(
        backbone=backbone,
        in_channels=[shapes[f].channels for f in sd.IN_FEATURES],
        **{name: _select(cfg, key) for name, key in DETECTRON2_KEYED_ARGUMENTS.items()},
        **knobs,
    )


def _select(cfg, dotted_key: str):
    """``cfg.A.B.C`` for ``dotted_key`` "A.B.C"."""
    node = cfg
    for part in dotted_key.split("."):
        node = node[part]
    return node


def _keyword_arguments(**kwargs) -> dict:
    return kwargs


def components_from_yacs(cfg) -> dict:
    """The built components of a yacs config's model: ``SparseDETR``'s keyword arguments (``from_config``).

    The backbone is Detectron2's ``build_backbone(cfg)``, with FrozenBN folded when
    ``MODEL.SPARSE_DETR.FOLD_FROZEN_BN``; the rest, and how the backbone runs (``CHANNELS_LAST``,
    ``BACKBONE_DTYPE``), is :func:`graph_from_yacs` instantiated.
    """
    backbone = build_backbone(cfg)
    if cfg.MODEL.SPARSE_DETR.FOLD_FROZEN_BN:
        backbone = fold_frozen_batchnorm(backbone)
    graph = graph_from_yacs(cfg, backbone)
    graph._target_ = _keyword_arguments  # the components only: @configurable calls SparseDETR itself
    return instantiate(graph)
