"""Your own data and Detectron2's own tools, unmodified: the fine-tuning recipe of docs/own_data.md run
offline from a local checkpoint, through train_net.py and through the installed Detectron2 wheel's
``tools/lazyconfig_train_net.py`` (same model, exact resume, token statistics) and ``tools/analyze_model.py``.

The data: a copy of the tiny shapes set with other category ids and only 3 of the 5 categories; the starting
point: a checkpoint of the tiny model with 5 classes (so the class heads restart, as when fine-tuning COCO).
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import detectron2
import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from sparse_detr.data.synthetic import SHAPES_PRESETS, ensure_shapes_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests/configs/tiny_shapes.py"
DETECTRON2_TOOLS = Path(detectron2.__file__).parents[1] / "tools"  # the wheel ships it beside detectron2/
KEPT_CATEGORIES = {2: 7, 4: 12, 5: 30}  # shapes category id -> id in the own data set (3 of 5)
# Without dropout the training step draws no random numbers: Detectron2's tool seeds once per process (as for
# its own models), train_net.py also before each iteration (its exact resume with dropout: test_train_net.py),
# so only a step without randomness is the same under both and resumes exactly under both.
SHORT_RUN = ["train.max_iter=2", "train.checkpointer.period=1", "train.eval_period=2",
             "dataloader.train.total_batch_size=2", "model.encoder.dropout=0.0", "model.decoder.dropout=0.0"]


def _own_split(datasets_root: Path, preset: str, out: Path) -> Path:
    """The shapes split as one's own COCO json: other category ids, two categories fewer."""
    json_file, image_root = ensure_shapes_dataset(SHAPES_PRESETS[preset], str(datasets_root))
    coco = json.loads(Path(json_file).read_text())
    subfolder = Path(image_root).name
    coco["images"] = [{**image, "file_name": f"{subfolder}/{image['file_name']}"} for image in coco["images"]]
    coco["annotations"] = [
        {**a, "category_id": KEPT_CATEGORIES[a["category_id"]]}
        for a in coco["annotations"] if a["category_id"] in KEPT_CATEGORIES
    ]
    coco["categories"] = [
        {**c, "id": KEPT_CATEGORIES[c["id"]]} for c in coco["categories"] if c["id"] in KEPT_CATEGORIES
    ]
    out.write_text(json.dumps(coco))
    return Path(image_root).parent


# The fine-tuning recipe of docs/own_data.md, offline from a local checkpoint (the placeholders are replaced)
RECIPE = """\
from detectron2.config import LazyConfig

from sparse_detr.engine.finetune import coco_json_summary, finetune_schedule

_base = LazyConfig.load("quickstart_shapes")
_base.train.init_checkpoint = "output/quickstart/model_final.pth"
model, dataloader, optimizer, train = _base.model, _base.dataloader, _base.optimizer, _base.train
datasets = dict(coco_json=[
    dict(name="my_train", json_file="/data/my/train.json", image_root="/data/my/images"),
    dict(name="my_val", json_file="/data/my/val.json", image_root="/data/my/images"),
])
dataloader.train.dataset.names = "my_train"
dataloader.test.dataset.names = "my_val"
dataloader.train.total_batch_size = 8
_train_set = coco_json_summary("/data/my/train.json")
model.heads.num_classes = _train_set.num_classes
_schedule = finetune_schedule(_train_set.num_images, dataloader.train.total_batch_size, epochs=12)
train.max_iter, lr_multiplier = _schedule.max_iter, _schedule.lr_multiplier
train.eval_period, train.checkpointer.period = _schedule.eval_period, _schedule.checkpoint_period
train.output_dir = "./output/my_finetune"
"""


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """(root, recipe config file, environment) for the runs of this module."""
    root = tmp_path_factory.mktemp("own_data")
    datasets_root = root / "datasets"
    image_root = _own_split(datasets_root, "shapes_tiny_train", root / "train.json")
    assert _own_split(datasets_root, "shapes_tiny_val", root / "val.json") == image_root

    torch.manual_seed(0)  # "any model_final.pth": the tiny model with the 5 shapes classes
    start = instantiate(LazyConfig.load(str(TINY_CONFIG)).model)
    assert start.heads.class_heads[0].out_features == 5
    torch.save({"model": start.state_dict()}, root / "model_final.pth")

    recipe = RECIPE
    replacements = {
        '"quickstart_shapes"': repr(str(TINY_CONFIG)),
        '"output/quickstart/model_final.pth"': repr(str(root / "model_final.pth")),
        "/data/my/train.json": str(root / "train.json"),
        "/data/my/val.json": str(root / "val.json"),
        "/data/my/images": str(image_root),
    }
    for old, new in replacements.items():
        recipe = recipe.replace(old, new)
    (root / "my_finetune.py").write_text(recipe)
    env = {
        **os.environ,
        "DETECTRON2_DATASETS": str(datasets_root),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        # offline: any download attempt fails
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    }
    return root, root / "my_finetune.py", env


def _run(script: Path, config: Path, env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(script), "--config-file", str(config), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"{script.name} {' '.join(args)} failed:\n{output[-6000:]}")
    return output


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def _final_model(output_dir: Path) -> dict:
    return torch.load(output_dir / "model_final.pth", weights_only=True)["model"]


@pytest.fixture(scope="module")
def runs(own_data):
    """The recipe trained 2 iterations by train_net.py and by Detectron2's lazyconfig_train_net.py."""
    root, config, env = own_data
    outputs = {"train_net": root / "train_net", "lazyconfig": root / "lazyconfig"}
    logs = {
        "train_net": _run(ROOT / "train_net.py", config, env, *SHORT_RUN,
                          f"train.output_dir={outputs['train_net']}"),
        "lazyconfig": _run(DETECTRON2_TOOLS / "lazyconfig_train_net.py", config, env, *SHORT_RUN,
                           f"train.output_dir={outputs['lazyconfig']}"),
    }
    return outputs, logs


def test_finetune_recipe_trains_offline_from_a_local_checkpoint(runs):
    outputs, logs = runs
    metrics = json.loads((outputs["train_net"] / "final_metrics.json").read_text())
    assert {"AP", "AP50"} <= set(metrics["bbox"]) and metrics["tokens"]["refined_tokens"] > 0
    model = _final_model(outputs["train_net"])
    assert model["heads.class_heads.0.weight"].shape[0] == 3  # the own data's 3 categories
    assert "class_heads" in logs["train_net"]  # the re-initialised class heads are logged


def test_lazyconfig_train_net_trains_the_same_model_as_train_net(runs):
    outputs, logs = runs
    log = logs["lazyconfig"]
    assert "KeyError" not in log and "received no token statistics" not in log
    expected, actual = _final_model(outputs["train_net"]), _final_model(outputs["lazyconfig"])
    assert expected.keys() == actual.keys()
    for key, value in expected.items():  # same initialisation, clipping, data order: the same weights
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)
    rows = {tool: _metrics(output) for tool, output in outputs.items()}
    norms = [r["grad_norm"] for r in rows["lazyconfig"] if "grad_norm" in r]
    assert len(norms) == 2 and min(norms) > 0.1  # clipping at 0.1 was active (ClippedAdamW)
    # iteration 0 (later rows of Detectron2's default metrics.json are medians over 20 iterations)
    assert norms[0] == [r["grad_norm"] for r in rows["train_net"] if "grad_norm" in r][0]
    evaluation = [r for r in rows["lazyconfig"] if "tokens/corr" in r]
    assert evaluation and 0.0 < evaluation[-1]["tokens/corr"] <= 1.0  # the token statistics
    assert "bbox/AP" in evaluation[-1]


def test_lazyconfig_train_net_resumes_exactly(own_data, runs):
    root, config, env = own_data
    outputs, _ = runs
    resumed = root / "lazyconfig_resumed"
    resumed.mkdir()
    shutil.copy(outputs["lazyconfig"] / "model_0000000.pth", resumed / "model_0000000.pth")
    (resumed / "last_checkpoint").write_text("model_0000000.pth")
    log = _run(DETECTRON2_TOOLS / "lazyconfig_train_net.py", config, env, "--resume", *SHORT_RUN,
               f"train.output_dir={resumed}")
    assert "Starting training from iteration 1" in log
    expected, actual = _final_model(outputs["lazyconfig"]), _final_model(resumed)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)


def test_lazyconfig_train_net_eval_only_reports_detections_and_tokens(own_data, runs):
    root, config, env = own_data
    outputs, _ = runs
    log = _run(DETECTRON2_TOOLS / "lazyconfig_train_net.py", config, env, "--eval-only",
               f"train.init_checkpoint={outputs['lazyconfig'] / 'model_final.pth'}",
               f"train.output_dir={root / 'lazyconfig_eval'}")
    assert "received no token statistics" not in log
    # the tool prints the results dict: OrderedDict([('bbox', {'AP': ...}), ('tokens', {'corr': ...})])
    assert re.search(r"\('tokens', \{'corr': 0\.\d+", log) and "('bbox', {'AP'" in log



def test_detectron2_analyze_model_counts_the_flops_of_the_finetune_recipe(own_data, tmp_path):
    """FLOP counting needs no trained heads: the recipe's start checkpoint has 5 classes, the model 3."""
    root, config, env = own_data
    output = _run(DETECTRON2_TOOLS / "analyze_model.py", config, env, "--tasks", "flop", "--num-inputs", "1",
                  f"train.output_dir={tmp_path}")
    assert "UntrainedModelError" not in output
    total = float(re.search(r"Total GFlops: ([0-9.]+)", output).group(1))
    assert total > 0


# ---------------------------------------------------------------------------------------------- FLOPs
def _tiny_eval_model_and_input():
    cfg = LazyConfig.load(str(TINY_CONFIG))
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    return model, next(iter(instantiate(cfg.dataloader.test)))


def _benchmark_msda_flops(model, inputs) -> float:
    from tests.helpers.project_scripts import load_script

    benchmark = load_script("benchmark", folder="benchmarks")
    return benchmark.official_flop_analysis(model, inputs).by_operator()["ms_deform_attn"]


@pytest.fixture
def compiled_msda():
    from sparse_detr._ext import extension_available

    if not extension_available():
        pytest.skip("the compiled MSDA op is not built (the PyTorch path traces as grid_sample)")


def test_detectron2_flop_count_operators_counts_the_deformable_attention(compiled_msda):
    from detectron2.utils.analysis import flop_count_operators

    model, inputs = _tiny_eval_model_and_input()
    gflops = flop_count_operators(model, inputs)
    assert gflops["ms_deform_attn"] * 1e9 == pytest.approx(_benchmark_msda_flops(model, inputs), rel=1e-12)
    assert gflops["ms_deform_attn"] > 0


def test_detectron2_analyze_model_counts_the_deformable_attention(compiled_msda, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    output = _run(DETECTRON2_TOOLS / "analyze_model.py", TINY_CONFIG, env, "--tasks", "flop",
                  "--num-inputs", "1", f"train.output_dir={tmp_path}")
    assert "Unsupported operator sparse_detr::ms_deform_attn" not in output
    averages = re.search(r"Average GFlops for each type of operators:\n(\[.*?\])\n", output).group(1)
    counted = dict(ast.literal_eval(averages))
    model, inputs = _tiny_eval_model_and_input()  # the same first test image, the same initialisation
    assert counted["ms_deform_attn"] * 1e9 == pytest.approx(_benchmark_msda_flops(model, inputs), rel=1e-9)
