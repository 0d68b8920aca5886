"""The one-image deployable graph (eager) equals the Detectron2 model; unsupported configs refuse."""

import pytest
import torch

from sparse_detr.export.deployable import DeployableSparseDETR
from tests.helpers.export_cases import (
    assert_same_detections,
    build_tiny_model,
    random_image,
    reference_detections,
)


@pytest.mark.parametrize(
    "kwargs, keep_ratio",
    [
        (dict(scorer=None), None),
        (dict(scorer="dam", keep_ratio=0.1), 0.1),
        (dict(scorer="dam", keep_ratio=0.1), 0.5),
        (dict(scorer="dam", keep_ratio=0.1), 1.0),
        (dict(scorer="objectness", keep_ratio=0.3), 0.3),
        (dict(scorer="dam", keep_ratio=0.2, pre_norm=True), 0.2),
        (dict(scorer="dam", keep_ratio=0.2, enc_layers=0), None),
    ],
)
@pytest.mark.parametrize("size", [(70, 90), (128, 100)])
def test_eager_graph_equals_model(kwargs, keep_ratio, size):
    model = build_tiny_model(seed=1, **kwargs).eval()
    deployable = DeployableSparseDETR(model)
    image = random_image(size)
    rho = None if keep_ratio is None else torch.tensor(keep_ratio)
    with torch.no_grad():
        outputs = deployable(image, rho)
    reference = reference_detections(model, image, keep_ratio if deployable.is_sparse else None)
    assert_same_detections(outputs, reference, size)


def test_default_keep_ratio_is_the_inference_rho():
    model = build_tiny_model(seed=1, scorer="dam", keep_ratio=0.1).eval()
    model.set_keep_ratio(0.4)
    deployable = DeployableSparseDETR(model)
    assert deployable.default_keep_ratio.item() == pytest.approx(0.4)
    image = random_image((70, 90))
    with torch.no_grad():
        outputs = deployable(image)
    assert_same_detections(outputs, reference_detections(model, image, 0.4), (70, 90))


def test_clipping_and_empty_boxes_follow_detector_postprocess():
    model = build_tiny_model(seed=1, scorer=None).eval()
    with torch.no_grad():  # boxes far outside the image: clipped, and the empty ones dropped
        model.heads.box_heads[model.heads.decoder_site(1)].layers[-1].bias.copy_(
            torch.tensor([3.0, -3, 0, 0])
        )
    image = random_image((70, 90))
    with torch.no_grad():
        outputs = DeployableSparseDETR(model)(image)
    reference = reference_detections(model, image, None)
    assert_same_detections(outputs, reference, (70, 90))
    boxes = outputs[0]
    assert (boxes[:, 0::2] <= 90).all() and (boxes[:, 1::2] <= 70).all() and (boxes >= 0).all()


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        (dict(scorer="random"), "TOKEN_SCORER"),
        (dict(scorer="dam", backbone_dtype="bfloat16"), "BACKBONE_DTYPE"),
    ],
)
def test_unsupported_settings_refuse_by_name(kwargs, setting):
    model = build_tiny_model(**kwargs).eval()
    with pytest.raises(ValueError, match=setting):
        DeployableSparseDETR(model)


def test_size_divisibility_refuses_by_name():
    model = build_tiny_model(scorer="dam").eval()
    model.size_divisibility = 32
    with pytest.raises(ValueError, match="SIZE_DIVISIBILITY"):
        DeployableSparseDETR(model)
