#!/usr/bin/env python
"""Convert an official Sparse DETR / Deformable DETR checkpoint (kakaobrain/sparse-detr) for this project.

    python projects/SparseDETR/convert_official.py --input sparse_detr_r50_10.pth --output-dir out/
    # -> out/model_final.pth (Detectron2 checkpoint) and out/config.yaml (LazyConfig of that architecture)

The architecture comes from the checkpoint's own ``args``. By default the model keeps the official 91
logits (label = COCO category id); ``--coco-contiguous`` keeps the 80 COCO classes in Detectron2's
contiguous order so ``COCOEvaluator`` on ``coco_2017_val`` scores it directly. ``sparse_detr://official/<stem>``
does the download and this conversion (``--coco-contiguous``) by itself, once.
"""

import argparse
import sys

from sparse_detr.checkpoint import convert_official_checkpoint
from sparse_detr.utils.cli import run_tool, setup_tool_logger
from sparse_detr.utils.files import refuse_overwriting_inputs


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="official checkpoint (.pth with 'model' and 'args')")
    parser.add_argument("--output-dir", required=True, help="directory for model_final.pth and config.yaml")
    parser.add_argument(
        "--coco-contiguous",
        action="store_true",
        help="keep the 80 COCO classes in Detectron2's contiguous order",
    )
    args = parser.parse_args(argv)
    log = f"{args.output_dir}/log.txt"
    refuse_overwriting_inputs({"--output-dir's log.txt": log}, {"--input": args.input})
    setup_tool_logger(args.output_dir)  # console and OUTPUT_DIR/log.txt
    summary = convert_official_checkpoint(args.input, args.output_dir, coco_contiguous=args.coco_contiguous)
    print(f"wrote {summary['weights']} ({summary['num_tensors']} tensors, {summary['label_space']} labels)")
    print(f"wrote {summary['config']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the tool: user errors in one line (exit 2), Ctrl-C in one (exit 130), tracebacks with --debug."""
    return run_tool(run, argv, "convert_official.py")


if __name__ == "__main__":
    sys.exit(main())
