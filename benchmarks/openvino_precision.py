"""What a plain ``openvino.Core().compile_model(ir, "CPU")`` of an exported IR computes in, and whether a
model-carried setting can make it float32.

The converted official fixture (``../shared/reference``) is exported with ``--format openvino``'s
:func:`~sparse_detr.export.export_model` (``format="openvino"``) and compiled three ways:

* ``f32 hint``: ``{"INFERENCE_PRECISION_HINT": "f32"}`` (what :func:`~sparse_detr.export.load_exported`
  passes);
* ``plain``: no configuration, the IR's ``rt_info`` runtime options (``INFERENCE_PRECISION_HINT = f32``)
  being the only precision setting;
* ``plain, marked``: no configuration, every layer of the IR carrying OpenVINO's own precision mark
  (the ``DisablePrecisionConversion`` runtime attribute, ``dynamic:f16,bf16``), which the IR reader restores
  and the CPU plugin honours on the nodes that reach its graph unchanged.

Each row gives the compiled model's inference precision, how many nodes of the compiled graph run in
bf16 (of those with a floating-point precision), and the detections against the official ones (image 0 of
the fixture, rho 0.1): labels in the official order, max score difference.

    .venv/bin/python -m benchmarks.openvino_precision
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference"
PRECISION_MARK = '<attribute name="DisablePrecisionConversion" version="0" value="dynamic:f16,bf16" />'
_LAYER = re.compile(r"<layer [^>]*?/>|<layer [^>]*?[^/]>.*?</layer>", re.S)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_official_fixture() -> dict:
    spec = importlib.util.spec_from_file_location("load_fixture", REFERENCE_DIR / "load_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_official_fixture(REFERENCE_DIR / "official_sparse_detr_fixture_a.pt")


def mark_every_layer(xml: Path, marked: Path) -> None:
    """Write ``marked`` (+ its .bin): ``xml`` with :data:`PRECISION_MARK` in every layer's ``rt_info``."""

    def mark(match: re.Match) -> str:
        layer = match.group(0)
        if layer.endswith("/>"):
            return f"{layer[:-2]}><rt_info>{PRECISION_MARK}</rt_info></layer>"
        if "<rt_info>" in layer:
            return layer.replace("<rt_info>", "<rt_info>" + PRECISION_MARK, 1)
        return layer.replace("</layer>", f"<rt_info>{PRECISION_MARK}</rt_info></layer>")

    marked.write_text(_LAYER.sub(mark, xml.read_text()))
    marked.with_suffix(".bin").write_bytes(xml.with_suffix(".bin").read_bytes())


def bf16_share(compiled) -> tuple[int, int]:
    """(nodes running in bf16, nodes with a floating-point runtime precision) of the compiled graph."""
    precisions = Counter(
        op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
    )
    return precisions["bf16"], sum(precisions[p] for p in ("f32", "bf16", "f16"))


def main() -> None:
    import openvino as ov

    from sparse_detr.checkpoint.convert import OfficialCheckpoint, build_converted_model
    from sparse_detr.export import export_model

    official = load_official_fixture()
    model, _ = build_converted_model(OfficialCheckpoint(official["state_dict"], official["args"]))
    model.eval()
    image = official["inputs"]["images"][0]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    feed = {"image": ((image * std + mean) * 255).numpy(), "keep_ratio": np.array(0.1, np.float32)}
    reference = official["postprocess"]["results"][0]

    core = ov.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(f"OpenVINO {ov.__version__}; CPU capabilities {capabilities}")
    with tempfile.TemporaryDirectory() as directory:
        xml = export_model(model, Path(directory) / "model.xml", image_size=(192, 224))
        recorded = core.read_model(str(xml)).get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"])
        print(f"IR rt_info runtime_options INFERENCE_PRECISION_HINT = {recorded.astype(str)}")
        marked = Path(directory) / "marked.xml"
        mark_every_layer(xml, marked)
        variants = {
            "f32 hint": (xml, {"INFERENCE_PRECISION_HINT": "f32"}),
            "plain": (xml, {}),
            "plain, marked": (marked, {}),
        }
        print("| compile | inference precision | bf16 nodes | labels as official | max score diff |")
        print("|---|---|---|---|---|")
        for name, (path, config) in variants.items():
            compiled = core.compile_model(str(path), "CPU", config)
            results = compiled(feed)
            scores, classes = (results[compiled.output(n)] for n in ("scores", "classes"))
            bf16, floating = bf16_share(compiled)
            precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            count = min(len(scores), len(reference["scores"]))
            same = int((torch.from_numpy(classes[:count]) == reference["labels"][:count]).sum())
            score_diff = np.abs(scores[:count] - reference["scores"][:count].numpy()).max()
            print(
                f"| {name} | {precision} | {bf16} / {floating} "
                f"| {same} / {len(reference['scores'])} | {score_diff:.2g} |"
            )


if __name__ == "__main__":
    main()
