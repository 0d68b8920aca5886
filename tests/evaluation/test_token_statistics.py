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


def test_evaluator_aggregates_the_forwards_it_listened_to(tiny_model):
    evaluator = TokenStatisticsEvaluator(distributed=False)
    evaluator.reset()
    inputs = _inputs()
    with torch.no_grad():
        outputs = tiny_model(inputs)
        per_image = token_statistics(tiny_model.inference(inputs)[1])
    assert all(set(o) == {"instances"} for o in outputs)  # the model returns detections only
    assert all(len(o["instances"]) == tiny_model.top_detections.max_detections for o in outputs)
    evaluator.process(inputs, outputs)
    tokens = evaluator.evaluate()["tokens"]
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
    evaluator = TokenStatisticsEvaluator(distributed=False)
    try:
        results = inference_on_dataset(tiny_model, [_inputs()], evaluator)["tokens"]
    finally:
        tiny_model.token_scorer = scorer
    assert set(results) == {"refined_tokens", "valid_tokens", "refined_ratio"}
    assert results["refined_ratio"] == 1.0


def test_the_evaluator_listens_between_reset_and_evaluate_only(tiny_model, caplog):
    evaluator = TokenStatisticsEvaluator(distributed=False)
    with torch.no_grad():
        outputs = tiny_model(_inputs())  # before reset(): not listened to
    evaluator.process(_inputs(), outputs)
    assert evaluator.evaluate() == {}
    assert "received no token statistics" in caplog.text
    evaluator.reset()
    with torch.no_grad():
        tiny_model.train()(_inputs_with_targets())  # training forwards are not counted
    tiny_model.eval()
    evaluator.process(_inputs(), outputs)
    assert evaluator.evaluate() == {}
    with torch.no_grad():
        tiny_model(_inputs())  # after evaluate(): the listener is gone
    assert evaluator._pending == [] and evaluator._stats == []


def _inputs_with_targets():
    from detectron2.structures import Boxes, Instances

    inputs = _inputs()
    for item in inputs:
        instances = Instances((item["height"], item["width"]))
        instances.gt_boxes = Boxes(torch.tensor([[4.0, 4.0, 40.0, 30.0]]))
        instances.gt_classes = torch.tensor([1])
        item["instances"] = instances
    return inputs
