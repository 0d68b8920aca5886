import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import inference_on_dataset

from sparse_detr.evaluation import TokenStatisticsEvaluator
from sparse_detr.evaluation.token_statistics import token_statistics
from sparse_detr.modeling.dam import decoder_attention_map


@pytest.fixture(scope="module")
def tiny_model():
    cfg = LazyConfig.load("tests/configs/tiny_shapes.py")
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def _inputs():
    generator = torch.Generator().manual_seed(1)
    return [
        {"image": torch.randint(0, 255, (3, h, w), generator=generator).byte(), "height": h, "width": w}
        for h, w in ((96, 96), (64, 80))
    ]


def test_corr_is_the_attention_share_of_the_refined_tokens(tiny_model):
    inputs = _inputs()
    with torch.no_grad():
        _, outputs = tiny_model.inference(inputs)
    stats = token_statistics(outputs)
    sampling, tokens = outputs.decoder_sampling, outputs.tokens
    attention = decoder_attention_map(
        sampling.locations, sampling.weights, tokens.spatial_shapes, tokens.level_start_index
    )
    for i, image_stats in enumerate(stats):
        kept = int(outputs.num_kept[i])
        valid = int((~tokens.padding_mask[i]).sum())
        assert image_stats["refined_tokens"] == kept and image_stats["valid_tokens"] == valid
        assert 0 < kept < valid
        refined = outputs.selection.selected_indices[i, :kept]
        expected = float(attention[i, refined].sum() / attention[i].sum())
        assert image_stats["corr"] == pytest.approx(expected, rel=1e-5)
        assert 0.0 <= image_stats["corr"] <= 1.0
        assert {f"corr_level{level}" for level in range(4)} <= set(image_stats)


def test_evaluator_aggregates_what_the_model_reports(tiny_model):
    evaluator = TokenStatisticsEvaluator(distributed=False)
    evaluator.reset()
    inputs = _inputs()
    with torch.no_grad():
        outputs = tiny_model(inputs)  # the configs build the model with report_token_statistics=True
    assert all("instances" in o and len(o["instances"]) == tiny_model.max_detections for o in outputs)
    evaluator.process(inputs, outputs)
    tokens = evaluator.evaluate()["tokens"]
    per_image = [o["token_stats"] for o in outputs]
    assert tokens["refined_tokens"] == pytest.approx(sum(s["refined_tokens"] for s in per_image) / 2)
    assert tokens["corr"] == pytest.approx(sum(s["corr"] for s in per_image) / 2)
    assert 0.25 < tokens["refined_ratio"] < 0.35  # the tiny config keeps rho = 0.3


def test_detectron2_evaluation_loop_reports_them_without_wrapping(tiny_model):
    evaluator = TokenStatisticsEvaluator(distributed=False)
    results = inference_on_dataset(tiny_model, [_inputs()[:1], _inputs()[1:]], evaluator)
    assert results["tokens"]["refined_tokens"] > 0 and 0.0 <= results["tokens"]["corr"] <= 1.0


def test_dense_models_report_token_counts_only(tiny_model):
    scorer = tiny_model.token_scorer
    tiny_model.token_scorer = None
    try:
        with torch.no_grad():
            outputs = tiny_model(_inputs())
    finally:
        tiny_model.token_scorer = scorer
    assert all(set(o["token_stats"]) == {"refined_tokens", "valid_tokens"} for o in outputs)
    assert all(o["token_stats"]["refined_tokens"] == o["token_stats"]["valid_tokens"] for o in outputs)


def test_without_report_token_statistics_the_evaluator_says_what_to_set(tiny_model, caplog):
    tiny_model.report_token_statistics = False
    try:
        with torch.no_grad():
            outputs = tiny_model(_inputs())
    finally:
        tiny_model.report_token_statistics = True
    assert all(set(o) == {"instances"} for o in outputs)
    evaluator = TokenStatisticsEvaluator(distributed=False)
    evaluator.process(_inputs(), outputs)
    assert evaluator.evaluate() == {}
    assert "model.report_token_statistics=True" in caplog.text
