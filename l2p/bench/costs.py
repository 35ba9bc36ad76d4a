"""Time and memory estimates for a generation, fitted to measurements (`python -m l2p.bench`).

The app asks `CostModel.estimate(pipeline, width, height, steps, cfg)` before it runs anything. The numbers
come from a small model fitted, per pipeline, to what `l2p.bench` measured on real hardware (a
`docs/benchmarks/*.json` file, `CostModel.from_benchmarks`) or to a quick measurement on this machine
(`CostModel.calibrate`); nothing here is a guess:

- time per step ~ a + b * tokens + c * tokens**2 + d * pixels: the linear layers and the per-token work grow
  with the token count, attention with its square, and full-resolution work (the Detailer Head) with the
  pixels; d is what lets "pixel_hr" grow from 4K to 8K at a constant 64x64 token grid (for the 16-px models
  tokens and pixels are proportional and the simpler of the two equivalent fits is kept);
- peak memory ~ a + b * pixels + c * tokens**2: weights and fixed buffers, full-resolution activations (the
  Detailer Head, the VAE decoder, the noisy image), and attention scores when attention is not
  memory-efficient (c comes out about zero when it is);
- VAE decode time (source only) ~ a + b * pixels + c * pixels**2 (the decoder's mid-block attends over all
  latent positions); text encoding time a constant (Z-Image pads every prompt to 512 tokens).

Coefficients are fitted by non-negative least squares on relative errors, so every estimate grows with the
image size and extrapolation past the measured sizes stays monotonic. With fewer measured sizes than
coefficients the simplest model that explains the measurements is kept.

Pipelines: "pixel" (the L2P model at its own patch, 16 px per token), "pixel_hr" (the high-resolution
variant, whose patch grows with the image so the token grid stays at 64 per side: patch 64 at 4K, 128 at
8K) and "source" (the latent Z-Image model, 16 px per token: VAE factor 8 x latent patch 2).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from ..device import device_memory_bytes, device_name
from ..sizes import token_count
from .cases import HR_BASE_PATCH, HR_MIN_SIDE, PIPELINES, hr_patch_size
from .measure import measure_in_process


@dataclass(frozen=True)
class Estimate:
    """What a generation is expected to cost.

    seconds: the whole generation: text encoding + steps * step time (x2 forward batch when cfg) + VAE decode
        (source only).
    peak_memory_bytes: peak memory of the generation (weights included).
    memory_limit_bytes: the device's memory (None if unknown).
    """

    seconds: float
    peak_memory_bytes: int
    memory_limit_bytes: int | None

    @property
    def fits(self) -> bool:
        return self.memory_limit_bytes is None or self.peak_memory_bytes <= self.memory_limit_bytes


def fit_nonnegative(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative errors, keeping the simplest model that fits as well.

    `features` is (n, k) with non-negative columns; returns k non-negative coefficients. Every subset of the
    columns is fitted; among the subsets whose relative residual is within a small margin of the best, the
    one with the fewest columns wins (so two measured sizes give a two-term model, not an arbitrary
    three-term one).
    """
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n, k = features.shape
    if n == 0:
        raise ValueError("no measurements to fit")
    weights = 1.0 / np.maximum(np.abs(targets), 1e-30)  # relative error: small sizes count as much as big ones
    scales = np.maximum(features.max(axis=0), 1e-30)  # columns span 1 .. tokens**2: scale them to ~1
    design = features / scales * weights[:, None]
    rhs = targets * weights
    candidates = []
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            solution, residual = nnls(design[:, subset], rhs)
            coefficients = np.zeros(k)
            coefficients[list(subset)] = solution
            candidates.append((residual / math.sqrt(n), int(np.count_nonzero(solution)), coefficients))
    best = min(residual for residual, _, _ in candidates)
    margin = best + 1e-3  # 0.1% rms relative error
    residual, _, coefficients = min(
        (c for c in candidates if c[0] <= margin), key=lambda c: (c[1], c[0])
    )
    return coefficients / scales


@dataclass
class PipelineCosts:
    """Fitted costs of one pipeline. `pixels_per_token` is None for "pixel_hr" (its patch follows the size)."""

    step: tuple[float, float, float, float]  # seconds: a + b * tokens + c * tokens**2 + d * pixels
    memory: tuple[float, float, float]  # bytes: a + b * pixels + c * tokens**2
    text_encode_s: float
    vae_decode: tuple[float, float, float] = (0.0, 0.0, 0.0)  # seconds: a + b * pixels + c * pixels**2 (source only)
    pixels_per_token: int | None = 16
    hr_rule: tuple[int, int] = (HR_MIN_SIDE, HR_BASE_PATCH)  # pixel_hr: (min_side, base_patch) of hr_patch_size
    measured_sizes: list[tuple[int, int]] = field(default_factory=list)

    def tokens(self, width: int, height: int) -> int:
        patch = self.pixels_per_token or hr_patch_size(width, height, *self.hr_rule) or self.hr_rule[1]
        return token_count(width, height, patch)


class CostModel:
    """Per-pipeline time and memory model fitted to benchmark records (see the module docstring)."""

    def __init__(self, pipelines: dict[str, PipelineCosts], memory_limit_bytes: int | None = None, device: str = ""):
        unknown = set(pipelines) - set(PIPELINES)
        if unknown:
            raise ValueError(f"unknown pipeline(s) {sorted(unknown)}; expected some of {list(PIPELINES)}")
        self.pipelines = pipelines
        self.memory_limit_bytes = memory_limit_bytes
        self.device = device

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_records(
        cls,
        records: list[dict],
        memory_limit_bytes: int | None = None,
        device: str = "",
        hr_rule: tuple[int, int] = (HR_MIN_SIDE, HR_BASE_PATCH),
    ) -> "CostModel":
        """Fit to `l2p.bench` records (dicts with at least pipeline, width, height, step_s, text_encode_s,
        peak_memory_bytes, status; `tokens`, `pixels_per_token` and `vae_decode_s` where known).

        Only "ok" records are used. `hr_rule` is the (min_side, base_patch) of `hr_patch_size` the
        "pixel_hr" records were measured with.
        """
        grouped: dict[str, list[dict]] = {}
        for record in records:
            if record.get("status", "ok") != "ok" or record.get("step_s") is None:
                continue
            grouped.setdefault(record["pipeline"], []).append(record)
        if not grouped:
            raise ValueError("no measured ('ok') records to fit a cost model to")
        pipelines = {}
        for name, group in grouped.items():
            if name not in PIPELINES:
                raise ValueError(f"unknown pipeline {name!r} in the records; expected one of {list(PIPELINES)}")
            pixels_per_token = None if name == "pixel_hr" else int(group[0].get("pixels_per_token") or 16)
            pixels = np.array([r["width"] * r["height"] for r in group], dtype=np.float64)
            tokens = np.array([_record_tokens(r, pixels_per_token, hr_rule) for r in group], dtype=np.float64)
            ones = np.ones_like(pixels)
            step = fit_nonnegative(np.stack([ones, tokens, tokens**2, pixels], 1), [r["step_s"] for r in group])
            memory_records = [r for r in group if r.get("peak_memory_bytes")]
            if memory_records:
                m_pixels = np.array([r["width"] * r["height"] for r in memory_records], dtype=np.float64)
                m_tokens = np.array([_record_tokens(r, pixels_per_token, hr_rule) for r in memory_records], dtype=np.float64)
                memory = fit_nonnegative(
                    np.stack([np.ones_like(m_pixels), m_pixels, m_tokens**2], 1),
                    [r["peak_memory_bytes"] for r in memory_records],
                )
            else:
                memory = np.zeros(3)
            encodes = [r["text_encode_s"] for r in group if r.get("text_encode_s") is not None]
            decode_records = [r for r in group if r.get("vae_decode_s") is not None]
            vae = (0.0, 0.0, 0.0)
            if decode_records:
                d_pixels = np.array([r["width"] * r["height"] for r in decode_records], dtype=np.float64)
                vae = tuple(
                    fit_nonnegative(
                        np.stack([np.ones_like(d_pixels), d_pixels, d_pixels**2], 1),
                        [r["vae_decode_s"] for r in decode_records],
                    )
                )
            pipelines[name] = PipelineCosts(
                step=tuple(float(v) for v in step),
                memory=tuple(float(v) for v in memory),
                text_encode_s=float(np.median(encodes)) if encodes else 0.0,
                vae_decode=tuple(float(v) for v in vae),
                pixels_per_token=pixels_per_token,
                hr_rule=tuple(hr_rule),
                measured_sizes=sorted({(r["width"], r["height"]) for r in group}),
            )
        return cls(pipelines, memory_limit_bytes, device)

    @classmethod
    def from_benchmarks(cls, path) -> "CostModel":
        """Fit to a `docs/benchmarks/<scale>-<device>.json` file written by `python -m l2p.bench`."""
        with open(Path(path)) as handle:
            data = json.load(handle)
        if isinstance(data, list):
            return cls.from_records(data)
        meta = data.get("meta", {})
        hr = meta.get("hr_rule") or {}
        return cls.from_records(
            data["records"],
            memory_limit_bytes=meta.get("memory_limit_bytes"),
            device=meta.get("device", ""),
            hr_rule=(hr.get("min_side", HR_MIN_SIDE), hr.get("base_patch", HR_BASE_PATCH)),
        )

    @classmethod
    def calibrate(cls, source_pipe, pixel_pipe, sizes, steps: int = 1) -> "CostModel":
        """Measure `source_pipe` and `pixel_pipe` quickly on this machine at `sizes` and fit the same model.

        `sizes` are ints (square) or (width, height) pairs; `steps` is the number of timed steps per size (after
        one warm-up). Peak memory is measured in this process (CUDA: max allocated; CPU: peak RSS, reset per
        case), so weights already loaded count as they will in the app.
        """
        records = measure_in_process({"source": source_pipe, "pixel": pixel_pipe}, sizes, timed_steps=steps, warmup_steps=1)
        device = pixel_pipe._execution_device
        return cls.from_records(records, memory_limit_bytes=device_memory_bytes(device), device=device_name(device))

    # -- use ----------------------------------------------------------------------------------------------
    def estimate(self, pipeline: str, width: int, height: int, steps: int, cfg: bool) -> Estimate:
        """Expected cost of generating one `width` x `height` image with `steps` steps.

        With `cfg` every step runs a batch of two (conditional and unconditional), so step time, activation
        memory and text encoding double; the VAE decode (source only) runs once.
        """
        if pipeline not in self.pipelines:
            raise ValueError(
                f"no measurements for pipeline {pipeline!r}; this cost model knows {sorted(self.pipelines)}"
            )
        costs = self.pipelines[pipeline]
        tokens = costs.tokens(width, height)
        pixels = width * height
        batch = 2 if cfg else 1
        a, b, c, d = costs.step
        step_s = a + b * tokens + c * tokens**2 + d * pixels
        seconds = costs.text_encode_s * batch + steps * step_s * batch
        if pipeline == "source":
            v0, v1, v2 = costs.vae_decode
            seconds += v0 + v1 * pixels + v2 * pixels**2
        m0, m1, m2 = costs.memory
        memory = m0 + batch * (m1 * pixels + m2 * tokens**2)
        return Estimate(seconds=float(seconds), peak_memory_bytes=int(round(memory)), memory_limit_bytes=self.memory_limit_bytes)

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "memory_limit_bytes": self.memory_limit_bytes,
            "pipelines": {name: vars(costs) for name, costs in self.pipelines.items()},
        }


def _record_tokens(record: dict, pixels_per_token: int | None, hr_rule=(HR_MIN_SIDE, HR_BASE_PATCH)) -> int:
    if record.get("tokens"):
        return int(record["tokens"])
    width, height = record["width"], record["height"]
    patch = pixels_per_token or record.get("pixels_per_token") or hr_patch_size(width, height, *hr_rule) or hr_rule[1]
    return token_count(width, height, int(patch))
