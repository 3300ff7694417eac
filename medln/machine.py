"""The machine a measurement ran on, and its memory: one helper each, used by training,
compare, bench and the model cache.

- peak_memory_gb(): GPU peak allocation on CUDA, else the process's peak resident memory.
- reset_peak(): start a new peak window (CUDA stats; Linux VmHWM via /proc/self/clear_refs).
- free_memory(): give freed models back (GC, CUDA cache, glibc heap pages).
- machine_info(): platform, CPU count, library versions, GPU name and memory.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
from pathlib import Path


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def reset_peak() -> bool:
    """Start a new peak window. False when the CPU peak cannot be reset (non-Linux): then
    peak_memory_gb() is the high-water mark of the process's whole life."""
    if _cuda():
        import torch

        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        # Linux resets the VmHWM mark when "5" is written here (proc(5), clear_refs).
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_gb() -> float:
    """torch.cuda.max_memory_allocated on a GPU; else the process's peak resident memory
    (VmHWM, which reset_peak() can reset; ru_maxrss where /proc is absent)."""
    if _cuda():
        import torch

        return round(torch.cuda.max_memory_allocated() / 1e9, 4)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 4)  # kB -> GB
    except (OSError, ValueError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 4)  # Linux: KiB -> GB


def free_memory() -> None:
    """Collect, empty the CUDA cache, and return glibc's freed heap pages to the system (so
    the next model's peak resident memory is its own)."""
    gc.collect()
    try:
        if _cuda():
            import torch

            torch.cuda.empty_cache()
    except Exception:  # torch absent or broken: nothing of ours to free there
        pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def machine_info() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    # threads: a run under OMP_NUM_THREADS=1 (sweeps side by side) steps slower than the CPU can
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    if _cuda():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1), gpus=torch.cuda.device_count())
    else:
        info["gpu"] = None
    return info
