"""Fixtures shared across the test suite."""
import importlib.util
import logging
import os
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.logger import setup_logger

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
REFERENCE_FILE = REFERENCE_DIR / "official_sparse_detr_fixture_a.pt"
# `make test-fast` (pytest -m "not slow") leaves out the tests marked slow one by one and these, whole: the
# exports, the project's command-line tools run end to end, the official-weights downloads (a local server),
# the wheel and the installed-package runs, the training runs and Detectron2's tools in subprocesses
SLOW_PATHS = (
    "export/",
    "model_zoo/test_official_weights.py",
    "projects/test_benchmark_script.py",
    "projects/test_demo_script.py",
    "projects/test_export_script.py",
    "projects/test_own_data_in_tools.py",
    "projects/test_visualize_tokens_script.py",
    "test_packaging.py",
    "test_installed_package_first.py",
    "test_train_net.py",
    "test_detectron2_tools.py",
    "tools/test_gpu_check.py",
)


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).resolve().parent
    for item in items:
        if Path(item.fspath).resolve().relative_to(tests).as_posix().startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)


def require_reference() -> None:
    """Skip the calling test when the official fixture is absent; fail instead in CI (``CI=true``)."""
    if REFERENCE_FILE.is_file():
        return
    message = f"official fixture not found at {REFERENCE_FILE}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: CI runs the official-parity tests (fetch the fixture into {REFERENCE_DIR})")
    pytest.skip(message)


@pytest.fixture(scope="session")
def official():
    """The official Sparse DETR fixture in ``../shared/reference`` (see :func:`require_reference`)."""
    require_reference()
    spec = importlib.util.spec_from_file_location("load_fixture", REFERENCE_DIR / "load_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_official_fixture(REFERENCE_DIR / "official_sparse_detr_fixture_a.pt")


@pytest.fixture(autouse=True)
def _reset_project_logger():
    """Undo the scripts' ``setup_logger(name="sparse_detr")`` after each test.

    Its handlers write to that test's output directory, and it stops propagation, which hides the project's
    records from ``caplog``.
    """
    yield
    logger = logging.getLogger("sparse_detr")
    if logger.handlers or not logger.propagate:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True
        setup_logger.cache_clear()


@pytest.fixture(scope="session")
def stand_in_weights(tmp_path_factory):
    """``make(config_path, overrides=()) -> path`` of a checkpoint standing in for a trained model of that
    LazyConfig (with those overrides).

    The model's class heads are moved off their initial values (predictors refuse untrained heads); the
    detections mean nothing, which is all the tests of the tools' mechanics need.
    """
    directory = tmp_path_factory.mktemp("stand_in_weights")

    def make(config_path: str, overrides: tuple[str, ...] = ()) -> str:
        path = directory / f"{Path(config_path).stem}{len(overrides) and hash(overrides)}.pth"
        if not path.is_file():
            torch.manual_seed(0)
            cfg = LazyConfig.apply_overrides(LazyConfig.load(str(config_path)), list(overrides))
            model = instantiate(cfg.model)
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if "class_head" in name:
                        parameter.add_(torch.randn_like(parameter))
            torch.save({"model": model.state_dict()}, path)
        return str(path)

    return make
