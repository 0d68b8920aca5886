"""Figures of what a model predicts and refines (matplotlib / Detectron2's Visualizer)."""

from .prediction_grid import draw_prediction_grid
from .token_figure import analyze_image, draw_figure

__all__ = ["analyze_image", "draw_figure", "draw_prediction_grid"]
