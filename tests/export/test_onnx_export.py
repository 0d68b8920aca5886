"""ONNX export: a standard-op graph with dynamic H/W (and keep_ratio) that ONNX Runtime and OpenVINO run
with the Detectron2 model's detections, at image sizes other than the export size."""

import numpy as np
import pytest

from sparse_detr.export import export_model, load_exported, read_metadata
from sparse_detr.export.exporters import ONNX_OPSET, check_onnx, onnx_to_openvino
from sparse_detr.export.integrity import GRAPH_KEY, IR_BIN_KEY, IR_XML_KEY, WEIGHTS_KEY
from sparse_detr.export.metadata import DeploymentInfo
from tests.helpers.export_cases import (
    CASES,
    EXPORT_SIZE,
    RUN_SIZES,
    assert_same_detections,
    build_case,
    random_image,
    reference_detections,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow

# a test resize and label meaning other than the defaults, to see them recorded
DEPLOYMENT = DeploymentInfo(
    shortest_edge=96, max_size=150, class_names=list("abcde"), category_ids=[3, 1, 4, 15, 9]
)


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    """(case name, model, .onnx path): each tiny model exported once at EXPORT_SIZE."""
    model = build_case(request.param)
    path = export_model(
        model,
        tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx",
        image_size=EXPORT_SIZE,
        deployment=DEPLOYMENT,
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


def test_metadata_records_what_a_deployment_needs(exported):
    case, model, path = exported
    metadata = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert metadata.custom_metadata_map == read_metadata(path)
    metadata = read_metadata(path)
    resize = (metadata["sparse_detr.test_shortest_edge"], metadata["sparse_detr.test_max_size"])
    assert resize == ("96", "150")
    assert metadata["sparse_detr.input_format"] == model.input_format
    assert metadata["sparse_detr.class_names"] == '["a", "b", "c", "d", "e"]'
    assert metadata["sparse_detr.category_ids"] == "[3, 1, 4, 15, 9]"
    assert metadata["sparse_detr.batched"] == "false"
    assert metadata["sparse_detr.exporter_version"].startswith("sparse_detr ")
    if CASES[case][1] == (None,):
        assert "sparse_detr.default_keep_ratio" not in metadata
    else:
        assert metadata["sparse_detr.default_keep_ratio"] == repr(CASES[case][0]["keep_ratio"])


def test_openvino_ir_keeps_float32_and_metadata(exported, tmp_path):
    ov = pytest.importorskip("openvino")
    case, model, path = exported
    if case != "dam":
        pytest.skip("one case is enough for the IR conversion")
    xml = onnx_to_openvino(path, tmp_path / "model.xml")
    onnx_metadata = {k: v for k, v in read_metadata(path).items() if k not in (WEIGHTS_KEY, GRAPH_KEY)}
    assert {k: v for k, v in read_metadata(xml).items() if k not in (IR_BIN_KEY, IR_XML_KEY)} == onnx_metadata
    detector = load_exported(xml)  # the documented way opens the IR (f32, its .bin's digest checked)
    assert detector.runtime == "openvino"
    for size, keep_ratio, image, feed in _feeds(case):
        outputs = detector.run(feed["image"], keep_ratio)
        assert_same_detections(outputs, reference_detections(model, image, keep_ratio), size)
    ir = ov.Core().read_model(str(xml))
    assert ir.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str) == "f32"
    assert {c.get_element_type() for c in ir.get_ops() if c.get_type_name() == "Constant"} >= {ov.Type.f32}
    assert ov.Type.f16 not in {c.get_element_type() for c in ir.get_ops() if c.get_type_name() == "Constant"}
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for size, keep_ratio, image, feed in _feeds(case):
        results = compiled(feed)
        outputs = [results[compiled.output(name)] for name in ("boxes", "scores", "classes")]
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
