"""Token statistics of sparse models at evaluation: the paper's Corr and the number of refined tokens.

``Corr`` (paper section 4.3) is the share of the decoder's cross-attention mass (the DAM, summed over layers,
heads, queries and points) that falls on the tokens the encoder refined. It is reported overall and per
feature level, beside the mean number of refined and valid (non-padding) tokens per image.

Detectron2's evaluators only see the model's outputs, and the model returns detections only. So between
``reset()`` and ``evaluate()`` :class:`TokenStatisticsEvaluator` listens to the eval forwards of the Sparse
DETR components (a module forward hook): the token scorer's selection and the decoder's sampling give
:func:`~sparse_detr.modeling.analysis.token_statistics` per image. Any evaluation loop (``train_net.py``,
Detectron2's ``tools/lazyconfig_train_net.py``, ``inference_on_dataset``) reports them without wrapping or
configuring the model.
"""
from __future__ import annotations

import itertools
import logging
import weakref

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from torch import nn

from ..modeling.analysis import token_statistics
from ..modeling.decoder import DecoderOutput, DeformableDecoder
from ..modeling.outputs import DecoderSampling, SparseDETROutput, TokenGeometry
from ..modeling.scorers import TokenScorer
from ..modeling.tokens import TokenBatch
from ..utils.input_checks import tracing

__all__ = ["TokenStatisticsEvaluator", "token_statistics"]

logger = logging.getLogger(__name__)


class _ForwardListener:
    """Turns the eval forwards of token scorers and decoders into per-image token statistics.

    A forward of the network runs the scorer (sparse encoders only) before the decoder; the decoder's call
    closes the forward: its inputs carry the token layout, its output the sampling that makes the DAM.
    """

    def __init__(self, evaluator: TokenStatisticsEvaluator):
        self._evaluator = weakref.ref(evaluator)  # a forgotten evaluator does not keep listening
        self._selection = None
        self._handle = nn.modules.module.register_module_forward_hook(self)

    def remove(self) -> None:
        self._handle.remove()

    def __call__(self, module: nn.Module, args: tuple, output) -> None:
        if module.training or not isinstance(module, (TokenScorer, DeformableDecoder)) or tracing():
            return
        evaluator = self._evaluator()
        if evaluator is None:
            self.remove()
            return
        if isinstance(module, TokenScorer):
            self._selection = output
            return
        tokens = next((a for a in args if isinstance(a, TokenBatch)), None)
        if tokens is None or not isinstance(output, DecoderOutput):
            return
        outputs = SparseDETROutput(
            predictions={},
            tokens=TokenGeometry.of(tokens),
            decoder_sampling=DecoderSampling(output.sampling_locations, output.attention_weights),
            selection=self._selection,
        )
        self._selection = None
        evaluator._pending.extend(token_statistics(outputs))


class TokenStatisticsEvaluator(DatasetEvaluator):
    """Mean Corr (overall and per level) and mean number of refined / valid tokens over a dataset.

    ``evaluate()`` returns ``{"tokens": {"corr": ..., "corr_level0": ..., "refined_tokens": ...,
    "valid_tokens": ..., "refined_ratio": ...}}`` (Corr keys only for sparse models; means over images,
    per-level means over the images whose level received attention). The statistics are taken from the
    eval forwards run between ``reset()`` and ``evaluate()`` (as ``inference_on_dataset`` calls them).
    """

    def __init__(self, distributed: bool = True):
        self._distributed = distributed
        self._stats: list[dict] = []
        self._pending: list[dict] = []
        self._listener: _ForwardListener | None = None

    def reset(self):
        self._stop_listening()
        self._stats, self._pending = [], []
        self._listener = _ForwardListener(self)

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.remove()
            self._listener = None

    def process(self, inputs, outputs):
        self._stats.extend(self._pending)
        self._pending = []

    def evaluate(self):
        self._stop_listening()
        stats = self._stats
        if self._distributed:
            comm.synchronize()
            stats = list(itertools.chain(*comm.gather(stats, dst=0)))
            if not comm.is_main_process():
                return {}
        if not stats:
            logger.warning(
                "TokenStatisticsEvaluator received no token statistics: no Sparse DETR forward ran between "
                "reset() and evaluate() (run the evaluation with inference_on_dataset, or call reset() "
                "before the model's forwards)"
            )
            return {}
        keys = sorted({k for s in stats for k in s})
        means = {k: float(np.nanmean([s[k] for s in stats if k in s])) for k in keys}
        ratios = [s["refined_tokens"] / max(s["valid_tokens"], 1) for s in stats]
        means["refined_ratio"] = float(np.mean(ratios))
        return {"tokens": means}
