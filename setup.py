"""Build and install Sparse DETR with its compiled extension ``sparse_detr._C``.

    pip install --no-build-isolation -e .

The C++ CPU kernels are always built. The CUDA kernels are added when a GPU is visible or when
``FORCE_CUDA=1`` (compile without a GPU; ``TORCH_CUDA_ARCH_LIST`` selects the architectures, e.g.
``"9.0"``). ``--no-build-isolation`` makes the build use the installed torch; torch, torchvision and
Detectron2 are deliberately not listed in ``install_requires`` so pip never reinstalls them. The LazyConfig
files of ``configs/`` ship inside the package (``sparse_detr/model_zoo/configs``), so the model zoo works
from any directory after ``pip install .``.
"""

import os
import re
import shutil
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).resolve().parent
CSRC = Path("csrc")


def macro_token(text: str) -> str:
    """A string the C preprocessor can stringify back: separators become '_'."""
    return re.sub(r"[\s;,]+", "_", text.strip()) or "default"


def build_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def make_extension():
    cpp_sources = sorted(str(path) for path in CSRC.rglob("*.cpp"))
    cuda_sources = sorted(str(path) for path in CSRC.rglob("*.cu"))
    define_macros = [("SPARSE_DETR_TORCH_VERSION", macro_token(torch.__version__))]
    cxx_flags = ["-O3", "-fopenmp"]  # the C++ standard comes from torch
    link_flags = ["-fopenmp"]
    if not build_cuda():
        return CppExtension(
            "sparse_detr._C", cpp_sources, include_dirs=[str(ROOT / CSRC)], define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags,
        )
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    define_macros += [("WITH_CUDA", None), ("SPARSE_DETR_CUDA_ARCH_LIST", macro_token(arch_list))]
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr"]
    return CUDAExtension(
        "sparse_detr._C", cpp_sources + cuda_sources, include_dirs=[str(ROOT / CSRC)],
        define_macros=define_macros, extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_flags,
    )


def model_zoo_configs() -> list[str]:
    """Ship ``configs/`` inside the package as ``sparse_detr/model_zoo/configs`` (as Detectron2 does).

    ``configs/`` stays the one copy people edit: the package path is a symlink to it (a copy where
    symlinks are not possible), recreated at every build. Returns the package-data paths, relative to
    ``sparse_detr/model_zoo``.
    """
    source = ROOT / "configs"
    destination = ROOT / "sparse_detr" / "model_zoo" / "configs"
    if source.is_dir():
        if destination.is_symlink():
            destination.unlink()
        elif destination.is_dir():
            shutil.rmtree(destination)
        try:
            destination.symlink_to(Path("..", "..", "configs"), target_is_directory=True)
        except OSError:
            shutil.copytree(source, destination)
    return sorted(
        path.relative_to(destination.parent).as_posix()
        for path in destination.rglob("*")
        if path.suffix in (".py", ".yaml", ".md") and "__pycache__" not in path.parts
    )


# what the package imports; torch, torchvision and Detectron2 are the user's (they are not on PyPI in a
# form pip could pick correctly for every CUDA/CPU setup, and reinstalling them would replace the user's)
INSTALL_REQUIRES = [
    "numpy",
    "Pillow",
    "scipy",
    "timm",
    "fvcore",
    "iopath",
    "omegaconf>=2.1,<2.4",
    "hydra-core",
    "matplotlib",
    "pycocotools",
    "PyYAML",
    "tabulate",
    "tqdm",
]

# deployment (sparse_detr.export, projects/SparseDETR/export.py): pip install "sparse_detr[export]"
EXTRAS_REQUIRE = {"export": ["onnx", "onnxscript", "onnxruntime", "onnxruntime-extensions", "openvino"]}

setup(
    name="sparse_detr",
    version="0.1.0",
    description="Sparse DETR (ICLR 2022) as a Detectron2 plugin, with deformable attention kernels",
    python_requires=">=3.10",
    packages=find_packages(include=["sparse_detr", "sparse_detr.*"]),
    package_data={"sparse_detr.model_zoo": model_zoo_configs()},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension},
    zip_safe=False,
)
