"""An image's detections do not depend on the other images of an inference batch where the project batches
for inference: one pass per image size (padding to the largest image changes the smaller ones' results)."""

import pytest
import torch

from sparse_detr.evaluation.size_groups import SameSizeBatches
from tests.helpers.tiny_sparse_detr import build_tiny_model


def _image(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("small, big", [((96, 96), (104, 104)), ((72, 80), (256, 256))])
def test_a_small_image_beside_a_bigger_one_gets_its_alone_detections(small, big):
    model = build_tiny_model(seed=3, scorer="dam", keep_ratio=0.3).eval()
    inputs = [{"image": _image(*small, 0)}, {"image": _image(*big, 1)}, {"image": _image(*small, 2)}]
    with torch.no_grad():
        batched = SameSizeBatches(model)(inputs)
        alone = [model([x])[0] for x in inputs]
        padded = model(inputs)  # the model's own padded batch (the official semantics), for comparison
    for together, single in zip(batched, alone):
        a, b = together["instances"], single["instances"]
        assert torch.equal(a.pred_classes, b.pred_classes)
        # float rounding only (a group of two same-size images vs one: other kernel blockings)
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-3)
    # padding changes the small image's scores materially: what grouping by size avoids
    moved = (padded[0]["instances"].scores - alone[0]["instances"].scores).abs().max().item()
    assert moved > 1e-4, moved
