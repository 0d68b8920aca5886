"""ONNX export with ``deform_attn="plugin"``: one TensorRT-layout node per deformable attention, run by the
project's C++ kernel in ONNX Runtime and OpenVINO (``load_exported``) with the
Detectron2 model's detections, at image sizes other than the export size and rho changed at run time."""

import numpy as np
import pytest

from sparse_detr.export import export_model, load_exported
from sparse_detr.export.exporters import check_onnx
from sparse_detr.export.plugin_op import PLUGIN_DOMAIN, PLUGIN_OP_TYPE
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
ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime_extensions")

pytestmark = pytest.mark.slow

RUNTIMES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module", params=["dam", "dense"])
def exported(request, tmp_path_factory):
    """(case name, model, .onnx path): each tiny model exported once with plugin nodes at EXPORT_SIZE."""
    model = build_case(request.param)
    path = tmp_path_factory.mktemp("plugin") / f"{request.param}.onnx"
    export_model(model, path, "onnx", image_size=EXPORT_SIZE, deform_attn="plugin")  # the CLI's route
    return request.param, model, path


def test_each_deformable_attention_is_one_plugin_node(exported):
    _, model, path = exported
    check_onnx(path)  # onnx.checker full check + strict shape inference, every value typed
    proto = onnx.load(str(path))
    assert {(o.domain, o.version) for o in proto.opset_import} >= {(PLUGIN_DOMAIN, 1)}
    assert "GridSample" not in {n.op_type for n in proto.graph.node}
    nodes = [n for n in proto.graph.node if n.domain == PLUGIN_DOMAIN]
    assert {n.op_type for n in nodes} == {PLUGIN_OP_TYPE}
    assert len(nodes) == model.encoder.num_layers + model.decoder.num_layers
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    types = {v.name: v.type.tensor_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    types.update({t.name: onnx.helper.make_tensor_type_proto(t.data_type, t.dims).tensor_type
                  for t in proto.graph.initializer})
    float32, int32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    heads = model.encoder.layers[0].self_attn.num_heads if model.encoder.num_layers else None
    for node in nodes:
        assert not node.attribute  # NVIDIA's plugin takes none
        value, shapes, starts, locations, weights = (types[name] for name in node.input)
        output = types[node.output[0]]
        assert [t.elem_type for t in (value, shapes, starts, locations, weights, output)] == [
            float32, int32, int32, float32, float32, float32
        ]
        assert [len(t.shape.dim) for t in (value, shapes, starts, locations, weights, output)] == [
            4, 2, 1, 6, 5, 4
        ]
        dims = lambda t: [d.dim_value or d.dim_param for d in t.shape.dim]  # noqa: E731
        assert dims(shapes) == [model.neck.num_levels, 2] and dims(starts) == [model.neck.num_levels]
        # output [N, Lq, M, D]: N, M, D of value, Lq of the locations
        assert dims(output) == [dims(value)[0], dims(locations)[1], dims(value)[2], dims(value)[3]]
        assert dims(weights) == dims(locations)[:5]
        if heads is not None:
            assert dims(value)[2] == heads
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert metadata["sparse_detr.deform_attn"] == "plugin"


def _runs(case: str):
    for seed, size in enumerate(RUN_SIZES):
        for keep_ratio in CASES[case][1]:
            yield size, keep_ratio, random_image(size, seed)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtimes_match_model(exported, runtime):
    case, model, path = exported
    detector = load_exported(path, runtime, threads=2)
    assert detector.uses_plugin and detector.is_sparse == (CASES[case][1] != (None,))
    for size, keep_ratio, image in _runs(case):
        outputs = detector.run(image.numpy(), keep_ratio)
        assert_same_detections(outputs, reference_detections(model, image, keep_ratio), size)


def test_plain_runtime_sessions_name_the_op(exported):
    _, _, path = exported
    with pytest.raises(Exception, match=PLUGIN_OP_TYPE):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=PLUGIN_OP_TYPE):
        ov.Core().compile_model(str(path), "CPU")


def test_plugin_is_an_onnx_form_only(tmp_path):
    model = build_case("dense")
    with pytest.raises(ValueError, match="grid_sample.*plugin"):
        export_model(model, tmp_path / "m.onnx", "onnx", deform_attn="extension")
    with pytest.raises(ValueError, match="deform_attn"):
        export_model(model, tmp_path / "m.pt2", "torch-export", deform_attn="plugin")


# ---------------------------------------------------------------------------------------- bad inputs
BAD_KEEP_RATIOS = {
    0.0: "in \\(0, 1\\]",
    -1.0: "in \\(0, 1\\]",
    2.0: "in \\(0, 1\\]",
    float("nan"): "in \\(0, 1\\]",
    float("inf"): "in \\(0, 1\\]",
    1e-9: "keeps less than one of the",
    "a lot": "one number",
    (0.1, 0.2): "one number",
}
BAD_IMAGES = {
    "3x2x2": (np.full((3, 2, 2), 100, np.float32), "below the graph's minimum size 65"),
    "64 px high": (np.full((3, 64, 200), 100, np.float32), "64 x 200: below"),
    "4 channels": (np.full((4, 96, 96), 100, np.float32), "shape \\(3, H, W\\)"),
    "H x W x 3": (np.full((96, 96, 3), 100, np.float32), "transpose it"),
    "rank 2": (np.full((96, 96), 100, np.float32), "shape \\(3, H, W\\)"),
    "all NaN": (np.full((3, 96, 96), np.nan, np.float32), "27648 of 27648 values that are NaN"),
    "one inf": (np.pad(np.full((3, 96, 96), 100, np.float32)[:, :-1], ((0, 0), (0, 1), (0, 0)),
                       constant_values=np.inf), "NaN or infinite"),
    "a list": ([[[1.0]]], "numpy array or torch tensor"),
    "strings": (np.full((3, 96, 96), "x"), "real numbers"),
}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_helpers_refuse_inputs_outside_the_graph_domain(exported, runtime):
    case, _, path = exported
    detector = load_exported(path, runtime)
    image = random_image(EXPORT_SIZE).numpy()
    for name, (bad, message) in BAD_IMAGES.items():
        with pytest.raises(ValueError, match=f"image.*{message}|{message}") as error:
            detector.run(bad)
        assert "image" in str(error.value), name
    if case == "dense":
        with pytest.raises(ValueError, match="dense encoder"):
            detector.run(image, keep_ratio=0.5)
        return
    for keep_ratio, message in BAD_KEEP_RATIOS.items():
        with pytest.raises(ValueError, match=f"keep_ratio.*{message}"):
            detector.run(image, keep_ratio)
    tokens = sum(-(-EXPORT_SIZE[0] // s) * -(-EXPORT_SIZE[1] // s) for s in detector.token_strides)
    detector.run(image, 1.0 / tokens)  # the smallest ratio that keeps one whole token runs
    detector.run(image)  # the file's default keep ratio


def test_metadata_records_the_graph_domain(exported):
    _, model, path = exported
    metadata = load_exported(path).metadata
    assert metadata["sparse_detr.keep_ratio_range"] == "(0, 1]"
    assert metadata["sparse_detr.min_image_size"] == "65"
    import torch

    from sparse_detr.modeling.input_size import level_sizes

    # the recorded strides count the encoder's tokens exactly (at sizes that do not divide evenly)
    strides = [int(s) for s in metadata["sparse_detr.token_strides"].strip("[]").split(",")]
    for height, width in ((97, 130), *RUN_SIZES):
        with torch.no_grad():
            features = model.backbone(torch.zeros(1, 3, height, width))
            mask = torch.zeros(1, height, width, dtype=torch.bool)
            tokens = model.neck([features[f] for f in model.in_features], mask)
        counted = tokens.features.shape[1]
        assert sum(h * w for h, w in level_sizes(height, width, strides)) == counted, (height, width)
