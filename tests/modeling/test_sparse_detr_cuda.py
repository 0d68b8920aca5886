"""The whole model on CUDA gives the detections and losses it gives on the CPU (1e-4).

The model is the converted official fixture model when ``<repo>/../shared/reference`` is present, else the
tiny test model (the fixture does not travel to GPU machines). Skipped without a GPU or CUDA kernels.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from sparse_detr import _ext
from tests.helpers.tiny_sparse_detr import build_tiny_model, tiny_batch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(
        not _ext.extension_info()["with_cuda"],
        reason="sparse_detr._C was built without CUDA kernels (rebuild with a GPU or FORCE_CUDA=1)",
    ),
]

FIXTURE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
FIXTURE_FILE = FIXTURE_DIR / "official_sparse_detr_fixture_a.pt"
TOLERANCE = 1e-4


def _official_model_and_batch():
    """The converted official model (dropout 0) and its fixture images as pixels with their targets."""
    from detectron2.structures import Boxes, Instances
    from torchvision.ops import box_convert

    from sparse_detr.checkpoint.convert import OfficialCheckpoint, build_converted_model

    sys.path.insert(0, str(FIXTURE_DIR))
    try:
        from load_fixture import load_official_fixture
    finally:
        sys.path.remove(str(FIXTURE_DIR))
    fixture = load_official_fixture(str(FIXTURE_FILE))
    model, _ = build_converted_model(OfficialCheckpoint(fixture["state_dict"], fixture["args"]))
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    batch = []
    for image, target in zip(fixture["inputs"]["images"], fixture["train"]["targets"]):
        height, width = image.shape[-2:]
        instances = Instances((height, width))
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        instances.gt_boxes = Boxes(box_convert(target["boxes"], "cxcywh", "xyxy") * scale)
        instances.gt_classes = target["labels"]
        batch.append({"image": (image * std + mean) * 255, "height": height, "width": width,
                      "instances": instances})
    return model, batch


@pytest.fixture(scope="module")
def model_and_batch():
    if FIXTURE_FILE.is_file():
        return _official_model_and_batch()
    return build_tiny_model(), tiny_batch()


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 in cuDNN convolutions or matmuls: CPU and CUDA then agree to float32 rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _on(batch, device):
    moved = []
    for item in batch:
        item = dict(item)
        item["image"] = item["image"].to(device)
        if "instances" in item:
            item["instances"] = item["instances"].to(device)
        moved.append(item)
    return moved


def _by_score(instances):
    """Detections ordered by class, then score (a stable order for comparing CPU and CUDA results)."""
    key = instances.pred_classes.double() * 2 - instances.scores.double()  # scores lie in (0, 1)
    order = key.argsort()
    return (instances.scores[order].cpu(), instances.pred_classes[order].cpu(),
            instances.pred_boxes.tensor[order].cpu())


def test_detections_match_cpu(model_and_batch):
    model, batch = model_and_batch
    results = {}
    for device in ("cpu", "cuda"):
        net = copy.deepcopy(model).to(device).eval()
        with torch.no_grad():
            results[device] = net(_on(batch, device))
    for cpu, cuda, item in zip(results["cpu"], results["cuda"], batch):
        cpu_scores, cpu_classes, cpu_boxes = _by_score(cpu["instances"])
        cuda_scores, cuda_classes, cuda_boxes = _by_score(cuda["instances"])
        torch.testing.assert_close(cuda_scores, cpu_scores, rtol=0, atol=TOLERANCE)
        assert torch.equal(cuda_classes, cpu_classes)
        size = max(item["image"].shape[-2:])  # boxes in pixels: the tolerance relative to the image
        torch.testing.assert_close(cuda_boxes, cpu_boxes, rtol=0, atol=TOLERANCE * size)


def test_training_losses_and_gradients_match_cpu(model_and_batch):
    model, batch = model_and_batch
    losses, grads = {}, {}
    for device in ("cpu", "cuda"):
        net = copy.deepcopy(model).to(device).train()
        loss_dict = net(_on(batch, device))
        sum(loss_dict.values()).backward()
        losses[device] = {name: value.detach().cpu() for name, value in loss_dict.items()}
        grads[device] = {name: p.grad.cpu() for name, p in net.named_parameters() if p.grad is not None}
    assert losses["cuda"].keys() == losses["cpu"].keys()
    for name, value in losses["cpu"].items():
        torch.testing.assert_close(losses["cuda"][name], value, rtol=TOLERANCE, atol=TOLERANCE, msg=name)
    assert grads["cuda"].keys() == grads["cpu"].keys()
    for name, grad in grads["cuda"].items():
        assert torch.isfinite(grad).all(), name
    total_cpu = torch.cat([g.flatten() for g in grads["cpu"].values()])
    total_cuda = torch.cat([grads["cuda"][name].flatten() for name in grads["cpu"]])
    # the gradient as a whole (single entries of near-zero gradients carry atomicAdd-order noise)
    assert (total_cuda - total_cpu).norm() <= 1e-3 * total_cpu.norm()


def test_amp_training_step_is_finite(model_and_batch):
    model, batch = model_and_batch
    net = copy.deepcopy(model).cuda().train()
    with torch.autocast("cuda", dtype=torch.float16):
        loss_dict = net(_on(batch, "cuda"))
    total = sum(loss_dict.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
