"""Unique output names for the files an app writes per input image (demo drawings, token figures)."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePath

__all__ = ["unique_output_stems"]


def unique_output_stems(files: Sequence[str], companions: Sequence[str] = ("",)) -> dict[str, PurePath]:
    """Map each input file to an output stem (a relative path without extension) that no other input shares.

    The stem keeps the input's directory relative to the inputs' common directory and its name without
    extension (``photos/a/cat.jpg`` -> ``a/cat``). Inputs that would still share a stem get their extension
    in it (``a/photo.jpg``, ``a/photo.png`` -> ``a/photo_jpg``, ``a/photo_png``); anything left equal
    (case-insensitively, with every ``companions`` suffix an app appends, e.g. ``"_tokens"``) gets
    ``_2``, ``_3``, ... So writing ``OUTPUT / (stem + companion + ".png")`` never overwrites another input's
    output.

    Args:
        files: input paths, in order (repeats map to the same stem).
        companions: suffixes appended to a stem for the files written per input ("" = the stem itself).
    """
    files = list(dict.fromkeys(files))
    if not files:
        return {}
    absolute = [Path(os.path.abspath(f)) for f in files]
    common = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    relative = {f: p.parent.relative_to(common) / p.stem for f, p in zip(files, absolute)}
    counts = Counter(str(stem).lower() for stem in relative.values())
    taken: set[str] = set()
    stems: dict[str, PurePath] = {}
    for f, path in zip(files, absolute):
        stem = relative[f]
        if counts[str(stem).lower()] > 1 and path.suffix:
            stem = stem.with_name(f"{stem.name}_{path.suffix.lstrip('.')}")
        candidate, number = stem, 1
        while any(f"{candidate}{c}".lower() in taken for c in companions):
            number += 1
            candidate = stem.with_name(f"{stem.name}_{number}")
        taken.update(f"{candidate}{c}".lower() for c in companions)
        stems[f] = PurePath(candidate)
    return stems
