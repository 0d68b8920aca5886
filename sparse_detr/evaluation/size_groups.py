"""Inference batches without padding: one model pass per image size.

Sparse DETR pads a batch to its largest image; the padding reaches a smaller image's results through the
backbone's borders and the token scorer's statistics (its top-10 detections change, scores by up to ~5e-3
on a tiny model; the official implementation does the same). Training keeps padded batches (the official
semantics); where the project batches for inference (``train_net.py``'s evaluation with
``dataloader.test.batch_size`` > 1, ``benchmarks/benchmark.py --batch-size``) the model runs through
:class:`SameSizeBatches`, so that an image's detections are those it gets alone up to float rounding
(bit for bit when it is the only image of its size; a few 1e-7 in the scores beside same-size images).
"""

from __future__ import annotations

from torch import nn

__all__ = ["SameSizeBatches"]


class SameSizeBatches(nn.Module):
    """``model`` called once per image size of a Detectron2 batch; results in the batch's order.

    ``forward(batched_inputs: list[dict])`` (each ``"image"`` Float[3, H, W]) -> ``model``'s per-image
    outputs, image i's from a pass over the inputs of its (H, W) only.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batched_inputs: list[dict]) -> list:
        sizes = [tuple(x["image"].shape[-2:]) for x in batched_inputs]
        if len(set(sizes)) == 1:
            return self.model(batched_inputs)
        results: list = [None] * len(batched_inputs)
        for size in dict.fromkeys(sizes):
            group = [i for i, s in enumerate(sizes) if s == size]
            for i, result in zip(group, self.model([batched_inputs[i] for i in group])):
                results[i] = result
        return results
