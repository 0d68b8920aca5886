"""Where the operations of the exported graph come from: the share written in ``sparse_detr/export/``.

``torch.export.export`` of :class:`~sparse_detr.export.DeployableSparseDETR` records a stack trace on every
graph node. Each operation (``call_function`` node) is attributed to its innermost frame inside the
``sparse_detr`` package (``sparse_detr/modeling/...``, ``sparse_detr/layers/...``, ``sparse_detr/export/``);
the script prints the count per file and the share of ``sparse_detr/export/``: the part of the deployed
graph that is not the model's own code. (torch.export keeps only ``forward`` frames in its stack traces;
every function of the package is registered as a stack-trace anchor while exporting, so that a helper such
as ``grid_proposals`` is its own frame and not its caller's ``forward``; ``--forward-frames`` counts on
torch.export's own traces instead.)

    .venv/bin/python benchmarks/export_frames.py [--tiny] [--rho 0.1 | --dense] [--image-size H W]
        [--forward-frames]

The model is the paper's R-50 config (``configs/common/models/sparse_detr_r50.py``, random weights;
``--tiny``: one encoder and one decoder layer, 30 queries), exported as ``export_torch_program`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import types
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "common" / "models" / "sparse_detr_r50.py"
_FRAME = re.compile(r'File "([^"]+)", line \d+')


def innermost_project_frame(stack_trace: str | None, package: Path) -> str | None:
    """The innermost frame of ``stack_trace`` in a file under ``package``, as its path relative to the
    package's parent (``sparse_detr/modeling/tokens.py``); None when no frame is in the package."""
    inner = None
    for path in _FRAME.findall(stack_trace or ""):
        resolved = Path(path).resolve()
        if resolved.is_relative_to(package):
            inner = resolved.relative_to(package.parent).as_posix()
    return inner


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


@contextlib.contextmanager
def record_project_frames(package: Path):
    """While active, the stack traces torch.export records keep every frame of a function of ``package``
    (its imported modules), not only ``forward`` frames."""
    from torch.fx import proxy

    anchors = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and Path(path).resolve().is_relative_to(package):
            code = compile(Path(path).read_text(), path, "exec")
            anchors |= {(c.co_filename, c.co_name) for c in _code_objects(code)}
    added = anchors - proxy._STACK_TRACE_ANCHORS
    proxy._STACK_TRACE_ANCHORS.update(added)
    try:
        yield
    finally:
        proxy._STACK_TRACE_ANCHORS.difference_update(added)


def frame_counts(program, package: Path) -> Counter:
    """Operations of ``program``'s graph per innermost project file (None: no frame in the package)."""
    return Counter(
        innermost_project_frame(node.meta.get("stack_trace"), package)
        for node in program.graph.nodes
        if node.op == "call_function"
    )


def export_share(counts: Counter, directory: str = "sparse_detr/export/") -> float:
    """Share of the operations attributed to the package whose innermost frame lies in ``directory``."""
    attributed = {path: n for path, n in counts.items() if path is not None}
    total = sum(attributed.values())
    return sum(n for path, n in attributed.items() if path.startswith(directory)) / max(total, 1)


def build_model(keep_ratio: float | None, tiny: bool):
    import torch
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    cfg = LazyConfig.load(str(BASE_CONFIG))
    if keep_ratio is None:
        cfg.model.token_scorer = None
    else:
        cfg.model.token_scorer.keep_ratio = keep_ratio
    if tiny:
        cfg.model.encoder.num_layers = cfg.model.decoder.num_layers = 1
        cfg.model.query_init.num_queries = 30
    return instantiate(cfg.model).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="one encoder / decoder layer, 30 queries")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--rho", type=float, default=0.1, help="keep ratio of the DAM scorer")
    group.add_argument("--dense", action="store_true", help="no token scorer")
    parser.add_argument("--image-size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    parser.add_argument(
        "--forward-frames", action="store_true", help="attribute on torch.export's forward-only stack traces"
    )
    args = parser.parse_args(argv)

    import sparse_detr
    from sparse_detr.export.exporters import export_torch_program

    package = Path(sparse_detr.__file__).resolve().parent
    model = build_model(None if args.dense else args.rho, args.tiny)
    with contextlib.nullcontext() if args.forward_frames else record_project_frames(package):
        program = export_torch_program(model, image_size=tuple(args.image_size))
    counts = frame_counts(program, package)
    for path, n in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"{n:6d}  {path or '(no sparse_detr frame)'}")
    share = export_share(counts)
    print(f"operations: {sum(counts.values())}; innermost frame in sparse_detr/export/: {share:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
