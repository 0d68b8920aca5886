#!/usr/bin/env python
"""Run a Sparse DETR model on images or a video and draw its detections with Detectron2's Visualizer.

    python projects/SparseDETR/demo.py --config-file converted/config.yaml \\
        --weights converted/model_final.pth --input photos/ "more/*.jpg" --output out/demo \\
        --confidence-threshold 0.5 --rho 0.3 --show-tokens
    python projects/SparseDETR/demo.py --config-file configs/quickstart_shapes.py \\
        --video-input clip.mp4 --output out/demo train.init_checkpoint=output/quickstart/model_final.pth

The config is a LazyConfig (``.py`` or a ``.yaml`` saved by ``LazyConfig.save``, e.g. by
``convert_official.py``) or a yacs ``.yaml`` (merged on ``add_sparse_detr_config``), or a model-zoo name.
Both run through ``sparse_detr.Predictor`` (the config's test resize, BGR images, strict loading).
``--rho`` sets the keeping ratio (dynamic sparsification); ``--show-tokens`` also writes
``<name>_tokens.png``, the tokens the encoder refined on each feature level. Inputs that cannot be read
or used (e.g. an aspect ratio the resize cannot handle) are reported by name and skipped; the others are
still processed. Each input gets its own output file (``<name>.png``, inputs from several directories keep
their relative directory; inputs sharing a name get their extension in it: ``photo_jpg.png``,
``photo_png.png``).

Weights: ``--weights`` (default: the config's ``train.init_checkpoint`` / ``MODEL.WEIGHTS``) accepts a file,
a URL, or an official model by name, ``sparse_detr://official/sparse_detr_r50_10`` (downloaded and converted
once). Weights that leave the detection heads untrained (none, or a backbone initialisation) are refused
before anything is downloaded. One log line per input gives its number of detections above the threshold;
the log is also written to ``OUTPUT/log.txt``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from apps import expand_inputs, num_model_classes, read_image_or_none
from detectron2.data import Metadata
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer
from output_names import unique_output_stems
from tqdm import tqdm

from sparse_detr.config.arguments import keep_ratio, unit_interval
from sparse_detr.config.validation import check_option_order
from sparse_detr.data.catalog import class_names
from sparse_detr.engine.predictor import Predictor
from sparse_detr.model_zoo.tool_configs import config_label, load_tool_config
from sparse_detr.utils.cli import run_tool, setup_tool_logger
from sparse_detr.utils.files import atomic_output, refuse_overwriting_inputs
from sparse_detr.visualization import analyze_image, draw_figure

logger = logging.getLogger("sparse_detr.demo")


class Demo:
    """A predictor plus drawing: detections above a threshold, optionally the refined-token figure."""

    def __init__(self, cfg, confidence_threshold: float, rho: float | None, label: str):
        self.predictor = Predictor(cfg)
        self.model = self.predictor.model
        if rho is not None:
            self.model.set_keep_ratio(rho)
        names = class_names(cfg, num_model_classes(self.model))
        self.metadata = Metadata(name=f"{label}_demo", thing_classes=names)
        self.confidence_threshold = confidence_threshold
        self.label = label

    def detections(self, image_bgr: np.ndarray, name: str = "image"):
        """The predictor's ``Instances`` (original-image pixels) at or above the confidence threshold."""
        instances = self.predictor(image_bgr, name)["instances"].to("cpu")
        return instances[instances.scores >= self.confidence_threshold]

    def draw(self, image_bgr: np.ndarray, instances) -> np.ndarray:
        """RGB uint8 image with the detections drawn."""
        visualizer = Visualizer(image_bgr[:, :, ::-1], self.metadata, instance_mode=ColorMode.IMAGE)
        return visualizer.draw_instance_predictions(instances).get_image()

    def run_image(
        self, image_bgr: np.ndarray, output_stem: Path, show_tokens: bool, name: str = "image"
    ):
        """Detect, draw, and write ``<stem>.png`` (and ``<stem>_tokens.png``).

        Returns:
            the written files and the detections (``Instances``) at or above the confidence threshold.
        """
        written = [output_stem.with_name(output_stem.name + ".png")]
        if show_tokens:
            # one pass gives both the detections and the token internals
            view = analyze_image(self.model, self.predictor.model_input(image_bgr, name))
            instances = view.detections[view.detections.scores >= self.confidence_threshold]
            tokens_path = output_stem.with_name(output_stem.name + "_tokens.png")
            draw_figure(
                image_bgr[:, :, ::-1],
                [(self.label, view)],
                str(tokens_path),
                100,
                [list(self.metadata.thing_classes)],
                self.confidence_threshold,
            )
            written.append(tokens_path)
        else:
            instances = self.detections(image_bgr, name)
        _write_rgb(self.draw(image_bgr, instances), written[0])
        return written, instances

    def describe(self, instances) -> str:
        """``"3 detection(s) with score >= 0.5: 2 circle, 1 square"`` (most frequent class first)."""
        names = self.metadata.thing_classes
        counts = Counter(names[c] if 0 <= c < len(names) else str(c) for c in instances.pred_classes.tolist())
        summary = ", ".join(f"{count} {name}" for name, count in counts.most_common())
        return f"{len(instances)} detection(s) with score >= {self.confidence_threshold}" + (
            f": {summary}" if summary else ""
        )


def _write_rgb(image_rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_output(path) as tmp:  # the format from the suffix, which the temporary name keeps
        Image.fromarray(image_rgb).save(tmp)


def run_images(
    demo: Demo, patterns: list[str], output: Path, show_tokens: bool
) -> tuple[list[Path], list[str]]:
    """Every input image through the demo; returns (written files, skipped inputs).

    An input that cannot be read, or that the model cannot take (e.g. an aspect ratio the resize cannot
    handle), is reported by name and skipped; the demo goes on with the next one.
    """
    files = expand_inputs(patterns)
    if not files:
        raise SystemExit(f"--input {' '.join(patterns)}: no files found")
    companions = ("", "_tokens") if show_tokens else ("",)
    stems = unique_output_stems(files, companions=companions)
    planned = {
        f"--output's {stems[p]}{c}.png": output / f"{stems[p]}{c}.png" for p in files for c in companions
    }
    refuse_overwriting_inputs(planned, {f"--input {p}": p for p in files})
    written, skipped = [], []
    for path in tqdm(files, desc="images"):
        image = read_image_or_none(path)
        if image is None:
            skipped.append(path)
            continue
        try:
            files_written, instances = demo.run_image(
                image, output / stems[path], show_tokens, name=f"'{path}'"
            )
        except ValueError as error:  # the input checks' and the resize's errors: this input only
            logger.warning("skipping %s: %s", path, error)
            skipped.append(path)
            continue
        logger.info(f"{path}: {demo.describe(instances)}")
        written += files_written
    return written, skipped


def run_video(demo: Demo, video_path: str, output: Path) -> Path:
    """Detections on every frame of a video, written to ``OUTPUT/<name>.mp4``."""
    import cv2

    video = cv2.VideoCapture(video_path)
    if not video.isOpened():
        raise SystemExit(f"--video-input {video_path}: cannot open it as a video")
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = output / (Path(video_path).stem + ".mp4")
    refuse_overwriting_inputs({"--output's video": out_path}, {"--video-input": video_path})
    with atomic_output(out_path) as tmp:
        _write_video(demo, video, tmp, fps, (width, height), num_frames, video_path)
    return out_path


def _write_video(demo: Demo, video, path: Path, fps: float, size, num_frames, video_path: str) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    visualizer = VideoVisualizer(demo.metadata, ColorMode.IMAGE)
    frames = num_detections = 0
    try:
        with tqdm(total=num_frames, desc="frames") as progress:
            while True:
                ok, frame_bgr = video.read()
                if not ok:
                    break
                instances = demo.detections(frame_bgr)
                drawn = visualizer.draw_instance_predictions(frame_bgr[:, :, ::-1], instances)
                writer.write(drawn.get_image()[:, :, ::-1])
                frames += 1
                num_detections += len(instances)
                progress.update()
    finally:
        video.release()
        writer.release()
    logger.info(
        f"{video_path}: {num_detections} detection(s) with score >= {demo.confidence_threshold} "
        f"in {frames} frame(s)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", required=True, metavar="CONFIG", help="config file or model-zoo name"
    )
    parser.add_argument(
        "--weights",
        help="checkpoint file, URL or sparse_detr://official/<release stem> (default: the config's "
        "MODEL.WEIGHTS / train.init_checkpoint)",
    )
    parser.add_argument("--input", nargs="+", help="images, directories or glob patterns")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--output", required=True, help="directory for the drawn images / video")
    parser.add_argument("--confidence-threshold", type=unit_interval, default=0.5, help="minimum score drawn")
    parser.add_argument("--rho", type=keep_ratio, help="inference keeping ratio (dynamic sparsification)")
    parser.add_argument("--show-tokens", action="store_true", help="also write the refined-token figure")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda")
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides: key=value (LazyConfig) or KEY VALUE"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    usage = f"{Path(__file__).name} --config-file CONFIG [options]"
    check_option_order(args.opts, usage)  # before the other checks: a misplaced option looks absent
    if not args.input and not args.video_input:
        raise SystemExit("give --input and/or --video-input")
    inputs = {"--config-file": args.config_file, "--weights": args.weights}
    refuse_overwriting_inputs({"--output's log.txt": Path(args.output) / "log.txt"}, inputs)
    setup_tool_logger(args.output)
    cfg = load_tool_config(args.config_file, args.opts, args.weights, args.device, usage)
    label = config_label(args.config_file)
    demo = Demo(cfg, args.confidence_threshold, args.rho, label)
    output = Path(args.output)
    if args.input:
        written, skipped = run_images(demo, args.input, output, args.show_tokens)
        print(f"wrote {len(written)} file(s) to {output}")
        if skipped:
            print(f"skipped {len(skipped)} unreadable or unusable input(s): {', '.join(skipped)}")
        if not written:
            return 1
    if args.video_input:
        print(f"wrote {run_video(demo, args.video_input, output)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, None, "demo.py"))
