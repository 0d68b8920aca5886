"""Loads the command-line scripts (projects/SparseDETR, benchmarks) as modules for the tests."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = str(ROOT / "tests/configs/tiny_shapes.py")


def load_script(name: str, folder: str = "projects/SparseDETR"):
    """Import ``<folder>/<name>.py`` (a script, not a package module) and return it.

    As when the script runs, its folder is on ``sys.path`` (for its imports of its sibling modules).
    """
    path = ROOT / folder / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"sparse_detr_project_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
