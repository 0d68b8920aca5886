"""The backbone's compute precision: a reduced one only where the device runs it natively.

A bfloat16 backbone halves the time of its convolutions on a CPU with bfloat16 units (AVX512-BF16, AMX);
without them oneDNN emulates bfloat16 through float32 and the same backbone runs ~3x *slower*. So
``backbone_dtype`` is a request that :func:`resolve_backbone_dtype` grants per device:

* ``"float32"``: always float32;
* ``"auto"``: bfloat16 where the device computes it natively, else float32, silently;
* ``"bfloat16"`` / ``"float16"``: that precision where native, else float32 with a warning that names the
  option and the device's capability.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["BACKBONE_DTYPES", "cpu_capability", "native_reduced_dtypes", "resolve_backbone_dtype"]

BACKBONE_DTYPES = ("float32", "auto", "bfloat16", "float16")
CONFIG_KEY = "MODEL.SPARSE_DETR.BACKBONE_DTYPE (LazyConfig: model.backbone_dtype)"
_REDUCED = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_capability() -> dict[str, object]:
    """What decides native reduced precision on this CPU: ATen's vector ISA (``ATEN_CPU_CAPABILITY`` caps
    it) and the bfloat16 / float16 matrix units the CPU reports."""
    return {
        "isa": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
        "amx_bf16": torch.cpu._is_amx_tile_supported(),
        "amx_fp16": torch.cpu._is_amx_fp16_supported(),
    }


def native_reduced_dtypes(device_type: str) -> tuple[set[torch.dtype], str]:
    """(reduced dtypes the device computes natively, a description of its capability for messages)."""
    if device_type == "cuda":
        native = {torch.float16} | ({torch.bfloat16} if torch.cuda.is_bf16_supported() else set())
        return native, f"CUDA device {torch.cuda.get_device_name()}"
    if device_type != "cpu":
        return set(), f"device type {device_type!r}"
    cap = cpu_capability()
    wide = cap["isa"] == "AVX512"  # the ISA that oneDNN's bfloat16 / float16 kernels need
    native = set()
    if wide and (cap["avx512_bf16"] or cap["amx_bf16"]):
        native.add(torch.bfloat16)
    if wide and cap["amx_fp16"]:
        native.add(torch.float16)
    units = ", ".join(name for name in ("avx512_bf16", "amx_bf16", "amx_fp16") if cap[name]) or "none"
    return native, f"CPU (ATen capability {cap['isa']}, reduced-precision units: {units})"


def resolve_backbone_dtype(name: str, device_type: str) -> torch.dtype:
    """The dtype the backbone runs in on ``device_type`` for the setting ``name`` (see the module doc)."""
    if name == "float32":
        return torch.float32
    native, capability = native_reduced_dtypes(device_type)
    if name == "auto":
        return torch.bfloat16 if torch.bfloat16 in native else torch.float32
    dtype = _REDUCED[name]
    if dtype in native:
        return dtype
    warnings.warn(
        f"{CONFIG_KEY} = {name!r}: this {capability} has no native {name} (emulated, it runs slower than "
        f"float32), so the backbone runs in float32; 'auto' takes bfloat16 only where it is native",
        stacklevel=2,
    )
    return torch.float32
