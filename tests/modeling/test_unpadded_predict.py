"""``SparseDETR.predict`` without a padding mask and with a keep-ratio tensor (the exported path)
computes what the padded path computes."""

import pytest
import torch

from tests.helpers.tiny_sparse_detr import build_tiny_model


@pytest.mark.parametrize("kwargs", [dict(scorer="dam"), dict(scorer=None), dict(scorer="dam", pre_norm=True)])
def test_no_mask_equals_an_all_valid_mask(kwargs):
    model = build_tiny_model(seed=2, **kwargs).eval()
    images = torch.randn(2, 3, 70, 101, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        padded = model.predict(images, torch.zeros(2, 70, 101, dtype=torch.bool), with_internals=True)
        unpadded = model.predict(images, with_internals=True)
    assert torch.equal(unpadded.tokens.spatial_shapes, padded.tokens.spatial_shapes)
    assert torch.equal(unpadded.tokens.level_start_index, padded.tokens.level_start_index)
    assert torch.equal(unpadded.num_kept, padded.num_kept)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(unpadded.predictions[key], padded.predictions[key], rtol=0, atol=1e-6)


def test_keep_ratio_tensor_equals_the_scorer_setting():
    model = build_tiny_model(seed=2, scorer="dam", keep_ratio=0.1).eval()
    images = torch.randn(1, 3, 80, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.set_keep_ratio(0.4)
        configured = model.predict(images)
        model.set_keep_ratio(0.1)
        given = model.predict(images, keep_ratio=torch.tensor(0.4))
        as_float = model.predict(images, keep_ratio=0.4)
        dense = model.predict(images, keep_ratio=1.0)
    assert configured.num_kept.tolist() == given.num_kept.tolist() == as_float.num_kept.tolist()
    torch.testing.assert_close(given.predictions["pred_logits"], configured.predictions["pred_logits"])
    assert dense.selection is None  # rho 1 as a float: the dense encoder, as the scorer setting does
    with pytest.raises(ValueError, match="keep_ratio"):
        model.predict(images, keep_ratio=1.5)
