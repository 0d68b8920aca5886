"""How the backbone runs: channels-last weights, and reduced precision only where the device has it natively.

:func:`set_backbone_execution` sets both on a built backbone, in place, when the model is built (the model
graph applies it to ``model.backbone``); the meta-architecture then just calls the backbone.

* ``channels_last``: the backbone's weights in channels-last (NHWC) memory format. oneDNN and cuDNN
  convolutions run NHWC when the weight is channels-last, so the NCHW image needs no conversion, a
  convolutional backbone's maps come out channels-last and the neck's convolutions follow: the same
  function, faster, different rounding.
* ``dtype``: the backbone under ``torch.autocast``, its maps returned as float32 (from the neck on, token
  geometry, sampling locations and boxes keep full precision). A bfloat16 backbone halves the time of its
  convolutions on a CPU with bfloat16 units (AVX512-BF16, AMX); without them oneDNN emulates bfloat16
  through float32 and the same backbone runs ~3x *slower*. So the setting is a request that
  :func:`resolve_backbone_dtype` grants per device, at each call (from the input's device):

  * ``"float32"``: always float32;
  * ``"auto"``: bfloat16 where the device computes it natively, else float32, silently;
  * ``"bfloat16"`` / ``"float16"``: that precision where native, else float32 with a warning that names
    the option and the device's capability.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor, nn

__all__ = [
    "BACKBONE_DTYPES",
    "cpu_capability",
    "native_reduced_dtypes",
    "resolve_backbone_dtype",
    "set_backbone_execution",
]

BACKBONE_DTYPES = ("float32", "auto", "bfloat16", "float16")
CONFIG_KEY = "MODEL.SPARSE_DETR.BACKBONE_DTYPE (LazyConfig: model.backbone.dtype)"
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


class _ReducedPrecisionForward:
    """Mixed into a backbone's class by :func:`set_backbone_execution`: the original forward under
    ``torch.autocast`` in the dtype that ``self.backbone_dtype`` resolves to on the input's device.

    Returns the backbone's ``dict[str, Float[B, C, h, w]]`` maps, in float32.
    """

    backbone_dtype: str

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        dtype = resolve_backbone_dtype(self.backbone_dtype, x.device.type)
        if dtype is torch.float32:
            return super().forward(x)
        with torch.autocast(x.device.type, dtype=dtype):
            features = super().forward(x)
        return {name: feature.float() for name, feature in features.items()}

    def __reduce_ex__(self, protocol):
        # the class is made at run time, so pickle cannot name it: rebuilt from the backbone's own class
        _, _, *state = super().__reduce_ex__(max(protocol, 2))
        return (_new_reduced_precision, (type(self).__bases__[1],), *state)


@functools.cache
def _reduced_precision_class(cls: type) -> type:
    """The subclass of ``cls`` with :class:`_ReducedPrecisionForward` (one per class, so swapped modules of a
    class share it)."""
    name = f"ReducedPrecision{cls.__name__}"
    return type(name, (_ReducedPrecisionForward, cls), {"__module__": __name__, "__qualname__": name})


def _new_reduced_precision(cls: type) -> nn.Module:
    """An empty instance of ``cls``'s reduced-precision subclass (unpickling; the state follows)."""
    return cls.__new__(_reduced_precision_class(cls))


def set_backbone_execution(
    module: nn.Module, channels_last: bool = False, dtype: str = "float32"
) -> nn.Module:
    """Set how a built backbone runs (in place): channels-last weights and its compute precision.

    Args:
        module: a backbone returning ``dict[str, Float[B, C, h, w]]``.
        channels_last: convert its 4-d weights and buffers to channels-last (NHWC) memory format (False:
            leave them as built). ``load_state_dict`` copies into the existing tensors and keeps it.
        dtype: one of :data:`BACKBONE_DTYPES` (see the module doc), stored as ``module.backbone_dtype``.
            Other than "float32", the module's class becomes a cached subclass whose forward runs under
            ``torch.autocast`` and returns float32 maps.

    Parameters, buffers and state_dict names stay as they are. Returns ``module``, so it composes in a
    LazyConfig: ``L(set_backbone_execution)(module=L(ResNet)(...), channels_last=True, dtype="auto")``.
    """
    if dtype not in BACKBONE_DTYPES:
        raise ValueError(f"{CONFIG_KEY} must be one of {BACKBONE_DTYPES}, got {dtype!r}")
    if channels_last:
        module.to(memory_format=torch.channels_last)
    module.backbone_dtype = dtype
    if dtype != "float32" and not isinstance(module, _ReducedPrecisionForward):
        module.__class__ = _reduced_precision_class(type(module))
    return module
