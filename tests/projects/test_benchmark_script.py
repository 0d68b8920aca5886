"""benchmarks/benchmark.py: fvcore counting like the official benchmark, JSON schema, rho sweep."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate
from fvcore.nn import FlopCountAnalysis

from tests.helpers.project_scripts import TINY_CONFIG, load_script

ROW_KEYS = {"config", "rho", "image_size", "gflops_total", "gflops_by_module", "latency_s_median", "params_m"}


benchmark = load_script("benchmark", folder="benchmarks")


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


@pytest.fixture(scope="module")
def tiny_counts():
    """count_gflops of the tiny model: sparse (rho 0.1) with and without encoder aux heads, and dense."""
    images = benchmark.random_images(64, 96, count=1)
    counts = {}
    for name, rho, encoder_aux in (
        ("sparse", 0.1, True),
        ("sparse_no_aux", 0.1, False),
        ("dense", 1.0, True),
    ):
        model = tiny_model(**{"model.heads.encoder_aux": encoder_aux})
        assert benchmark.apply_inference_keep_ratio(model, rho) == rho
        counts[name] = benchmark.count_gflops(model, images)
    return counts


def test_counts_like_the_official_benchmark():
    analysis = benchmark.official_flop_analysis(tiny_model(), benchmark.random_images(64, 96, count=1))
    by_operator = analysis.by_operator()
    assert by_operator["ms_deform_attn"] > 0  # the MSDA handle of sparse_detr.layers is registered
    assert by_operator.get("batch_norm", 0) == 0  # the official FrozenBN is not counted by fvcore
    assert by_operator["scaled_dot_product_attention"] > 0  # decoder self-attention


def test_by_module_sums_to_the_total_and_rho_shrinks_only_the_encoder(tiny_counts):
    for total, by_module in tiny_counts.values():
        assert set(benchmark.GROUP_NAMES) <= set(by_module)
        assert sum(by_module.values()) == pytest.approx(total, rel=1e-9)
    sparse, dense = tiny_counts["sparse"][1], tiny_counts["dense"][1]
    assert sparse["encoder"] < dense["encoder"]
    assert sparse["scorer"] > 0 and dense["scorer"] == 0  # the dense path runs no scorer
    for group in ("backbone", "input_projection", "decoder", "heads"):
        assert sparse[group] == pytest.approx(dense[group])


def test_inference_runs_no_loss_only_heads(tiny_counts):
    """Encoder auxiliary heads serve only the loss: with or without them, inference costs the same."""
    assert tiny_counts["sparse"][0] == pytest.approx(tiny_counts["sparse_no_aux"][0])


def test_latency_statistics():
    model = tiny_model()
    stats = benchmark.measure_latency(model, [benchmark.random_images(64, 96, count=1)], num_runs=2, warmup=0)
    assert stats.runs == 2
    assert 0 < stats.minimum <= stats.p25 <= stats.median <= stats.p75 <= stats.maximum
    assert stats.cpu_median > 0
    with pytest.raises(ValueError, match="--num-runs"):
        benchmark.measure_latency(model, [benchmark.random_images(64, 96, count=1)], num_runs=0, warmup=1)


def test_rho_on_a_dense_model_is_refused():
    model = tiny_model(**{"model.token_scorer": "null", "model.heads.encoder_aux": False})
    assert benchmark.apply_inference_keep_ratio(model, None) == 1.0
    with pytest.raises(ValueError, match="no token scorer"):
        benchmark.apply_inference_keep_ratio(model, 0.3)


def test_cli_flops_json_and_plot(tmp_path, capsys):
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    rows = benchmark.main(
        [
            "--flops",
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
        assert row["gflops_total"] > 0 and row["params_m"] > 0
        assert row["latency_s_median"] is None  # not measured: null
        assert set(benchmark.GROUP_NAMES) <= set(row["gflops_by_module"])
    assert payload["rows"][0]["gflops_total"] < payload["rows"][1]["gflops_total"]
    assert plot_path.stat().st_size > 0
    assert "| tiny_shapes | 0.2 |" in capsys.readouterr().out


def test_cli_latency_only(tmp_path):
    json_path = tmp_path / "bench.json"
    benchmark.main(
        [
            "--latency",
            "--num-runs",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "2",
            "--config-file",
            TINY_CONFIG,
            "--image-size",
            "64",
            "96",
            "--json",
            str(json_path),
        ]
    )
    (row,) = json.loads(json_path.read_text())["rows"]
    assert row["latency_s_median"] > 0
    assert row["gflops_total"] is None and row["gflops_by_module"] is None


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit, match="nothing to measure"):
        benchmark.main(["--config-file", TINY_CONFIG])
    with pytest.raises(SystemExit, match=r"--image-size 10 10: 10x10 pixels .*stride 64.*at least 65 px"):
        benchmark.main(["--flops", "--config-file", TINY_CONFIG, "--image-size", "10", "10"])


def test_paper_gflops_lookup_matches_backbone_scorer_and_depth():
    from types import SimpleNamespace

    from sparse_detr.modeling.scorers import DAMScorer, RandomScorer

    def fake(scorer, layers=6):
        return SimpleNamespace(encoder=SimpleNamespace(num_layers=layers), token_scorer=scorer)

    size = list(benchmark.OFFICIAL_IMAGE_SIZE)
    dam = DAMScorer(dim=8)
    assert benchmark.paper_gflops(fake(dam), "sparse_detr_r50_rho0.1_50ep", 0.3, size) == 121
    assert benchmark.paper_gflops(fake(dam), "sparse_detr_swint_rho0.1_50ep", 1.0, size) == 185
    random_scorer = fake(RandomScorer())
    assert benchmark.paper_gflops(random_scorer, "sparse_detr_r50_random_rho0.1_50ep", 0.1, size) == 102
    assert benchmark.paper_gflops(fake(None, 0), "deformable_detr_plus_r50_no_encoder_50ep", 0.0, size) == 91
    assert benchmark.paper_gflops(fake(dam, 12), "sparse_detr_r50_rho0.1_12enc_50ep", 0.1, size) is None
    assert benchmark.paper_gflops(fake(dam), "sparse_detr_r50_rho0.1_50ep", 0.1, [800, 1216]) is None


def test_cli_dataset_images_through_the_test_loader(tmp_path):
    json_path = tmp_path / "bench.json"
    benchmark.main(
        [
            "--flops", "--config-file", TINY_CONFIG, "--dataset", "shapes_tiny_val", "--num-images", "1",
            "--json", str(json_path),
        ]
    )  # fmt: skip
    (row,) = json.loads(json_path.read_text())["rows"]
    assert max(row["image_size"]) <= 128  # resized by the config's test augmentations (max size 128)
    assert row["gflops_total"] > 0
