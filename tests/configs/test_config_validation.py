"""Config values and overrides are checked before anything is built, naming the key."""

from pathlib import Path

import pytest
from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser

from sparse_detr.config.validation import check_option_order, check_override_types, validate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "tests/configs/tiny_shapes.py")


@pytest.fixture
def cfg():
    return LazyConfig.load(CONFIG)


def test_an_option_after_the_overrides_is_refused():
    with pytest.raises(
        ValueError, match=r"Option '--eval-only' comes after the config overrides.*options go first"
    ):
        check_option_order(["train.max_iter=3", "--eval-only"])
    check_option_order(["train.max_iter=3", "model.neck.hidden_dim=16", "train.seed=-1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.token_scorer.keep_ratio=abc", r"model\.token_scorer\.keep_ratio expected a number.*'abc'"),
        ("train.max_iter=2.5", r"train\.max_iter expected a whole number"),
        ("train.amp.enabled=3", r"train\.amp\.enabled expected true or false"),
        ("dataloader.train.mapper.augmentations.min_sizes=abc", r"min_sizes expected a list"),
        # not in the config: the default of the LazyCall target's argument gives the kind
        (
            "dataloader.test.mapper.skip_unreadable_images=maybe",
            r"skip_unreadable_images expected true or false",
        ),
    ],
)
def test_override_values_of_the_wrong_kind_are_named(cfg, override, message):
    with pytest.raises(ValueError, match=message):
        check_override_types(cfg, [override])


def test_override_values_of_the_right_kind_pass(cfg):
    check_override_types(
        cfg,
        [
            "model.token_scorer.keep_ratio=0.5",
            "train.max_iter=10",
            "optimizer.lr=1",
            "train.output_dir=x",
            "dataloader.train.mapper.augmentations.min_sizes=[64,80]",
            "train.init_checkpoint=/x.pth",
            "+train.note=3",
        ],
    )


def test_invalid_values_are_listed_together(cfg):
    cfg.train.max_iter = 0
    cfg.train.checkpointer.period = 0
    cfg.dataloader.train.total_batch_size = 0
    cfg.optimizer.lr = float("inf")
    cfg.model.token_scorer.keep_ratio = 1.5
    cfg.dataloader.train.num_workers = -1
    with pytest.raises(ValueError) as error:
        validate_config(cfg)
    message = str(error.value)
    for expected in (
        "train.max_iter=0: must be a positive number of iterations",
        "train.checkpointer.period=0",
        "dataloader.train.total_batch_size=0",
        "optimizer.lr=inf",
        "model.token_scorer.keep_ratio=1.5",
        "dataloader.train.num_workers=-1",
    ):
        assert expected in message, expected
    # evaluation needs none of the training settings, but weights
    cfg.model.token_scorer.keep_ratio = 0.3
    cfg.train.init_checkpoint = ""
    with pytest.raises(ValueError, match=r"train\.init_checkpoint='': --eval-only needs weights") as error:
        validate_config(cfg, eval_only=True)
    assert "max_iter" not in str(error.value)


def test_total_batch_size_must_divide_among_processes(cfg):
    cfg.dataloader.train.total_batch_size = 3
    with pytest.raises(ValueError, match=r"total_batch_size=3.*divisible by the number of processes \(2\)"):
        validate_config(cfg, world_size=2)


@pytest.mark.parametrize(
    "opts, message",
    [
        (["train.checkpointer.period=0"], r"train\.checkpointer\.period=0"),
        (["train.max_iter=-1"], r"train\.max_iter=-1"),
        (["dataloader.train.total_batch_size=0"], r"total_batch_size=0"),
        (["train.max_iter=3", "--eval-only"], r"options go first"),
    ],
)
def test_train_net_refuses_before_building_anything(tmp_path, monkeypatch, opts, message):
    import train_net

    built = []
    monkeypatch.setattr(train_net, "instantiate", lambda *a, **k: built.append(a) or pytest.fail("built"))
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, f"train.output_dir={tmp_path / 'out'}", *opts]
    )
    with pytest.raises(ValueError, match=message):
        train_net.main(args)
    assert not built and not (tmp_path / "out").exists()


def test_gradient_clipping_is_an_optimizer_setting(cfg):
    cfg.optimizer.clip_max_norm = None  # clipping off
    validate_config(cfg)
    cfg.optimizer.clip_max_norm = -0.1
    with pytest.raises(ValueError, match=r"optimizer\.clip_max_norm=-0\.1"):
        validate_config(cfg)
    cfg.optimizer.clip_max_norm = 0.1
    cfg.train.clip_grad = {"enabled": True, "max_norm": 0.1}  # a config written for the former hook
    with pytest.raises(ValueError, match=r"train\.clip_grad=.*moved into the optimizer: set optimizer\.clip"):
        validate_config(cfg)
