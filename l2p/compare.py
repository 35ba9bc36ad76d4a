"""Measuring and showing a latent-versus-pixel comparison: per-stage wall time and peak memory, model weight
sizes, and 1:1 crops of the same region of two images.

Peak memory is what the device holds at the worst moment of a stage:
- CUDA: `torch.cuda.max_memory_allocated` (tensors only; the caching allocator's spare blocks are not counted);
- CPU: the process's resident set size (RSS), sampled every few milliseconds by a background thread (it
  includes everything the process holds: weights, activations, the Python heap, the web server).
Each stage also records what was in use when it started, so "working memory" (peak minus start) is the
memory the stage itself needed on top of the models already loaded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import numpy as np
import psutil
import torch
from PIL import Image

SAMPLE_INTERVAL_S = 0.005


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


def _synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def measure(pipeline: str, stage: str, device: torch.device | str):
    """`with measure("source", "VAE decode", device) as cost: ...` fills `cost` (a StageCost) on exit."""
    device = torch.device(device)
    cost = StageCost(pipeline, stage)
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cost.start_bytes = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        try:
            yield cost
        finally:
            _synchronize(device)
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


def _detail_energy(image: Image.Image) -> np.ndarray:
    """Squared luminance gradients, (H, W)."""
    luma = np.asarray(image.convert("L"), dtype=np.float64)
    energy = np.zeros_like(luma)
    energy[:, 1:] += np.diff(luma, axis=1) ** 2
    energy[1:, :] += np.diff(luma, axis=0) ** 2
    return energy


def detail_box(images: list[Image.Image], size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the `size`-square window, on a half-window grid, where the images
    together have the most fine detail (luminance gradient energy). All images must have the same size."""
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError(f"images differ in size: {[image.size for image in images]}")
    size = min(size, width, height)
    energy = sum(_detail_energy(image) for image in images)
    # Summed-area table: the energy of any window in O(1).
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, size // 2)
    best, box = -1.0, (0, 0, size, size)
    for top in sorted({*range(0, height - size + 1, stride), height - size}):
        for left in sorted({*range(0, width - size + 1, stride), width - size}):
            total = table[top + size, left + size] - table[top, left + size] - table[top + size, left] + table[top, left]
            if total > best:
                best, box = total, (left, top, left + size, top + size)
    return box


def matching_crops(
    images: list[Image.Image], size: int = 128, display: int = 256
) -> tuple[tuple[int, int, int, int], int, list[Image.Image]]:
    """Crops of the same most-detailed region of each image at 100% (one image pixel per crop pixel).

    Crops smaller than `display` are enlarged by a whole factor with nearest-neighbour sampling, so every
    image pixel stays a sharp square. Returns (box, enlargement, crops).
    """
    box = detail_box(images, size)
    side = box[2] - box[0]
    factor = max(1, display // side)
    crops = [image.crop(box) for image in images]
    if factor > 1:
        crops = [crop.resize((side * factor, side * factor), Image.Resampling.NEAREST) for crop in crops]
    return box, factor, crops
