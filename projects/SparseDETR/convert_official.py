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

from detectron2.utils.logger import setup_logger

from sparse_detr.checkpoint import convert_official_checkpoint


def main(argv=None) -> int:
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
    setup_logger(args.output_dir, name="sparse_detr")  # console and OUTPUT_DIR/log.txt
    summary = convert_official_checkpoint(args.input, args.output_dir, coco_contiguous=args.coco_contiguous)
    print(f"wrote {summary['weights']} ({summary['num_tensors']} tensors, {summary['label_space']} labels)")
    print(f"wrote {summary['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
