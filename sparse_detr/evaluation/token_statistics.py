"""Token statistics of sparse models at evaluation: the paper's Corr and the number of refined tokens.

``Corr`` (paper section 4.3) is the share of the decoder's cross-attention mass (the DAM, summed over layers,
heads, queries and points) that falls on the tokens the encoder refined. It is reported overall and per
feature level, beside the mean number of refined and valid (non-padding) tokens per image.

Detectron2's evaluators only see the model's final outputs, so :class:`TokenStatisticsModel` wraps a
``SparseDETR`` for evaluation: one forward pass returns the usual ``{"instances": ...}`` plus a
``"token_stats"`` entry per image, which :class:`TokenStatisticsEvaluator` aggregates.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from torch import nn

from ..modeling.analysis import output_attention_map, output_correlation
from ..modeling.outputs import SparseDETROutput

__all__ = ["TokenStatisticsEvaluator", "TokenStatisticsModel", "token_statistics", "with_token_statistics"]

logger = logging.getLogger(__name__)


def token_statistics(outputs: SparseDETROutput) -> list[dict]:
    """Per-image token statistics of one network output.

    Returns:
        one dict per image: ``refined_tokens`` and ``valid_tokens`` (ints) and, for a sparse encoder,
        ``corr`` and ``corr_level{l}`` (floats; the tokens refined are the first ``num_kept[i]`` selected).
    """
    valid = outputs.tokens.valid_counts
    per_image = [{"refined_tokens": int(k), "valid_tokens": int(v)} for k, v in zip(outputs.num_kept, valid)]
    if outputs.selection is None:
        return per_image
    corr = output_correlation(outputs, output_attention_map(outputs))  # [B, 1 + L]
    for stats, row in zip(per_image, corr.tolist()):
        stats["corr"] = row[0]
        stats.update({f"corr_level{level}": value for level, value in enumerate(row[1:])})
    return per_image


class TokenStatisticsModel(nn.Module):
    """Evaluation wrapper of a ``SparseDETR``: outputs gain ``"token_stats"`` (:func:`token_statistics`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        results, outputs = self.model.inference(batched_inputs)
        for result, stats in zip(results, token_statistics(outputs)):
            result["token_stats"] = stats
        return results


def _evaluators(evaluator) -> Sequence[DatasetEvaluator]:
    if isinstance(evaluator, DatasetEvaluators):
        return evaluator._evaluators
    if isinstance(evaluator, DatasetEvaluator):
        return [evaluator]
    return list(evaluator or [])


def with_token_statistics(model: nn.Module, evaluator) -> nn.Module:
    """Wrap ``model`` (unwrapping DDP) if ``evaluator`` contains a :class:`TokenStatisticsEvaluator` and the
    model can produce the statistics; otherwise return ``model`` unchanged."""
    if not any(isinstance(e, TokenStatisticsEvaluator) for e in _evaluators(evaluator)):
        return model
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not hasattr(inner, "inference"):
        logger.warning(f"{type(inner).__name__} exposes no token internals: no token statistics")
        return model
    return TokenStatisticsModel(inner)


class TokenStatisticsEvaluator(DatasetEvaluator):
    """Mean Corr (overall and per level) and mean number of refined / valid tokens over a dataset.

    ``evaluate()`` returns ``{"tokens": {"corr": ..., "corr_level0": ..., "refined_tokens": ...,
    "valid_tokens": ..., "refined_ratio": ...}}`` (Corr keys only for sparse models; means over images,
    per-level means over the images whose level received attention).
    """

    def __init__(self, distributed: bool = True):
        self._distributed = distributed
        self._stats: list[dict] = []

    def reset(self):
        self._stats = []

    def process(self, inputs, outputs):
        self._stats.extend(o["token_stats"] for o in outputs if "token_stats" in o)

    def evaluate(self):
        stats = self._stats
        if self._distributed:
            comm.synchronize()
            stats = list(itertools.chain(*comm.gather(stats, dst=0)))
            if not comm.is_main_process():
                return {}
        if not stats:
            logger.warning("TokenStatisticsEvaluator received no token statistics (model not wrapped?)")
            return {}
        keys = sorted({k for s in stats for k in s})
        means = {k: float(np.nanmean([s[k] for s in stats if k in s])) for k in keys}
        ratios = [s["refined_tokens"] / max(s["valid_tokens"], 1) for s in stats]
        means["refined_ratio"] = float(np.mean(ratios))
        return {"tokens": means}
