"""End-to-end tests of train_net.py on the tiny synthetic set (tests/configs/tiny_shapes.py, CPU)."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

from sparse_detr.config.validation import check_override_keys
from sparse_detr.data.synthetic import SHAPES_PRESETS, default_datasets_root, register_shapes_dataset
from sparse_detr.engine.loss_guard import NonFiniteLossError
from sparse_detr.engine.output_lock import LOCK_FILE_NAME

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "tests/configs/tiny_shapes.py"

pytestmark = pytest.mark.slow

import train_net  # noqa: E402  (the repository root is on the test path: pyproject.toml)


def run_train_net(tmp_root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_root / "datasets"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", CONFIG, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if check and result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        raise AssertionError(f"train_net.py {' '.join(args)} failed:\n{output}")
    return result


def raw_losses(output_dir: Path) -> dict[int, dict[str, float]]:
    """metrics.json holds raw per-iteration values (log_period=1 in the tiny config)."""
    rows = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    rows = [r for r in rows if "total_loss" in r]
    return {r["iteration"]: {k: v for k, v in r.items() if k.startswith("loss_")} for r in rows}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """4 iterations, checkpoints after iterations 1 and 3, evaluation at the end."""
    root = tmp_path_factory.mktemp("train_net")
    output = root / "full"
    run_train_net(root, f"train.output_dir={output}")
    return root, output


def test_training_writes_checkpoints_metrics_and_evaluates(trained):
    root, output = trained
    checkpoints = ("model_0000001.pth", "model_0000003.pth", "model_final.pth")
    for name in (*checkpoints, "config.yaml", "final_metrics.json"):
        assert (output / name).is_file(), name
    assert (output / "last_checkpoint").read_text() == "model_final.pth"
    assert list(output.glob("events.out.tfevents.*"))  # TensorBoard
    assert not list(output.glob(".*.tmp*"))  # atomic saves leave no temporary files
    assert sorted(raw_losses(output)) == [0, 1, 2, 3]
    metrics = json.loads((output / "final_metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics["bbox"])
    assert 0.0 < metrics["tokens"]["corr"] <= 1.0 and metrics["tokens"]["refined_tokens"] > 0
    # the project's own loggers reach log.txt, beside Detectron2's
    log = (output / "log.txt").read_text()
    assert f"sparse_detr.train_net INFO: Final metrics written to {output / 'final_metrics.json'}" in log


def test_eval_only_reproduces_the_final_evaluation(trained):
    root, output = trained
    evaluated = root / "eval_only"
    run_train_net(root, "--eval-only", f"train.init_checkpoint={output / 'model_final.pth'}",
                  f"train.output_dir={evaluated}")
    after_training = json.loads((output / "final_metrics.json").read_text())
    eval_only = json.loads((evaluated / "final_metrics.json").read_text())
    assert set(eval_only) == set(after_training) == {"bbox", "tokens"}
    for task, values in after_training.items():
        assert eval_only[task] == pytest.approx(values, nan_ok=True)


def test_resume_continues_exactly_like_an_uninterrupted_run(trained):
    root, output = trained
    resumed = root / "resumed"
    resumed.mkdir()
    # the state of a run stopped after the checkpoint of iteration 1 (k = 2 iterations done)
    shutil.copy(output / "model_0000001.pth", resumed / "model_0000001.pth")
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    # the lock file of the killed run, whose process is gone: taken over
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    stale = {"pid": killed.pid, "host": socket.gethostname(), "started": "earlier", "command": "train_net.py"}
    (resumed / LOCK_FILE_NAME).write_text(json.dumps(stale))
    result = run_train_net(root, "--resume", f"train.output_dir={resumed}")
    assert "Starting training from iteration 2" in result.stdout + result.stderr
    assert not (resumed / LOCK_FILE_NAME).exists()

    expected, actual = raw_losses(output), raw_losses(resumed)
    assert sorted(actual) == [2, 3]
    for iteration in (2, 3):
        assert actual[iteration] == pytest.approx(expected[iteration], rel=1e-5, abs=1e-6)

    final_expected = torch.load(output / "model_final.pth", weights_only=True)
    final_actual = torch.load(resumed / "model_final.pth", weights_only=True)
    for key, value in final_expected["model"].items():
        torch.testing.assert_close(final_actual["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    trainer_expected, trainer_actual = final_expected["trainer"], final_actual["trainer"]
    assert trainer_actual["iteration"] == trainer_expected["iteration"] == 3
    assert trainer_actual["hooks"] == trainer_expected["hooks"]  # LR scheduler state
    optimizer_expected, optimizer_actual = trainer_expected["optimizer"], trainer_actual["optimizer"]
    assert optimizer_actual["param_groups"] == optimizer_expected["param_groups"]
    for index, state in optimizer_expected["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(optimizer_actual["state"][index][name], value, rtol=1e-5, atol=1e-7)


def test_resume_with_max_iter_below_the_checkpoint_names_both_numbers(trained, tmp_path, tiny_sets_in):
    _, output = trained
    resumed = tmp_path / "shortened"
    resumed.mkdir()
    shutil.copy(output / "model_0000003.pth", resumed / "model_0000003.pth")
    (resumed / "last_checkpoint").write_text("model_0000003.pth")
    expected = r"model_0000003\.pth was saved after iteration 3 \(4 iterations done\).*train\.max_iter=2"
    with pytest.raises(ValueError, match=expected):
        train_net.main(_args("--resume", f"train.output_dir={resumed}", "train.max_iter=2"))


def test_two_processes_on_cpu_write_one_checkpoint(tmp_path):
    output = tmp_path / "ddp"
    result = run_train_net(tmp_path, "--num-gpus", "2", "--dist-url", "auto", f"train.output_dir={output}",
                           "train.max_iter=2", "train.checkpointer.period=100")
    assert "World size: 2" in result.stdout + result.stderr
    assert sorted(p.name for p in output.glob("*.pth")) == ["model_final.pth"]
    assert (output / "log.txt.rank1").is_file()
    assert sorted(raw_losses(output)) == [0, 1]


# ---------------------------------------------------------------------------------------------- bad input
def _args(*opts: str):
    return default_argument_parser().parse_args(["--config-file", str(ROOT / CONFIG), *opts])


def test_unknown_config_key_is_named():
    cfg = train_net.LazyConfig.load(str(ROOT / CONFIG))
    with pytest.raises(KeyError, match=r"Unknown config key 'train\.max_iters'.*max_iter"):
        check_override_keys(cfg, ["train.max_iters=3"])
    with pytest.raises(KeyError, match=r"'model\.neck\.hidden_dims'"):
        check_override_keys(cfg, ["model.neck.hidden_dims=3"])
    # existing keys, arguments of a LazyCall target and explicit additions are accepted
    check_override_keys(cfg, ["train.max_iter=3", "model.neck.hidden_dim=16", "+train.note=x"])
    check_override_keys(cfg, ["model.encoder.num_points=2"])  # set in the base config
    check_override_keys(cfg, ["model.query_init.num_queries=5"])


def test_unknown_dataset_is_named():
    cfg = train_net.LazyConfig.load(str(ROOT / CONFIG))
    cfg.dataloader.train.dataset.names = "shapes_no_such_split"
    with pytest.raises(KeyError, match=r"Unknown dataset 'shapes_no_such_split' in dataloader\.train"):
        train_net.check_datasets(cfg)


def test_missing_coco_files_are_explained(tmp_path):
    cfg = train_net.LazyConfig.load(str(ROOT / CONFIG))
    cfg.datasets = {"coco_json": [{"name": "unit_missing_json", "json_file": str(tmp_path / "none.json"),
                                   "image_root": str(tmp_path)}]}
    cfg.dataloader.test.dataset.names = "unit_missing_json"
    with pytest.raises(FileNotFoundError, match="none.json"):
        train_net.check_datasets(cfg)


@pytest.fixture
def tiny_sets_in(tmp_path):
    """Re-register the tiny shapes sets under a temporary DETECTRON2_DATASETS for in-process runs."""
    names = ("shapes_tiny_train", "shapes_tiny_val")

    def register(root):
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
            register_shapes_dataset(name, SHAPES_PRESETS[name], str(root))

    register(tmp_path / "datasets")
    yield
    register(default_datasets_root())


def test_non_finite_losses_stop_training_with_their_names(tmp_path, tiny_sets_in):
    # a broken loss weight makes the GIoU terms infinite from the first iteration on
    output = tmp_path / "diverged"
    args = _args(f"train.output_dir={output}", "model.criterion.giou_weight=inf")
    expected = r"Non-finite loss at iteration 0: loss_giou, loss_giou_0"
    with pytest.raises(NonFiniteLossError, match=expected) as error:
        train_net.main(args)
    assert "loss_bbox" not in str(error.value) and "Training stopped" in str(error.value)
    assert not (output / "model_final.pth").exists()


def test_an_absurd_learning_rate_is_stopped_by_the_loss_guard(tmp_path, tiny_sets_in):
    # the first step explodes the weights (finite, about 1e30): the next losses are NaN
    output = tmp_path / "exploded"
    args = _args(f"train.output_dir={output}", "optimizer.lr=1e30", "train.checkpointer.period=1")
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at iteration 1: .*loss_bbox"):
        train_net.main(args)
    # the checkpoint of the exploded weights is set aside: --resume would fail again from it
    assert (output / "model_0000000.pth.diverged").is_file()
    assert not (output / "last_checkpoint").exists() and not list(output.glob("*.pth"))


def test_the_training_loader_takes_the_annotations_checked_up_front(monkeypatch):
    """train_net.py loads and checks the datasets before building the model; the training loader's dataset
    node then reads no annotation file again (the test loader, built at each evaluation, reads its own)."""
    from detectron2.config import instantiate

    from sparse_detr.data import annotation_checks

    cfg = train_net.LazyConfig.load(str(ROOT / CONFIG))
    loads = []
    real_load = annotation_checks.load_dataset_dicts
    monkeypatch.setattr(
        annotation_checks, "load_dataset_dicts", lambda name, key: loads.append(name) or real_load(name, key)
    )
    train_net.check_datasets(cfg, contents_of=("train", "test"), loaded_next="train")
    assert loads == ["shapes_tiny_train", "shapes_tiny_val"]
    first = instantiate(cfg.dataloader.train.dataset)
    assert loads == ["shapes_tiny_train", "shapes_tiny_val"] and first
    # taken once: the next loader reads the file itself
    again = instantiate(cfg.dataloader.train.dataset)
    assert loads[-1] == "shapes_tiny_train" and len(loads) == 3 and again == first
