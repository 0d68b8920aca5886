"""What ``load_exported`` refuses before anything runs: corrupted files (digests of the weights and the
graph), files of another kind or runtime, files not written by the exporter, invalid metadata; and what
``export_model`` leaves on a full disk."""

import os

import numpy as np
import pytest

from sparse_detr.export import export_model, load_exported, read_metadata
from sparse_detr.export.exporters import onnx_to_openvino
from sparse_detr.utils.files import NoSpaceLeftError
from tests.helpers.export_cases import EXPORT_SIZE, build_case, random_image

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(.onnx path, OpenVINO .xml path) of the tiny dense model."""
    directory = tmp_path_factory.mktemp("checks")
    path = export_model(build_case("dense"), directory / "dense.onnx", image_size=EXPORT_SIZE)
    return path, onnx_to_openvino(path, directory / "dense.xml")


def _flip_bit(data: bytearray, offset: int, bit: int = 3) -> None:
    data[offset] ^= 1 << bit


def _largest_initializer(proto):
    return max(proto.graph.initializer, key=lambda t: len(t.raw_data))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_flipped_weight_bit_is_refused_naming_the_file(exported, tmp_path, runtime):
    path, _ = exported
    data = bytearray(path.read_bytes())
    raw = _largest_initializer(onnx.load(str(path))).raw_data
    _flip_bit(data, data.find(raw) + len(raw) // 2)  # a mantissa bit of one weight in the middle
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(bytes(data))
    onnx.checker.check_model(str(bad))  # the checker passes it
    with pytest.raises(ValueError, match=rf"{bad}: its weights changed since export .*weights_sha256"):
        load_exported(bad, runtime)


def test_a_changed_graph_is_refused(exported, tmp_path):
    path, _ = exported
    proto = onnx.load(str(path))
    node = next(n for n in proto.graph.node if n.op_type == "Add")
    node.input[0], node.input[1] = node.input[1], node.input[0]
    onnx.save(proto, str(tmp_path / "graph.onnx"))
    with pytest.raises(ValueError, match=r"graph\.onnx: its graph changed since export"):
        load_exported(tmp_path / "graph.onnx")


def test_the_openvino_ir_opens_the_documented_way_and_its_bin_is_checked(exported, tmp_path):
    path, xml = exported
    image = random_image(EXPORT_SIZE).numpy()
    reference = load_exported(path).run(image)
    outputs = load_exported(xml).run(image)
    np.testing.assert_allclose(outputs[1], reference[1], rtol=1e-4, atol=1e-6)
    for suffix in (".xml", ".bin"):
        (tmp_path / f"copy{suffix}").write_bytes(xml.with_suffix(suffix).read_bytes())
    data = bytearray((tmp_path / "copy.bin").read_bytes())
    _flip_bit(data, len(data) // 2, bit=6)
    (tmp_path / "copy.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"copy\.bin: its weights \(the IR's \.bin\) changed since export"):
        load_exported(tmp_path / "copy.xml")


def test_a_changed_ir_graph_is_refused(exported, tmp_path):
    _, xml = exported
    (tmp_path / "copy.bin").write_bytes(xml.with_suffix(".bin").read_bytes())
    text = xml.read_text()
    assert 'eps="9.9999997' in text
    (tmp_path / "copy.xml").write_text(text.replace('eps="9.9999997', 'eps="8.9999997', 1))
    with pytest.raises(ValueError, match=r"copy\.xml: its graph \(the IR's \.xml\) changed since export"):
        load_exported(tmp_path / "copy.xml")


def test_an_ir_in_the_wrong_runtime_is_named(exported, tmp_path):
    _, xml = exported
    with pytest.raises(ValueError, match="is an OpenVINO IR: onnxruntime cannot open it; load_exported"):
        load_exported(xml, "onnxruntime")
    renamed = tmp_path / "model.onnx"  # an IR under an ONNX name: its content decides
    renamed.write_bytes(xml.read_bytes())
    with pytest.raises(ValueError, match="is an OpenVINO IR"):
        load_exported(renamed, "onnxruntime")


def test_a_file_not_written_by_the_exporter_is_refused_at_open(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "other",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(ValueError, match=r"other\.onnx: no sparse_detr metadata: not a file written by"):
        load_exported(tmp_path / "other.onnx")
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(ValueError, match=r"text\.onnx is not a readable ONNX file"):
        load_exported(tmp_path / "text.onnx")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("token_strides", "[8, 16", "'\\[8, 16' is not a JSON list of positive integers"),
        ("token_strides", "[]", "is not a JSON list of positive integers"),
        ("token_strides", "[0]", "is not a JSON list of positive integers"),
        ("min_image_size", "many", "'many' is not an integer"),
        ("min_image_size", "1", "1 contradicts the graph's token strides"),
        ("default_keep_ratio", "lots", "'lots' is not a number in \\(0, 1\\]"),
        ("default_keep_ratio", "0", "is not a number in \\(0, 1\\]"),
        ("batched", "maybe", "'maybe' is not true or false"),
    ],
)
def test_invalid_metadata_is_named_with_key_file_and_value(exported, tmp_path, key, value, message):
    path, _ = exported
    proto = onnx.load(str(path))
    entries = {p.key: p for p in proto.metadata_props}
    name = "sparse_detr." + key
    if name in entries:
        entries[name].value = value
    else:
        entry = proto.metadata_props.add()
        entry.key, entry.value = name, value
    bad = tmp_path / "meta.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ValueError, match=rf"{bad}: metadata sparse_detr\.{key} = .*{message}"):
        load_exported(bad)


def test_a_full_disk_names_the_folder_and_keeps_the_previous_export(exported, tmp_path):
    path, _ = exported
    target = tmp_path / "model.onnx"
    target.write_bytes(path.read_bytes())
    before = read_metadata(target)
    # the export's temporary file lands on a device that is always full
    (tmp_path / f".model.onnx.tmp{os.getpid()}").symlink_to("/dev/full")
    with pytest.raises(NoSpaceLeftError, match=rf"no space left in {tmp_path} while writing model\.onnx"):
        export_model(build_case("dense"), target, image_size=EXPORT_SIZE)
    assert read_metadata(target) == before
    load_exported(target)  # still whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("name, written", [("model.pt2", "model.pt2"), ("model.xml", "model.bin")])
def test_a_full_disk_keeps_an_earlier_program_or_ir(tmp_path, name, written):
    model = build_case("dense")
    target = tmp_path / name
    export_model(model, target, image_size=EXPORT_SIZE)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # torch.export.save would abort the process on a full disk: the program is written from memory
    (tmp_path / f".{written}.tmp{os.getpid()}").symlink_to("/dev/full")
    with pytest.raises(NoSpaceLeftError, match=rf"no space left in {tmp_path} while writing {written}"):
        export_model(model, target, image_size=EXPORT_SIZE)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    load_exported(target)
