"""Sphinx configuration of the Sparse DETR for Detectron2 documentation (``make docs``)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document the checkout, not an installed copy

project = "Sparse DETR for Detectron2"
author = "Sparse DETR for Detectron2 contributors"
copyright = "the Sparse DETR for Detectron2 contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "figures/*.py"]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # not torch.nn.Module.forward's text on every module
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "Sparse DETR for Detectron2"
pygments_style = "friendly"
