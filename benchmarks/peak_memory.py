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
    result, seconds, _, mib = measure_cpu(fn)
    return result, seconds, mib


def measure_cpu(fn):
    """(result, seconds, CPU seconds of this process, extra peak RSS in MiB) of ``fn()``.

    On a shared machine other processes' load stretches wall time far more than this process's CPU time, so a
    ratio of CPU times is the steadier comparison (with ``OMP_NUM_THREADS=1`` the two agree on an idle machine).
    """
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    base = _rss_kib("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return result, seconds, cpu, (_rss_kib("VmHWM") - base) / 1024
