"""Environment report: Detectron2's ``collect_env`` table followed by the state of ``sparse_detr``.

    python -m sparse_detr.collect_env

The ``sparse_detr`` part says where the package was imported from, where its model-zoo configs are, and
how the extension ``sparse_detr._C`` was built: built or not (with the import error), CPU only or with the
CUDA kernels, the CUDA architectures it was compiled for, and the torch it was compiled against (an
extension built against another torch than the running one must be rebuilt).
"""

from __future__ import annotations

import torch
from tabulate import tabulate

__all__ = ["collect_env_info", "sparse_detr_env_rows"]


def sparse_detr_env_rows() -> list[tuple[str, str]]:
    """(name, value) rows describing the installed ``sparse_detr`` and its compiled extension."""
    import sparse_detr
    from sparse_detr._ext import extension_info
    from sparse_detr.model_zoo.model_zoo import config_root

    try:
        configs = str(config_root())
    except FileNotFoundError as error:
        configs = f"missing ({error})"
    info = extension_info()
    rows = [
        ("sparse_detr", f"{sparse_detr.__version__} @ {sparse_detr.__path__[0]}"),
        ("sparse_detr model-zoo configs", configs),
        ("sparse_detr._C", "built" if info["built"] else f"not built: {info['import_error']}"),
    ]
    if info["built"]:
        compiled_with = info["compiled_with_torch"]
        running = torch.__version__
        mismatch = "" if compiled_with == running else f" (running torch {running}: rebuild it)"
        rows += [
            ("sparse_detr._C kernels", "CPU + CUDA" if info["with_cuda"] else "CPU only"),
            ("sparse_detr._C CUDA arch list", info["cuda_arch_list"] if info["with_cuda"] else "-"),
            ("sparse_detr._C built against torch", compiled_with + mismatch),
        ]
    return rows


def collect_env_info() -> str:
    """Detectron2's environment table plus the ``sparse_detr`` rows, as printable text."""
    from detectron2.utils.collect_env import collect_env_info as detectron2_env_info

    return detectron2_env_info() + tabulate(sparse_detr_env_rows()) + "\n"


if __name__ == "__main__":
    print(collect_env_info())
