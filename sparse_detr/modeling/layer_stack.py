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
        num_layers: int,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        num_levels: int,
        num_points: int,
        dropout: float,
        layer_options: dict | None = None,
    ):
        """The sizes have no defaults here: ``sparse_detr_graph`` holds them (the one table of defaults).

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
