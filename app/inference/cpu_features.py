"""What this CPU can do, as far as choosing a model file depends on it.

ONNX Runtime's int8 convolutions multiply unsigned activations by signed weights. With VNNI
(AVX-512 VNNI or AVX-VNNI) one instruction does it in 32-bit sums; without it, x86 kernels
add pairs of products in 16 bits, which can saturate, so an int8 model can compute something
other than what its accuracy gate measured (and it gained only 1.10x on an AVX2 CPU).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports for this CPU (empty where /proc/cpuinfo
    is absent, on macOS say)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def runs_int8_exactly(flags: frozenset[str]) -> bool:
    """Whether int8 convolutions run here as the accuracy gate measured them: with VNNI."""
    return bool(flags & VNNI_FLAGS)
