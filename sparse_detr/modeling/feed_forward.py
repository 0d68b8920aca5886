"""The transformer feed-forward block shared by the encoder and decoder layers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeedForward"]


class FeedForward(nn.Module):
    """``linear2(dropout(relu(linear1(x))))`` followed by dropout (the residual is added by the caller)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.dropout_hidden = nn.Dropout(dropout)
        self.dropout_out = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout_out(self.linear2(self.dropout_hidden(F.relu(self.linear1(x)))))
