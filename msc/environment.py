"""The process environment the command-line programs run in: offline, without telemetry, with a memory allocator that
keeps what it frees.

Set by each program's ``main()`` (never on import, so importing the library changes nothing): nothing is downloaded
at run time, the models load from local folders. A variable the user has set already is kept.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def go_offline() -> None:
    """Set :data:`OFFLINE`'s variables where unset. ``huggingface_hub`` reads its own when imported, so when it has been
    imported already (by gradio) its module constants are set to match."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].upper() in ("1", "ON", "YES", "TRUE")
        hub.HF_HUB_DISABLE_TELEMETRY = os.environ["HF_HUB_DISABLE_TELEMETRY"].upper() in ("1", "ON", "YES", "TRUE")


# glibc's malloc gives every block over 128 KiB (a threshold it raises only as it sees such blocks freed) straight to
# the kernel and back (mmap / munmap), and returns the top of its heap to the kernel once 128 KiB lies free there. A
# forward of several frames or a training step, whose activations are such blocks, then page-faults tens of MB afresh
# on every call: 16-27 thousand faults for an 8-frame forward of the bundled model, a third of its time in the kernel
# (bench.speed). KEEP_FREED keeps blocks up to 32 MiB (the most glibc accepts) in the heap and up to 1 GiB of its
# freed top in the process, so that the next call reuses pages already mapped. {mallopt parameter: bytes}
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30}
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's own way to set them, if a user did


def keep_freed_memory() -> bool:
    """Apply :data:`KEEP_FREED` through glibc's ``mallopt``. ``False`` (nothing changed) where the C library is not
    glibc or the user set glibc's own variables (:data:`MALLOC_VARIABLES`)."""
    if any(name in os.environ for name in MALLOC_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's C library (Windows has no such handle: TypeError)
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in KEEP_FREED.items())


@functools.lru_cache(maxsize=None)  # asked on every model call of a bf16 sampler; the hardware does not change
def bf16_native(device_type: str = "cpu") -> bool:
    """Whether ``device_type``'s processor computes bfloat16 matrix multiplies in hardware: on a CPU, AVX512-BF16 or AMX
    (elsewhere PyTorch emulates them, several times slower than float32); a CUDA GPU that supports bf16."""
    if device_type == "cuda":
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    import torch.cpu

    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)
