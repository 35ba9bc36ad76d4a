"""`sampling.json`: how a pipeline folder is meant to run (size, steps, guidance), kept beside `model_index.json`.

The embedded tiny models are trained at one size with one sampler setting; this file is the one place that says
which, so the app's defaults, `training.evaluate` and the README example all read it instead of repeating the
numbers. `guidance_scale` is in the folder's own pipeline's convention (Z-Image: pos + s (pos - neg); L2P:
neg + s (pos - neg)), so `pipe(prompt, **settings.as_kwargs())` is the intended run.

An L2P folder may also say `cfg_start` (L2PPipeline's argument: guidance starts at that normalised time, the
noisiest steps run the conditional prediction alone); a folder without it is guided at every step.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

SAMPLING_FILE = "sampling.json"


@dataclass(frozen=True)
class SamplingSettings:
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    cfg_start: float = 0.0  # optional in the file: L2PPipeline's guidance interval (0: guided from the first step)

    def __post_init__(self):
        for name in ("height", "width", "num_inference_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{SAMPLING_FILE}: {name} must be a positive integer, got {value!r}")
        if not isinstance(self.guidance_scale, (int, float)) or isinstance(self.guidance_scale, bool) or self.guidance_scale < 0:
            raise ValueError(f"{SAMPLING_FILE}: guidance_scale must be a number >= 0, got {self.guidance_scale!r}")
        if not isinstance(self.cfg_start, (int, float)) or isinstance(self.cfg_start, bool) or not 0 <= self.cfg_start <= 1:
            raise ValueError(f"{SAMPLING_FILE}: cfg_start must be a number in [0, 1], got {self.cfg_start!r}")

    def as_kwargs(self) -> dict:
        """The pipeline call's arguments; `cfg_start` only where it is set, since ZImagePipeline has no such argument."""
        values = asdict(self)
        if not self.cfg_start:
            del values["cfg_start"]
        return values

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL's order."""
        return self.width, self.height


# What folders without a sampling.json (the released models, from the Hub) run with: the L2P 1K release at 30 steps
# and CFG 2.0; Z-Image-Turbo at 9 steps without guidance (its 0.0, which is L2P's 1.0).
RELEASE_SAMPLING = SamplingSettings(height=1024, width=1024, num_inference_steps=30, guidance_scale=2.0)
TURBO_SAMPLING = SamplingSettings(height=1024, width=1024, num_inference_steps=9, guidance_scale=0.0)


def zimage_guidance(l2p_guidance: float) -> float:
    """The same guidance strength in Z-Image's convention: L2P writes CFG as neg + s (pos - neg), Z-Image as
    pos + w (pos - neg), so w = s - 1 (and no guidance, L2P's 1 or below, is Z-Image's 0)."""
    return max(0.0, l2p_guidance - 1.0)


def l2p_guidance(zimage_guidance: float) -> float:
    """Z-Image's guidance w in L2P's convention: s = w + 1."""
    return zimage_guidance + 1.0


def read_sampling(folder: str | os.PathLike) -> SamplingSettings | None:
    """The folder's settings, or None when it has no `sampling.json` (a Hub model: use the release's defaults)."""
    path = Path(folder) / SAMPLING_FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    # The fields with a default (cfg_start) may be left out of the file; the others must be there.
    required = {field.name for field in fields(SamplingSettings) if field.default is MISSING}
    optional = {field.name for field in fields(SamplingSettings)} - required
    if not isinstance(values, dict) or not required <= set(values) <= required | optional:
        got = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{path} must hold exactly {sorted(required)} (and optionally {sorted(optional)}), got {got}")
    return SamplingSettings(**values)


def write_sampling(folder: str | os.PathLike, settings: SamplingSettings) -> Path:
    path = Path(folder) / SAMPLING_FILE
    path.write_text(json.dumps(settings.as_kwargs(), indent=1) + "\n")
    return path
