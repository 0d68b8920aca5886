"""ONNX export: a standard-op graph with dynamic H/W (and keep_ratio) that ONNX Runtime and OpenVINO run
with the Detectron2 model's detections, at image sizes other than the export size."""

import numpy as np
import pytest
from export_cases import (
    CASES,
    EXPORT_SIZE,
    RUN_SIZES,
    assert_same_detections,
    build_case,
    random_image,
    reference_detections,
)

from sparse_detr.export import ONNX_OPSET, check_onnx, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    """(case name, model, .onnx path): each tiny model exported once at EXPORT_SIZE."""
    model = build_case(request.param)
    path = export_onnx(
        model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx", image_size=EXPORT_SIZE
    )
    return request.param, model, path


def _feeds(case: str):
    """(image size, keep ratio, feed dict) for every run-time input the case checks."""
    for seed, size in enumerate(RUN_SIZES):
        image = random_image(size, seed)
        for keep_ratio in CASES[case][1]:
            feed = {"image": image.numpy()}
            if keep_ratio is not None:
                feed["keep_ratio"] = np.array(keep_ratio, dtype=np.float32)
            yield size, keep_ratio, image, feed


def test_graph_is_standard_onnx(exported):
    case, _, path = exported
    check_onnx(path)  # onnx.checker full check + strict shape inference, every value typed
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= ONNX_OPSET >= 17
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for n in proto.graph.node}
    assert "GridSample" in ops
    inputs = {i.name: i.type.tensor_type.shape for i in proto.graph.input}
    assert [d.dim_param or d.dim_value for d in inputs["image"].dim] == [3, "height", "width"]
    if CASES[case][1] != (None,):
        assert "TopK" in ops and list(inputs["keep_ratio"].dim) == []
    else:
        assert "keep_ratio" not in inputs
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "classes"]


def test_onnxruntime_matches_model(exported):
    case, model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size, keep_ratio, image, feed in _feeds(case):
        outputs = session.run(["boxes", "scores", "classes"], feed)
        assert_same_detections(outputs, reference_detections(model, image, keep_ratio), size)


def test_openvino_matches_model(exported):
    ov = pytest.importorskip("openvino")
    case, model, path = exported
    # f32: on CPUs with bf16 units OpenVINO otherwise runs in bf16 (differences ~1e-2)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for size, keep_ratio, image, feed in _feeds(case):
        results = compiled(feed)
        outputs = [results[compiled.output(name)] for name in ("boxes", "scores", "classes")]
        assert_same_detections(outputs, reference_detections(model, image, keep_ratio), size)
