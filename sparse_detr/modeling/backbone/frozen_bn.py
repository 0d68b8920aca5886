"""FrozenBatchNorm evaluated as the official (torchvision-style) affine map, for bit-compatible features."""

from __future__ import annotations

from detectron2.layers import FrozenBatchNorm2d
from torch import Tensor, nn

__all__ = ["AffineFrozenBatchNorm2d", "frozen_bn_as_affine"]


class AffineFrozenBatchNorm2d(FrozenBatchNorm2d):
    """Detectron2's FrozenBatchNorm2d (same buffers) that always computes ``x * scale + bias``.

    Detectron2 switches to the fused ``F.batch_norm`` when no gradient is needed; its different rounding
    drifts by ~1e-4 through a ResNet-50 from the official model, which always uses the affine form.
    """

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + bias.view(1, -1, 1, 1).to(x.dtype)


def frozen_bn_as_affine(module: nn.Module) -> nn.Module:
    """Turn every ``FrozenBatchNorm2d`` inside ``module`` into :class:`AffineFrozenBatchNorm2d` (in place).

    Buffers and state_dict names are unchanged. Returns ``module``, so it composes in a LazyConfig:
    ``L(frozen_bn_as_affine)(module=L(ResNet)(...))``.
    """
    for child in module.children():
        if type(child) is FrozenBatchNorm2d:
            child.__class__ = AffineFrozenBatchNorm2d
        else:
            frozen_bn_as_affine(child)
    return module
