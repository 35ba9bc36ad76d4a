"""The device a run uses: its name and memory, and measuring what a piece of work costs on it.

One place for what the demo and the benchmark both need to know about the hardware: `l2p.demo` sizes its
memory check and labels its pages with it, `l2p.bench` names its files and measures its cases with it.

Memory is what the device holds:
- CUDA: bytes allocated by tensors (`torch.cuda.memory_allocated`; the caching allocator's spare blocks are not
  counted), its peak from `torch.cuda.max_memory_allocated`;
- CPU: the process's resident set size (RSS, from psutil), which includes everything the process holds: weights,
  activations, the Python heap, a web server.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import threading
import time
from dataclasses import dataclass

import psutil
import torch

SAMPLE_INTERVAL_S = 0.005


# -- facts ------------------------------------------------------------------------------------------------
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: str | torch.device | None = None) -> str:
    """A short slug for file names: "cpu" or the GPU's name (e.g. "nvidia-h100-80gb-hbm3")."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        return "cuda"
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return device.type


def device_label(device: torch.device) -> str:
    """How a page names the device: the GPU's name, or "CPU (n threads)"."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    return str(device)


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ...") from /proc/cpuinfo, else what platform knows."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_bf16_units(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX or AVX512-BF16 in /proc/cpuinfo's flags). Without them
    bf16 is emulated: a toy transfer step measured 15x slower than fp32, and fp32 matmuls run far slower too,
    so the split of a generation between DiT and head differs between such machines (docs/results.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            return True  # not Linux: nothing to go on
    return bool(set(cpuinfo.split()) & {"amx_bf16", "avx512_bf16"})


def device_description(device) -> str:
    """A benchmark's description of the device: the GPU and its memory, or the CPU (model, whether it has bf16
    units), threads and cores."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA (not available on this machine)"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    units = "with" if cpu_has_bf16_units() else "without"
    return f"{cpu_model()} CPU {units} bf16 units, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


def device_memory_bytes(device: str | torch.device | None = None) -> int | None:
    """The memory a run may use: a GPU's total memory, or the RAM available now on a CPU."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return psutil.virtual_memory().available


# -- memory -----------------------------------------------------------------------------------------------
def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    """This process's resident set size."""
    return psutil.Process().memory_info().rss


def memory_in_use(device) -> int:
    """What the device holds now: CUDA's allocated bytes, or this process's RSS on a CPU."""
    device = torch.device(device)
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else rss_bytes()


def reset_peak_memory(device) -> None:
    """Start a new peak: CUDA's max-allocated counter, or the process' RSS high-water mark (Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS


def peak_memory(device) -> int:
    """The peak since `reset_peak_memory`: CUDA's max allocated, or the RSS high-water mark (VmHWM).

    psutil has no peak RSS, and `getrusage`'s ru_maxrss is no substitute in a benchmark's fresh subprocess: there
    it starts from the parent's peak (a child of a 600 MiB Python process reports 600 MiB before doing anything).
    So on Linux the kernel's resettable VmHWM is read; elsewhere the lifetime peak.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kilobytes elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def release_memory() -> None:
    """Collect unreachable objects (pipelines and failed runs hold reference cycles) and empty the device cache."""
    from accelerate.utils.memory import clear_device_cache

    clear_device_cache(garbage_collection=True)


def weight_bytes(*modules) -> int:
    """Bytes of the parameters and buffers of the given modules (each counted once, even if shared)."""
    seen, total = set(), 0
    for module in modules:
        if module is None:
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


# -- measuring a stage ------------------------------------------------------------------------------------
@dataclass
class StageCost:
    """One stage of one pipeline. `seconds` is wall time; memory in bytes (see the module docstring)."""

    pipeline: str
    stage: str
    seconds: float = 0.0
    start_bytes: int = 0
    peak_bytes: int = 0

    @property
    def working_bytes(self) -> int:
        """The memory the stage needed on top of what was in use when it began."""
        return max(0, self.peak_bytes - self.start_bytes)


class _RssSampler:
    """Samples this process's RSS on a background thread until stopped; `peak` is the largest sample."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S):
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


@contextlib.contextmanager
def measure(pipeline: str, stage: str, device: torch.device | str):
    """`with measure("source", "VAE decode", device) as cost: ...` fills `cost` (a StageCost) on exit.

    On a CPU the peak is the RSS sampled every few milliseconds by a background thread.
    """
    device = torch.device(device)
    cost = StageCost(pipeline, stage)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cost.start_bytes = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        try:
            yield cost
        finally:
            synchronize(device)
            cost.seconds = time.perf_counter() - start
            cost.peak_bytes = torch.cuda.max_memory_allocated(device)
        return
    sampler = _RssSampler()
    cost.start_bytes = sampler.peak
    start = time.perf_counter()
    try:
        with sampler:
            yield cost
    finally:
        cost.seconds = time.perf_counter() - start
        cost.peak_bytes = sampler.peak
