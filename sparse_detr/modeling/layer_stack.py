"""The stack of identical deformable-attention layers that the encoder and the decoder are built on."""

from __future__ import annotations

from torch import nn

__all__ = ["DeformableLayerStack"]


class DeformableLayerStack(nn.Module):
    """``num_layers`` layers of one class, each with its own weights, and the sizes they share.

    A subclass names its layer (``layer_class``) and the smallest depth it supports (``min_layers``); its
    constructor is this one, or one that adds keyword options of its layers and passes them on in
    ``layer_options``. ``self.layers`` holds the stack (state-dict keys ``layers.<i>.*``).
    """

    layer_class: type[nn.Module]
    min_layers: int = 1

    def __init__(
        self,
        *,
        num_layers: int = 6,
        dim: int = 256,
        ffn_dim: int = 1024,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        dropout: float = 0.1,
        layer_options: dict | None = None,
    ):
        """
        Args:
            num_layers: depth of the stack; at least ``min_layers``.
            dim: the token width C.
            ffn_dim: hidden width of each layer's feed-forward block.
            num_heads, num_levels, num_points: deformable attention heads M, feature levels L and sampling
                points P per head and level.
            dropout: dropout probability inside each layer.
            layer_options: further keyword arguments of ``layer_class`` (e.g. the encoder's ``pre_norm``).
        """
        super().__init__()
        if num_layers < self.min_layers:
            raise ValueError(
                f"{type(self).__name__} needs num_layers >= {self.min_layers}, got num_layers={num_layers}"
            )
        layer_kwargs = dict(
            dim=dim, ffn_dim=ffn_dim, num_heads=num_heads, num_levels=num_levels, num_points=num_points
        )
        layer_kwargs.update(dropout=dropout, **(layer_options or {}))
        self.layers = nn.ModuleList(self.layer_class(**layer_kwargs) for _ in range(num_layers))
        self.num_layers = num_layers
        self.dim = dim
        self.num_levels = num_levels
