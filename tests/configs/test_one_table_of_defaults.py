"""The model's defaults are written once, in ``sparse_detr_graph``'s signature; the yacs keys read them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from detectron2.config import get_cfg

import sparse_detr.config.defaults as defaults_module
from sparse_detr.config import add_sparse_detr_config
from sparse_detr.modeling.decoder import DeformableDecoder, DeformableDecoderLayer
from sparse_detr.modeling.encoder import SparseDeformableEncoder, SparseEncoderLayer
from sparse_detr.modeling.layer_stack import DeformableLayerStack
from sparse_detr.modeling.meta_arch.graph import BACKBONE_KEYS, DETECTRON2_KEYED_ARGUMENTS, sparse_detr_graph

SIGNATURE = inspect.signature(sparse_detr_graph).parameters


def _yacs_value(value):
    return list(value) if isinstance(value, tuple) else value


def test_every_graph_default_is_a_yacs_default_of_the_same_value():
    cfg = add_sparse_detr_config(get_cfg())
    expected = {
        name.upper(): _yacs_value(p.default)
        for name, p in SIGNATURE.items()
        if p.default is not inspect.Parameter.empty and name not in DETECTRON2_KEYED_ARGUMENTS
    }
    sparse_keys = {k: v for k, v in cfg.MODEL.SPARSE_DETR.items() if k not in BACKBONE_KEYS}
    assert sparse_keys == expected
    for name, key in DETECTRON2_KEYED_ARGUMENTS.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == _yacs_value(SIGNATURE[name].default), key


def _assigned_names(tree: ast.AST) -> set[str]:
    """The last attribute / subscript name of every assignment target (``sd.DROPOUT = ...`` -> DROPOUT)."""
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Attribute):
                names.add(target.attr)
            elif isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                names.add(str(target.slice.value))
    return names


def test_no_graph_default_is_stated_again_in_the_yacs_defaults():
    tree = ast.parse(Path(defaults_module.__file__).read_text())
    restated = _assigned_names(tree) & (
        {name.upper() for name in SIGNATURE}
        | {key.rpartition(".")[2] for key in DETECTRON2_KEYED_ARGUMENTS.values()}
    )
    assert not restated, f"config/defaults.py restates graph defaults: {sorted(restated)}"


def test_the_restatement_check_sees_a_restated_default():
    tree = ast.parse("sd.DROPOUT = 0.1\ncfg.MODEL.PIXEL_MEAN = [1, 2, 3]\n")
    assert {"DROPOUT", "PIXEL_MEAN"} <= _assigned_names(tree)


def test_the_layer_stacks_take_the_graph_values_without_defaults_of_their_own():
    """What the graph passes to the encoder / decoder stacks and their layers are required arguments."""
    stacks = (DeformableLayerStack, SparseDeformableEncoder, DeformableDecoder)
    for component in (*stacks, SparseEncoderLayer, DeformableDecoderLayer):
        parameters = inspect.signature(component.__init__).parameters
        restated = [
            name for name, p in parameters.items()
            if p.default is not inspect.Parameter.empty and name != "layer_options"
        ]
        assert not restated, f"{component.__name__} restates defaults of sparse_detr_graph: {restated}"
