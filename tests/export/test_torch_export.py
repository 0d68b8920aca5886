"""torch.export: dynamic H/W (and keep_ratio) program, saved and loaded, equals the Detectron2 model."""

import pytest
import torch

from sparse_detr import _ext
from sparse_detr.export import export_model, load_exported, read_metadata
from sparse_detr.export.exporters import export_torch_program
from tests.helpers.export_cases import (
    CASES,
    EXPORT_SIZE,
    RUN_SIZES,
    assert_same_detections,
    build_case,
    random_image,
    reference_detections,
)

pytestmark = pytest.mark.slow

VARIANTS = [
    ("dense", "grid_sample"),
    ("dam", "grid_sample"),
    pytest.param(
        ("dam", "extension"),
        marks=pytest.mark.skipif(not _ext.extension_available(), reason="sparse_detr._C not built"),
    ),
]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "-".join(v))
def saved(request, tmp_path_factory):
    """(case, model, path of the saved program): exported once per variant at EXPORT_SIZE."""
    case, deform_attn = request.param
    model = build_case(case)
    path = tmp_path_factory.mktemp("pt2") / f"{case}_{deform_attn}.pt2"
    export_model(model, path, image_size=EXPORT_SIZE, deform_attn=deform_attn)
    return case, model, path


def test_loaded_program_matches_model(saved):
    case, model, path = saved
    program = torch.export.load(str(path)).module()
    for seed, size in enumerate(RUN_SIZES):
        image = random_image(size, seed)
        for keep_ratio in CASES[case][1]:
            inputs = (image,) if keep_ratio is None else (image, torch.tensor(keep_ratio))
            with torch.no_grad():
                outputs = program(*inputs)
            assert_same_detections(outputs, reference_detections(model, image, keep_ratio), size)


def test_load_exported_runs_the_program(saved):
    case, model, path = saved
    detector = load_exported(path)
    assert detector.runtime == "torch"
    size, keep_ratio = RUN_SIZES[0], CASES[case][1][-1]
    image = random_image(size)
    outputs = detector.run(image.numpy(), keep_ratio)
    assert_same_detections(outputs, reference_detections(model, image, keep_ratio), size)


def test_program_carries_the_metadata(saved):
    case, model, path = saved
    metadata = read_metadata(path)
    resize = (metadata["sparse_detr.test_shortest_edge"], metadata["sparse_detr.test_max_size"])
    assert resize == ("800", "1333")  # the official test resize by default
    assert metadata["sparse_detr.input_format"] == model.input_format
    assert metadata["sparse_detr.deform_attn"] == path.stem.split("_", 1)[1]


def test_program_inputs_are_dynamic(saved):
    case, _, path = saved
    program = torch.export.load(str(path))
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    height, width = placeholders["image"].meta["val"].shape[1:]
    assert not isinstance(height, int) and not isinstance(width, int)
    if CASES[case][1] != (None,):
        assert placeholders["keep_ratio"].meta["val"].shape == ()
    else:
        assert "keep_ratio" not in placeholders


@pytest.fixture(scope="module")
def swin_model():
    """The tiny model with the official Swin-T backbone (random weights)."""
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate

    from sparse_detr.modeling.backbone import SwinBackbone
    from tests.helpers.tiny_sparse_detr import tiny_model_config

    config = tiny_model_config(
        enc_layers=1, dec_layers=1, backbone=L(SwinBackbone)(variant="T"), in_channels=(192, 384, 768)
    )
    torch.manual_seed(0)
    return instantiate(config).eval()


def test_swin_backbone_program_runs_at_any_image_size(swin_model):
    """The official Swin-T backbone (window padding, shifted-window masks, merging of odd map sides) in a
    program traced at one size runs the model's computation at others, map sides of one window included
    (the traced size has them at stride 32; 65 x 65 has them at strides 16 and 32)."""
    program = export_torch_program(swin_model, image_size=EXPORT_SIZE).module()
    for seed, size in enumerate(((65, 65), RUN_SIZES[1], (230, 100))):
        image = random_image(size, seed)
        with torch.no_grad():
            outputs = program(image, torch.tensor(0.3))
        assert_same_detections(outputs, reference_detections(swin_model, image, 0.3), size)


def test_batched_swin_export_is_refused_by_name(swin_model):
    from sparse_detr.export.deployable import DeployableSparseDETR

    with pytest.raises(ValueError, match=r"MODEL.BACKBONE.NAME.*SwinBackbone.*without --batch"):
        DeployableSparseDETR(swin_model, batched=True)
