"""Generates synthetic shapes sets: ``python tools/generate_shapes.py [--root DIR] [NAME ...]``."""
import argparse
import logging
import time

from sparse_detr.data.synthetic import SHAPES_PRESETS, ensure_shapes_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic shapes detection sets.")
    parser.add_argument("names", nargs="*", default=["shapes_train", "shapes_val"],
                        help=f"sets to generate, among {sorted(SHAPES_PRESETS)}")
    parser.add_argument("--root", default=None,
                        help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.names:
        if name not in SHAPES_PRESETS:
            parser.error(f"unknown set {name!r}; known: {sorted(SHAPES_PRESETS)}")
        start = time.perf_counter()
        json_file, image_root = ensure_shapes_dataset(SHAPES_PRESETS[name], args.root)
        print(f"{name}: {SHAPES_PRESETS[name].num_images} images in {image_root}, annotations {json_file} "
              f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
