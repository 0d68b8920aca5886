"""The documented batch effect: a padded image's detections depend on the other images of its batch (as in
the official code), while one image at a time is independent of anything else."""

from __future__ import annotations

import torch
from detectron2.config import LazyConfig, instantiate

TINY = "tests/configs/tiny_shapes.py"


def test_detections_of_a_padded_image_depend_on_its_batch():
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(TINY).model).eval()
    generator = torch.Generator().manual_seed(1)
    small = {"image": torch.randint(0, 256, (3, 72, 88), generator=generator).float()}
    large = {"image": torch.randint(0, 256, (3, 128, 120), generator=generator).float()}
    other = {"image": torch.randint(0, 256, (3, 72, 88), generator=generator).float()}
    with torch.no_grad():
        alone = model([small])[0]["instances"]
        again = model([small])[0]["instances"]
        beside_same_size = model([small, other])[0]["instances"]  # no padding: same results
        padded = model([small, large])[0]["instances"]
    torch.testing.assert_close(again.scores, alone.scores, rtol=0, atol=0)
    torch.testing.assert_close(beside_same_size.scores, alone.scores, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(padded.scores, alone.scores, rtol=1e-3, atol=1e-4)
