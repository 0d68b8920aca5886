"""projects/SparseDETR/benchmark.py: fvcore counting like the official benchmark, JSON schema, rho sweep."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate
from fvcore.nn import FlopCountAnalysis

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = str(ROOT / "tests/configs/tiny_shapes.py")
ROW_KEYS = {"config", "rho", "image_size", "gflops_total", "gflops_by_module", "latency_s_median", "params_m"}


def load_script(name: str):
    path = ROOT / "projects/SparseDETR" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"sparse_detr_project_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


benchmark = load_script("benchmark")


def tiny_model(**overrides):
    cfg = LazyConfig.load(TINY_CONFIG)
    cfg = LazyConfig.apply_overrides(cfg, [f"{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def test_sdpa_handle_counts_both_matrix_products():
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    analysis = FlopCountAnalysis(Attention(), (q, k, v))
    analysis.set_op_handle("aten::scaled_dot_product_attention", benchmark.sdpa_flop_jit)
    assert analysis.total() == 2 * 3 * 5 * 7 * (8 + 4)


def test_counts_like_the_official_benchmark():
    model = tiny_model()
    images = benchmark.random_images(96, 128, count=1)
    analysis = benchmark.official_flop_analysis(model, images)
    by_operator = analysis.by_operator()
    assert by_operator["ms_deform_attn"] > 0  # the MSDA handle of sparse_detr.layers is registered
    assert by_operator.get("batch_norm", 0) == 0  # the official FrozenBN is not counted by fvcore
    assert by_operator["scaled_dot_product_attention"] > 0  # decoder self-attention


def test_by_module_sums_to_the_total_and_rho_shrinks_only_the_encoder():
    model = tiny_model()
    images = benchmark.random_images(96, 128, count=1)
    rows = {}
    for rho in (0.1, 1.0):
        assert benchmark.apply_inference_keep_ratio(model, rho) == rho
        rows[rho] = benchmark.count_gflops(model, images)
    for total, by_module in rows.values():
        assert set(benchmark.GROUP_NAMES) <= set(by_module)
        assert sum(by_module.values()) == pytest.approx(total, rel=1e-9)
    sparse, dense = rows[0.1][1], rows[1.0][1]
    assert sparse["encoder"] < dense["encoder"]
    assert sparse["scorer"] > 0 and dense["scorer"] == 0  # the dense path runs no scorer
    for group in ("backbone", "input_projection", "decoder", "heads"):
        assert sparse[group] == pytest.approx(dense[group])


def test_inference_runs_no_loss_only_heads():
    """Encoder auxiliary heads serve only the loss: with or without them, inference costs the same."""
    images = benchmark.random_images(96, 128, count=1)
    with_aux = benchmark.count_gflops(tiny_model(**{"model.heads.encoder_aux": True}), images)
    without_aux = benchmark.count_gflops(tiny_model(**{"model.heads.encoder_aux": False}), images)
    assert with_aux[0] == pytest.approx(without_aux[0])


def test_rho_on_a_dense_model_is_refused():
    model = tiny_model(**{"model.token_scorer": "null", "model.heads.encoder_aux": False})
    assert benchmark.apply_inference_keep_ratio(model, None) == 1.0
    with pytest.raises(ValueError, match="no token scorer"):
        benchmark.apply_inference_keep_ratio(model, 0.3)


def test_cli_flops_latency_json_and_plot(tmp_path, capsys):
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    rows = benchmark.main(
        [
            "--flops",
            "--latency",
            "--num-runs",
            "2",
            "--warmup",
            "1",
            "--config-file",
            TINY_CONFIG,
            "--rho",
            "0.2",
            "1.0",
            "--image-size",
            "64",
            "96",
            "--json",
            str(json_path),
            "--plot",
            str(plot_path),
        ]
    )
    assert len(rows) == 2
    payload = json.loads(json_path.read_text())
    assert set(payload) == {"rows"}
    for row, rho in zip(payload["rows"], (0.2, 1.0)):
        assert set(row) == ROW_KEYS
        assert row["config"] == "tiny_shapes"
        assert row["rho"] == pytest.approx(rho)
        assert row["image_size"] == [64, 96]
        assert row["gflops_total"] > 0 and row["latency_s_median"] > 0 and row["params_m"] > 0
        assert set(benchmark.GROUP_NAMES) <= set(row["gflops_by_module"])
    assert payload["rows"][0]["gflops_total"] < payload["rows"][1]["gflops_total"]
    assert plot_path.stat().st_size > 0
    assert "| tiny_shapes | 0.2 |" in capsys.readouterr().out


def test_cli_absent_measurements_are_null(tmp_path):
    json_path = tmp_path / "bench.json"
    benchmark.main(
        ["--flops", "--config-file", TINY_CONFIG, "--image-size", "64", "96", "--json", str(json_path)]
    )
    (row,) = json.loads(json_path.read_text())["rows"]
    assert row["latency_s_median"] is None and row["gflops_total"] > 0


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit, match="nothing to measure"):
        benchmark.main(["--config-file", TINY_CONFIG])
    with pytest.raises(SystemExit, match="--rho"):
        benchmark.main(["--flops", "--config-file", TINY_CONFIG, "--rho", "1.5"])
