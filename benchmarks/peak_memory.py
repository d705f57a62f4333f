"""Time and peak resident memory of one call, shared by the benchmarks (Linux: reads ``/proc/self``).

Peak RSS counts torch's own allocations, which tracemalloc cannot see; resetting ``VmHWM`` through
``clear_refs`` before each call makes the peak that call's alone.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

STATUS = Path("/proc/self/status")


def _rss_kib(field: str) -> int:
    line = next(l for l in STATUS.read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])


def measure(fn):
    """(result, seconds, extra peak RSS in MiB) of ``fn()``."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    base = _rss_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, (_rss_kib("VmHWM") - base) / 1024
