"""torch.export: dynamic H/W (and keep_ratio) program, saved and loaded, equals the Detectron2 model."""

import pytest
import torch
from export_cases import (
    CASES,
    EXPORT_SIZE,
    RUN_SIZES,
    assert_same_detections,
    build_case,
    random_image,
    reference_detections,
)

from sparse_detr import _ext
from sparse_detr.export import export_torch_program, read_metadata

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
    export_torch_program(model, path, image_size=EXPORT_SIZE, deform_attn=deform_attn)
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
