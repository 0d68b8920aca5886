"""The paper's instruments on the network's output: the decoder attention map (DAM), the refined tokens, Corr.

Evaluation (token statistics), the training criterion's logged Corr, the visualisation and the benchmarks
read the network through these functions; the network itself (``SparseDETR.predict``) computes none of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .dam import attention_correlation, dam_target, decoder_attention_map, selected_token_mask
from .outputs import SparseDETROutput

__all__ = [
    "TokenAnalysis",
    "analyze",
    "output_attention_map",
    "output_correlation",
    "refined_token_mask",
    "token_statistics",
]


def output_attention_map(outputs: SparseDETROutput) -> Tensor:
    """The DAM of one forward: the decoder's sampling splatted onto the token grid, Float[B, N]."""
    sampling, tokens = outputs.decoder_sampling, outputs.tokens
    return decoder_attention_map(
        sampling.locations, sampling.weights, tokens.spatial_shapes, tokens.level_start_index
    )


def refined_token_mask(outputs: SparseDETROutput, all_selected: bool = False) -> Tensor:
    """Bool[B, N]: the tokens the encoder refined (every valid token when dense).

    Args:
        all_selected: count all k selected columns of every image (the official training-log Corr) instead
            of each image's first ``num_kept[i]``.
    """
    selection = outputs.selection
    if selection is None:
        return ~outputs.tokens.padding_mask
    num_kept = None if all_selected else selection.num_kept
    return selected_token_mask(selection.selected_indices, outputs.tokens.padding_mask.shape[1], num_kept)


def output_correlation(
    outputs: SparseDETROutput, attention_map: Tensor, all_selected: bool = False
) -> Tensor:
    """Corr, Float[B, 1 + L]: share of the DAM on the refined tokens, overall then per level."""
    refined = refined_token_mask(outputs, all_selected)
    return attention_correlation(attention_map, refined, outputs.tokens.level_start_index)


@torch.no_grad()
def token_statistics(outputs: SparseDETROutput) -> list[dict]:
    """Per-image token statistics of one network output (what ``TokenStatisticsEvaluator`` averages).

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


@dataclass
class TokenAnalysis:
    """Inference results plus the paper's analysis of one batch.

    Attributes:
        results: as the eval-mode forward, ``[{"instances": Instances}]``.
        outputs: the network output, with internals (decoder queries, encoder sampling, memory).
        decoder_attention_map: Float[B, N] the DAM.
        dam_target: Bool[B, N] its binarisation at the kept counts (the DAM scorer's training target).
        refined: Bool[B, N] the tokens the encoder refined.
        corr: Float[B, 1 + L] share of the DAM on the refined tokens, overall then per level.
    """

    results: list[dict]
    outputs: SparseDETROutput
    decoder_attention_map: Tensor
    dam_target: Tensor
    refined: Tensor
    corr: Tensor


@torch.no_grad()
def analyze(model: nn.Module, batched_inputs: list[dict]) -> TokenAnalysis:
    """Run ``model.inference`` (with internals) on a batch and analyse its token selection."""
    results, outputs = model.inference(batched_inputs, with_internals=True)
    attention_map = output_attention_map(outputs)
    return TokenAnalysis(
        results=results,
        outputs=outputs,
        decoder_attention_map=attention_map,
        dam_target=dam_target(attention_map, outputs.tokens.padding_mask, outputs.num_kept),
        refined=refined_token_mask(outputs),
        corr=output_correlation(outputs, attention_map),
    )
