"""Two evaluations of Detectron2's FrozenBatchNorm2d: the official affine form and folded into the conv.

* :func:`frozen_bn_as_affine` reproduces the official (torchvision-style) features to the last bits; the
  converted official configs use it so outputs match the official model to 1e-4.
* :func:`fold_frozen_batchnorm` evaluates conv + frozen BN as one convolution: the same function with one
  pass less over every activation map (faster, different rounding); the project's own configs use it.
"""

from __future__ import annotations

import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import Tensor, nn

__all__ = [
    "AffineFrozenBatchNorm2d",
    "FrozenBNFoldedConv2d",
    "fold_frozen_batchnorm",
    "frozen_bn_as_affine",
]


def frozen_bn_scale_shift(norm: FrozenBatchNorm2d) -> tuple[Tensor, Tensor]:
    """A frozen batch norm as the per-channel affine map ``x * scale + shift``: (Float[C], Float[C])."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


class AffineFrozenBatchNorm2d(FrozenBatchNorm2d):
    """Detectron2's FrozenBatchNorm2d (same buffers) that always computes ``x * scale + bias``.

    Detectron2 switches to the fused ``F.batch_norm`` when no gradient is needed; its different rounding
    drifts by ~1e-4 through a ResNet-50 from the official model, which always uses the affine form.
    """

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = frozen_bn_scale_shift(self)
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


def frozen_bn_as_affine(module: nn.Module) -> nn.Module:
    """Turn every ``FrozenBatchNorm2d`` inside ``module`` into :class:`AffineFrozenBatchNorm2d` (in place).

    Buffers and state_dict names are unchanged. Returns ``module``, so it composes in a LazyConfig:
    ``L(frozen_bn_as_affine)(module=L(ResNet)(...))``.
    """
    for submodule in module.modules():
        if type(submodule) is FrozenBatchNorm2d:
            submodule.__class__ = AffineFrozenBatchNorm2d
    return module


class FrozenBNFoldedConv2d(Conv2d):
    """Detectron2's ``Conv2d`` with a ``FrozenBatchNorm2d`` norm, evaluated as one convolution.

    A frozen batch norm is the per-channel affine map ``y * scale + shift``; folding it into the
    convolution (``weight * scale``, ``bias * scale + shift``) gives the same function without a separate
    pass over the output map. The folded weights are recomputed at every call (a pass over the weights,
    far smaller than over the activations), so parameters, buffers, state_dict names and gradients with
    respect to the conv weight are those of the unfolded module.
    """

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = frozen_bn_scale_shift(self.norm)  # the norm's own forward is never called
        bias = shift if self.bias is None else self.bias * scale + shift
        weight = self.weight * scale.view(-1, 1, 1, 1)
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return self.activation(x) if self.activation is not None else x


def fold_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every ``FrozenBatchNorm2d`` that follows a Detectron2 ``Conv2d`` inside ``module`` (in place).

    Only the class of those convolutions changes (to :class:`FrozenBNFoldedConv2d`): parameters, buffers
    and state_dict names stay as they are, so checkpoints load and save unchanged. Returns ``module``, so it
    composes in a LazyConfig: ``L(fold_frozen_batchnorm)(module=L(ResNet)(...))``.
    """
    for submodule in module.modules():
        if type(submodule) is Conv2d and isinstance(submodule.norm, FrozenBatchNorm2d):
            submodule.__class__ = FrozenBNFoldedConv2d
    return module
