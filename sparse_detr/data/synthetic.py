"""A deterministic synthetic COCO-format detection set of coloured shapes ("shapes").

Every image is drawn from its own random generator seeded with ``(spec.seed, image_index)``, so a set is
identical on every machine and any image can be re-drawn alone. Images hold 0..``max_objects`` filled shapes
(circle, square, triangle, star, cross) of varied size, aspect, rotation and colour on a textured background;
later shapes may occlude earlier ones, and the boxes are the tight boxes of the *visible* pixels (like COCO).

Files (under ``$DETECTRON2_DATASETS``, default ``./datasets``)::

    shapes/<split>/000000.jpg ...
    shapes/annotations/instances_<split>.json       COCO instances json (category ids 1..5)
    shapes/annotations/instances_<split>.spec.json  the generation parameters; a set whose spec matches is
                                                    not generated again

Registered datasets (Detectron2 ``DatasetCatalog``/``MetadataCatalog``, evaluator_type ``coco``); the images
are generated on first use:

    shapes_train (3000 images), shapes_val (300), shapes_tiny_train (16, 96 px), shapes_tiny_val (8, 96 px)

Command line: ``python tools/generate_shapes.py [--root DIR] [NAME ...]`` generates the named sets.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from functools import partial

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from iopath.common.file_io import file_lock
from PIL import Image, ImageDraw

__all__ = [
    "SHAPE_CLASSES",
    "SHAPES_PRESETS",
    "ShapesSpec",
    "default_datasets_root",
    "ensure_shapes_dataset",
    "register_shapes_dataset",
    "render_shapes_image",
]

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross")
# Bumped whenever the drawing code changes, so that stale sets on disk are regenerated.
GENERATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ShapesSpec:
    """Parameters of one generated split (all sizes in pixels)."""

    split: str
    num_images: int
    seed: int
    image_size: int = 256
    max_objects: int = 6
    empty_image_fraction: float = 0.05
    min_object_size: int = 24
    max_object_size: int = 112
    min_visible_fraction: float = 0.5
    noise_std: float = 6.0

    def __post_init__(self):
        if self.num_images < 1:
            raise ValueError(f"ShapesSpec.num_images must be >= 1, got {self.num_images}")
        if not 4 <= self.min_object_size <= self.max_object_size <= self.image_size:
            raise ValueError(
                "ShapesSpec needs 4 <= min_object_size <= max_object_size <= image_size, got "
                f"{self.min_object_size}, {self.max_object_size}, {self.image_size}"
            )
        if not 0.0 <= self.empty_image_fraction <= 1.0:
            raise ValueError(
                f"ShapesSpec.empty_image_fraction must be in [0, 1], got {self.empty_image_fraction}"
            )

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION, "classes": SHAPE_CLASSES}


SHAPES_PRESETS: dict[str, ShapesSpec] = {
    "shapes_train": ShapesSpec(split="train", num_images=3000, seed=0),
    "shapes_val": ShapesSpec(split="val", num_images=300, seed=1),
    "shapes_tiny_train": ShapesSpec(
        split="tiny_train", num_images=16, seed=2, image_size=96, max_objects=3, min_object_size=16,
        max_object_size=48,
    ),
    "shapes_tiny_val": ShapesSpec(
        split="tiny_val", num_images=8, seed=3, image_size=96, max_objects=3, min_object_size=16,
        max_object_size=48,
    ),
}


def default_datasets_root() -> str:
    """The Detectron2 datasets root: ``$DETECTRON2_DATASETS`` or ``./datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


# ----------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------
def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (K, 2) of a shape inscribed in the square [-1, 1]^2 (circle: a 64-gon)."""
    if shape == "circle":
        angles = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if shape == "triangle":
        return np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if shape == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if shape == "cross":
        t = 0.34  # half thickness of an arm
        return np.array(
            [[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t],
             [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]],
            dtype=np.float64,
        )
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPE_CLASSES}")


def _textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float background: a colour gradient plus blotches, stripes or a checkerboard."""
    base = rng.uniform(40, 215, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    image = base + rng.uniform(-40, 40, size=3) * ramp
    kind = rng.integers(3)
    if kind == 0:  # low-frequency blotches: a coarse random grid, bilinearly upsampled
        cells = int(rng.integers(3, 8))
        grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
        blotches = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR))
        image = image + rng.uniform(10, 30) * blotches[..., None]
    elif kind == 1:  # stripes
        period = rng.uniform(6, 24)
        phase = rng.uniform(0, 2 * math.pi)
        stripes = np.sin(2 * math.pi * (np.cos(angle) * xx - np.sin(angle) * yy) * size / period + phase)
        image = image + rng.uniform(8, 20) * stripes[..., None]
    else:  # checkerboard
        cell = int(rng.integers(8, 32))
        checker = ((np.arange(size)[:, None] // cell + np.arange(size)[None, :] // cell) % 2) * 2.0 - 1.0
        image = image + rng.uniform(6, 16) * checker[..., None]
    return image


def _contrasting_colour(rng: np.random.Generator, background_mean: np.ndarray, min_distance: float = 110.0):
    """An RGB colour at least ``min_distance`` (Euclidean, 0..255 scale) from the local background colour."""
    for _ in range(100):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - background_mean) >= min_distance:
            return colour
    return 255.0 - background_mean  # the complement is always far enough


def _shape_mask(rng: np.random.Generator, shape: str, size: int, spec: ShapesSpec) -> np.ndarray:
    """A (size, size) bool mask of one randomly sized, stretched, rotated and placed shape."""
    extent = rng.uniform(spec.min_object_size, spec.max_object_size)
    aspect = math.exp(rng.uniform(-0.25, 0.25))
    half_w, half_h = extent * math.sqrt(aspect) / 2, extent / math.sqrt(aspect) / 2
    angle = rng.uniform(-math.pi / 9, math.pi / 9) if shape != "circle" else 0.0
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = (_unit_polygon(shape) * [half_w, half_h]) @ rotation.T
    span = points.max(axis=0) - points.min(axis=0)
    low = -points.min(axis=0)
    high = size - points.max(axis=0)
    centre = [rng.uniform(low[i], max(low[i], high[i])) if span[i] < size else size / 2 for i in range(2)]
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in (points + centre)], fill=1)
    return np.asarray(canvas, dtype=bool)


def render_shapes_image(spec: ShapesSpec, index: int) -> tuple[np.ndarray, list[dict]]:
    """Draw image ``index`` of a split.

    Returns:
        image: (H, W, 3) uint8 RGB array, H = W = ``spec.image_size``.
        annotations: COCO annotation dicts without ids: ``bbox`` [x, y, w, h] of the visible pixels,
            ``area`` (visible pixels), ``category_id`` (1-based index into ``SHAPE_CLASSES``), ``iscrowd`` 0.
    """
    rng = np.random.default_rng([spec.seed, index])
    size = spec.image_size
    image = _textured_background(rng, size)
    if rng.uniform() < spec.empty_image_fraction:
        num_objects = 0
    else:
        num_objects = int(rng.integers(1, spec.max_objects + 1))

    visible_masks: list[np.ndarray] = []
    full_areas: list[int] = []
    labels: list[int] = []
    for _ in range(num_objects):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        for _attempt in range(20):
            mask = _shape_mask(rng, SHAPE_CLASSES[label], size, spec)
            if mask.sum() < 16:
                continue
            others_visible = [(v & ~mask).sum() / a for v, a in zip(visible_masks, full_areas)]
            if all(f >= spec.min_visible_fraction for f in others_visible):
                break
        else:
            continue  # no placement keeps the earlier shapes visible enough: draw one shape fewer
        colour = _contrasting_colour(rng, image[mask].mean(axis=0))
        image[mask] = colour
        visible_masks = [v & ~mask for v in visible_masks]
        visible_masks.append(mask)
        full_areas.append(int(mask.sum()))
        labels.append(label)

    image = image + rng.normal(0.0, spec.noise_std, size=image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    annotations = []
    for mask, label in zip(visible_masks, labels):
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        annotations.append(
            {
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float(mask.sum()),
                "category_id": label + 1,
                "iscrowd": 0,
            }
        )
    return image, annotations


# ----------------------------------------------------------------------------------------------------------
# Writing and registration
# ----------------------------------------------------------------------------------------------------------
def _paths(root: str, spec: ShapesSpec) -> tuple[str, str, str]:
    base = os.path.join(root, "shapes")
    json_file = os.path.join(base, "annotations", f"instances_{spec.split}.json")
    return json_file, os.path.join(base, spec.split), json_file[: -len(".json")] + ".spec.json"


def _is_complete(root: str, spec: ShapesSpec) -> bool:
    json_file, image_root, spec_file = _paths(root, spec)
    if not (os.path.isfile(json_file) and os.path.isfile(spec_file)):
        return False
    with open(spec_file) as f:
        if json.load(f) != json.loads(json.dumps(spec.as_dict())):
            return False
    return all(os.path.isfile(os.path.join(image_root, f"{i:06d}.jpg")) for i in range(spec.num_images))


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def ensure_shapes_dataset(spec: ShapesSpec, root: str | None = None) -> tuple[str, str]:
    """Generate a split unless an identical one (same spec, all files present) exists.

    Returns:
        (json_file, image_root)
    """
    root = default_datasets_root() if root is None else root
    json_file, image_root, spec_file = _paths(root, spec)
    if _is_complete(root, spec):
        return json_file, image_root
    with file_lock(os.path.join(root, "shapes", f".{spec.split}")):  # several processes may ask at once
        if _is_complete(root, spec):  # another process generated it while we waited
            return json_file, image_root
        start = time.perf_counter()
        shutil.rmtree(image_root, ignore_errors=True)
        os.makedirs(image_root)
        os.makedirs(os.path.dirname(json_file), exist_ok=True)
        images, annotations = [], []
        for index in range(spec.num_images):
            pixels, image_annotations = render_shapes_image(spec, index)
            file_name = f"{index:06d}.jpg"
            Image.fromarray(pixels).save(os.path.join(image_root, file_name), quality=92)
            images.append({"id": index + 1, "file_name": file_name, "height": spec.image_size,
                           "width": spec.image_size})
            for annotation in image_annotations:
                annotations.append({**annotation, "id": len(annotations) + 1, "image_id": index + 1})
        coco = {
            "info": {"description": f"Sparse DETR synthetic shapes, split {spec.split}", "version": "1"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                           for i, name in enumerate(SHAPE_CLASSES)],
        }
        _write_atomically(json_file, json.dumps(coco))
        _write_atomically(spec_file, json.dumps(spec.as_dict(), indent=1))
        logger.info(
            "Generated %d synthetic images (%d boxes) in %s in %.1f s",
            spec.num_images, len(annotations), image_root, time.perf_counter() - start,
        )
    return json_file, image_root


def _load_shapes(name: str, spec: ShapesSpec, root: str) -> list[dict]:
    json_file, image_root = ensure_shapes_dataset(spec, root)
    return load_coco_json(json_file, image_root, name)


def register_shapes_dataset(name: str, spec: ShapesSpec, root: str | None = None) -> None:
    """Register ``name`` in Detectron2's catalogs; the first ``DatasetCatalog.get`` generates the images."""
    root = default_datasets_root() if root is None else root
    json_file, image_root, _ = _paths(root, spec)
    DatasetCatalog.register(name, partial(_load_shapes, name, spec, root))
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(SHAPE_CLASSES),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPE_CLASSES))},
    )


def register_all_shapes(root: str | None = None) -> None:
    for name, spec in SHAPES_PRESETS.items():
        if name not in DatasetCatalog.list():
            register_shapes_dataset(name, spec, root)


register_all_shapes()
