"""Token statistics of sparse models at evaluation: the paper's Corr and the number of refined tokens.

``Corr`` (paper section 4.3) is the share of the decoder's cross-attention mass (the DAM, summed over layers,
heads, queries and points) that falls on the tokens the encoder refined. It is reported overall and per
feature level, beside the mean number of refined and valid (non-padding) tokens per image.

Detectron2's evaluators only see the model's outputs: a ``SparseDETR`` built with
``report_token_statistics=True`` (the project's LazyConfigs) adds a ``"token_stats"`` entry per image to its
eval outputs (:func:`~sparse_detr.modeling.analysis.token_statistics`), which
:class:`TokenStatisticsEvaluator` averages. Any evaluation loop (``train_net.py``, Detectron2's
``tools/lazyconfig_train_net.py``, ``inference_on_dataset``) reports them without wrapping the model.
"""
from __future__ import annotations

import itertools
import logging

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..modeling.analysis import token_statistics

__all__ = ["TokenStatisticsEvaluator", "token_statistics"]

logger = logging.getLogger(__name__)


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
            logger.warning(
                "TokenStatisticsEvaluator received no token statistics: the model's outputs carry no "
                "'token_stats' (build SparseDETR with report_token_statistics=True, i.e. "
                "model.report_token_statistics=True)"
            )
            return {}
        keys = sorted({k for s in stats for k in s})
        means = {k: float(np.nanmean([s[k] for s in stats if k in s])) for k in keys}
        ratios = [s["refined_tokens"] / max(s["valid_tokens"], 1) for s in stats]
        means["refined_ratio"] = float(np.mean(ratios))
        return {"tokens": means}
