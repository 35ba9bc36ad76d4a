"""Which mixed precision a run computes in: `auto` takes bf16 where the hardware multiplies it, fp32 elsewhere.

bf16 autocast pays on GPUs and on CPUs with bf16 matrix units (AMX or AVX512-BF16: a width-256 toy DiT step 1.6x
faster than fp32); on a CPU without them it is emulated and a toy transfer step measured 15x *slower* than fp32
(docs/results.md). The toy configs say `auto` so that the same rebuild command is fast on either kind of CPU.
"""

from __future__ import annotations

import torch

from l2p.device import cpu_has_bf16_units

MIXED_PRECISIONS = ("no", "bf16", "fp16", "auto")


def resolve_mixed_precision(value: str, device_type: str, cpuinfo: str | None = None) -> str:
    """The precision a run on `device_type` ("cpu" or "cuda") uses for the configured `value`."""
    if value not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {value!r}")
    if value != "auto":
        return value
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if device_type == "cpu":
        return "bf16" if cpu_has_bf16_units(cpuinfo) else "no"
    return "no"
