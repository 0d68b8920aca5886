"""The model is buildable from yacs (build_model / DefaultPredictor) and from the LazyConfig base file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from sparse_detr.checkpoint.official_config import official_model_config
from sparse_detr.config import add_sparse_detr_config
from sparse_detr.modeling import SparseDETR
from sparse_detr.modeling.scorers import RandomScorer

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "common" / "models" / "sparse_detr_r50.py"


def _small_yacs_cfg():
    cfg = add_sparse_detr_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    sd = cfg.MODEL.SPARSE_DETR
    sd.HIDDEN_DIM, sd.NUM_HEADS, sd.DIM_FEEDFORWARD = 64, 2, 64
    sd.ENC_LAYERS, sd.DEC_LAYERS, sd.NUM_QUERIES, sd.ENC_POINTS, sd.DEC_POINTS = 2, 2, 10, 2, 2
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    return cfg


def test_yacs_build_model_and_default_predictor():
    cfg = _small_yacs_cfg()
    cfg.MODEL.SPARSE_DETR.TOKEN_SCORER = "random"
    cfg.MODEL.SPARSE_DETR.KEEP_RATIO = 0.5
    model = build_model(cfg)
    assert isinstance(model, SparseDETR) and isinstance(model.token_scorer, RandomScorer)
    assert model.token_scorer.keep_ratio == 0.5 and model.heads.num_encoder_aux == 1
    predictor = DefaultPredictor(cfg)
    image = np.random.default_rng(0).integers(0, 255, (120, 150, 3), dtype=np.uint8)
    instances = predictor(image)["instances"]
    assert instances.image_size == (120, 150) and len(instances) > 0


def test_yacs_bad_keep_ratio_names_the_key():
    cfg = _small_yacs_cfg()
    cfg.MODEL.SPARSE_DETR.KEEP_RATIO = 0.0
    with pytest.raises(ValueError, match="MODEL.SPARSE_DETR.KEEP_RATIO"):
        build_model(cfg)


def test_yacs_dense_without_scorer():
    cfg = _small_yacs_cfg()
    cfg.MODEL.SPARSE_DETR.TOKEN_SCORER = ""
    model = build_model(cfg)
    assert model.token_scorer is None and not model.is_sparse


def test_lazy_base_config_instantiates_and_roundtrips(tmp_path):
    cfg = LazyConfig.load(str(BASE_CONFIG))
    cfg.model.encoder.num_layers = 12  # ties: heads follow the encoder depth by interpolation
    cfg.model.decoder.num_layers = 1
    cfg.model.neck.hidden_dim = 64
    model = instantiate(cfg.model)
    assert (
        model.heads.num_encoder_aux == 11 and model.encoder.dim == 64 and model.token_scorer.keep_ratio == 0.1
    )
    assert model.input_format == "RGB" and model.size_divisibility == 0
    LazyConfig.save(cfg, str(tmp_path / "model.yaml"))
    reloaded = LazyConfig.load(str(tmp_path / "model.yaml"))
    assert reloaded.model.encoder.num_layers == 12


def test_base_config_and_converter_describe_the_same_architecture():
    """The converter's config and the base file build models with identical parameter names/shapes."""
    base = LazyConfig.load(str(BASE_CONFIG)).model
    base.heads.num_classes = 91
    converted = official_model_config(
        dict(
            backbone="resnet50",
            enc_layers=6,
            dec_layers=6,
            num_queries=300,
            dim_feedforward=1024,
            two_stage=True,
            with_box_refine=True,
            eff_query_init=True,
            eff_specific_head=True,
            use_enc_aux_loss=True,
            rho=0.1,
        )
    )
    torch.manual_seed(0)
    ours = {k: v.shape for k, v in instantiate(base).state_dict().items()}
    theirs = {k: v.shape for k, v in instantiate(converted).state_dict().items()}
    assert ours == theirs


def test_yacs_defaults_and_the_lazy_base_are_the_same_model():
    """One wiring source: the default yacs keys and the LazyConfig base build identical models."""
    cfg = add_sparse_detr_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    from_yacs = build_model(cfg)
    torch.manual_seed(0)
    from_lazy = instantiate(LazyConfig.load(str(BASE_CONFIG)).model)
    assert repr(from_yacs) == repr(from_lazy)
    yacs_state, lazy_state = from_yacs.state_dict(), from_lazy.state_dict()
    assert list(yacs_state) == list(lazy_state)
    assert all(torch.equal(yacs_state[k], lazy_state[k]) for k in yacs_state)


def test_every_yacs_key_is_a_graph_argument_and_unknown_keys_are_named():
    import inspect

    from sparse_detr.modeling.meta_arch import graph, sparse_detr_graph

    cfg = _small_yacs_cfg()
    arguments = set(inspect.signature(sparse_detr_graph).parameters)
    keys = {k for k in cfg.MODEL.SPARSE_DETR if k not in graph.BACKBONE_KEYS}
    assert {k.lower() for k in keys} <= arguments
    cfg.MODEL.SPARSE_DETR.NUM_ENCODER_BLOCKS = 3
    with pytest.raises(KeyError, match="NUM_ENCODER_BLOCKS"):
        build_model(cfg)
    cfg = _small_yacs_cfg()
    cfg.MODEL.SPARSE_DETR.IN_FEATURES = ["res2", "res3", "res4"]
    with pytest.raises(ValueError, match=r"MODEL.SPARSE_DETR.IN_FEATURES \['res2'\]"):
        build_model(cfg)
