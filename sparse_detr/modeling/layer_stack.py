"""The stack of identical deformable-attention layers that the encoder and the decoder are built on."""

from __future__ import annotations

from torch import nn

__all__ = ["DeformableLayerStack"]


class DeformableLayerStack(nn.Module):
    """``num_layers`` layers of one class, each with its own weights, and the sizes they share.

    Subclasses (the encoder and the decoder) keep their explicit keyword signatures, which LazyConfig's
    override checks read, and pass them on here; ``self.layers`` holds the stack (state-dict keys
    ``layers.<i>.*``).
    """

    def __init__(
        self,
        layer_class: type[nn.Module],
        *,
        num_layers: int,
        min_layers: int,
        dim: int,
        num_levels: int,
        **layer_kwargs,
    ):
        """
        Args:
            layer_class: the layer, built as ``layer_class(dim=, num_levels=, **layer_kwargs)``.
            num_layers: depth of the stack; at least ``min_layers``.
            dim: the token width C.
            num_levels: the number of feature levels L the layers attend to.
        """
        super().__init__()
        if num_layers < min_layers:
            raise ValueError(
                f"{type(self).__name__} needs num_layers >= {min_layers}, got num_layers={num_layers}"
            )
        self.layers = nn.ModuleList(
            layer_class(dim=dim, num_levels=num_levels, **layer_kwargs) for _ in range(num_layers)
        )
        self.num_layers = num_layers
        self.dim = dim
        self.num_levels = num_levels
