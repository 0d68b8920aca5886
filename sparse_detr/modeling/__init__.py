"""Sparse DETR model components; importing this package registers them in their registries."""

from . import analysis, backbone, criterion, dam, matcher  # noqa: F401  (registers the criterion and Swin)
from .decoder import DecoderOutput, DeformableDecoder
from .encoder import EncoderOutput, SparseDeformableEncoder
from .heads import MLP, PredictionHeads
from .meta_arch import SparseDETR
from .neck import MultiScaleNeck
from .outputs import SparseDETROutput
from .postprocess import Detections, detections_to_instances, top_detections
from .query_selection import DecoderQueries, LearnedQueryInit, TokenProjection, TwoStageQueryInit
from .registry import CRITERION_REGISTRY, SPARSE_ENCODER_REGISTRY, TOKEN_SCORER_REGISTRY
from .scorers import (
    DAMScorer,
    ObjectnessScorer,
    RandomScorer,
    ScorerLossInputs,
    TokenScorer,
    TokenSelection,
    kept_token_counts,
    select_tokens,
)
from .tokens import TokenBatch

__all__ = [
    "CRITERION_REGISTRY",
    "DAMScorer",
    "DecoderOutput",
    "DecoderQueries",
    "DeformableDecoder",
    "Detections",
    "EncoderOutput",
    "LearnedQueryInit",
    "MLP",
    "MultiScaleNeck",
    "ObjectnessScorer",
    "PredictionHeads",
    "RandomScorer",
    "ScorerLossInputs",
    "SparseDETROutput",
    "SPARSE_ENCODER_REGISTRY",
    "SparseDETR",
    "SparseDeformableEncoder",
    "TOKEN_SCORER_REGISTRY",
    "TokenBatch",
    "TokenProjection",
    "TokenScorer",
    "TokenSelection",
    "TwoStageQueryInit",
    "detections_to_instances",
    "kept_token_counts",
    "select_tokens",
    "top_detections",
]
