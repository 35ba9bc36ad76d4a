"""Resolution presets, aspect ratios and RoPE choices of the demo, as sizes both pipelines accept.

A preset names the image's long side: 1K = 1024 px, 2K, 4K, 8K, plus "native", the loaded pixel model's own
size (patch size x trained token grid, `l2p.sizes.native_side`: 256 px for the embedded tiny model, 1024 for the
1K release). The short side follows the aspect ratio. Both sides are snapped to `Geometry.multiple`, the least
common multiple of what the pixel model (its patch) and the latent source (VAE factor x latent patch) accept,
so the same size runs in both pipelines and the two images of a comparison line up pixel for pixel.

With a native high-resolution variant of the pixel model loaded (`l2p.high_resolution`: a larger patch on the
same token grid), one more preset, "hr", is its native size: the HR model's own side, both sides snapped to the
HR patch too. Compare at that size (however it is asked for) runs three models; any preset at that side is
labelled as the HR model's native size.

"Native" versus "zero-shot" follows `l2p.rope`: positions are scaled isotropically from the longer side, so
a size is native when its longer side spans at most `trained_grid` tokens, and zero-shot beyond that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..sizes import native_side, nearest_multiples, pixels_per_token

NATIVE = "native"
HR = "hr"  # the HR model's native size; a preset only while one is loaded
# Long side in pixels.
PRESET_SIDES = {"1K": 1024, "2K": 2048, "4K": 4096, "8K": 8192}
PRESETS = (NATIVE, *PRESET_SIDES)
# Any width and height, each a multiple of `Geometry.multiple` up to the 8K preset's side.
CUSTOM = "custom"
MAX_SIDE = PRESET_SIDES["8K"]
ASPECT_RATIOS = {"1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "16:9": (16, 9), "9:16": (9, 16)}
# "auto" picks AUTO_ROPE past the trained grid and plain positions inside it; "none" never rescales.
ROPE_CHOICES = ("auto", "none", "pi", "ntk", "yarn", "dype")
# The measured best on held-out toy prompts (docs/results.md, "per RoPE strategy"): at 2x native PI, YaRN and DyPE
# tie (plain positions and NTK tile the canvas with small copies); at 8x native PI and YaRN get 2 prompts of 48
# right, DyPE and plain positions none. YaRN over PI for its count matches (0.34 against 0.31 over both sizes).
AUTO_ROPE = "yarn"


@dataclass(frozen=True)
class Geometry:
    """What sizes the loaded pair of models accept and where their trained grid ends.

    patch_size: pixels per token of the pixel model.
    trained_grid: tokens per axis the pixel model was trained at (the latent source's grid, by design).
    source_pixels_per_token: VAE factor x latent patch of the source (16 for Z-Image).
    hr_patch_size, hr_trained_grid: the native high-resolution variant's, when one is loaded (else None).
    """

    patch_size: int
    trained_grid: int
    source_pixels_per_token: int = 16
    hr_patch_size: int | None = None
    hr_trained_grid: int | None = None

    @classmethod
    def of(cls, source, pixel, hr=None) -> "Geometry":
        """The geometry of a loaded pair: a `ZImagePipeline` and an `L2PPipeline` (and the HR `L2PPipeline`)."""
        config = pixel.transformer.config
        extra = {}
        if hr is not None:
            extra = dict(hr_patch_size=hr.transformer.config.patch_size, hr_trained_grid=hr.transformer.config.trained_grid)
        return cls(config.patch_size, config.trained_grid, pixels_per_token(source), **extra)

    @property
    def has_hr(self) -> bool:
        return self.hr_patch_size is not None

    @property
    def hr_side(self) -> int | None:
        """The HR model's native side (None without one)."""
        return native_side(self.hr_patch_size, self.hr_trained_grid) if self.has_hr else None

    @property
    def hr_multiple(self) -> int:
        """What all three models accept: `multiple` and the HR patch."""
        return math.lcm(self.multiple, self.hr_patch_size) if self.has_hr else self.multiple

    @property
    def presets(self) -> tuple[str, ...]:
        """The presets of this geometry: PRESETS, with "hr" after "native" when an HR model is loaded."""
        return (NATIVE, HR, *PRESET_SIDES) if self.has_hr else PRESETS

    def is_hr_size(self, width: int, height: int) -> bool:
        """The HR model's native size at some aspect ratio: its long side, both sides multiples of its patch."""
        return (self.has_hr and max(width, height) == self.hr_side and width % self.hr_patch_size == 0
                and height % self.hr_patch_size == 0)

    @property
    def multiple(self) -> int:
        return math.lcm(self.patch_size, self.source_pixels_per_token)

    @property
    def native_side(self) -> int:
        return native_side(self.patch_size, self.trained_grid)

    @property
    def source_native_side(self) -> int:
        return native_side(self.source_pixels_per_token, self.trained_grid)

    def is_native(self, width: int, height: int, pipeline: str = "pixel") -> bool:
        """Whether a size is native for the pixel model ("pixel") or the latent source ("source")."""
        return is_native(width, height, self._pixels_per_token(pipeline), self._grid(pipeline))

    def rope(self, choice: str, width: int, height: int, pipeline: str = "pixel") -> str | None:
        """The RoPE strategy `choice` resolves to for one pipeline at this size (see `resolve_rope`)."""
        return resolve_rope(choice, width, height, self._pixels_per_token(pipeline), self._grid(pipeline))

    def _pixels_per_token(self, pipeline: str) -> int:
        if pipeline == "hr":
            return self.hr_patch_size
        return self.source_pixels_per_token if pipeline == "source" else self.patch_size

    def _grid(self, pipeline: str) -> int:
        return self.hr_trained_grid if pipeline == "hr" else self.trained_grid


def snap(value: float, multiple: int) -> int:
    """The nearest positive multiple of `multiple`."""
    return max(multiple, int(round(value / multiple)) * multiple)


def long_side(preset: str, geometry: Geometry) -> int:
    if preset == NATIVE:
        return geometry.native_side
    if preset == HR and geometry.has_hr:
        return geometry.hr_side
    if preset not in PRESET_SIDES:
        raise ValueError(f"unknown resolution preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESET_SIDES[preset]


def image_size(preset: str, aspect_ratio: str, geometry: Geometry) -> tuple[int, int]:
    """(width, height) of a preset at an aspect ratio, both multiples of `geometry.multiple`."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown aspect ratio {aspect_ratio!r}; choose one of {', '.join(ASPECT_RATIOS)}")
    multiple = geometry.hr_multiple if preset == HR else geometry.multiple
    side = snap(long_side(preset, geometry), multiple)
    across, down = ASPECT_RATIOS[aspect_ratio]
    if across >= down:
        return side, snap(side * down / across, multiple)
    return snap(side * across / down, multiple), side


def custom_side_problem(name: str, value, geometry: Geometry) -> str | None:
    """What is wrong with a free width or height, naming the nearest valid sizes."""
    multiple = geometry.multiple
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value != int(value):
        return f"{name.capitalize()} must be a whole number of pixels, got {value!r}."
    value = int(value)
    if not multiple <= value <= MAX_SIDE:
        return f"{name.capitalize()} must be from {multiple} to {MAX_SIDE} px, got {value}."
    if value % multiple:
        below, above = nearest_multiples(value, multiple)
        return (f"{name.capitalize()} {value} is not a multiple of {multiple} px (what both models accept); "
                f"nearest valid: {below} or {above}.")
    return None


def is_native(width: int, height: int, patch_size: int, trained_grid: int) -> bool:
    """True when the longer side spans no more tokens than the model was trained at."""
    return math.ceil(max(width, height) / patch_size) <= trained_grid


def resolve_rope(choice: str, width: int, height: int, patch_size: int, trained_grid: int) -> str | None:
    """The strategy to run with: "auto" is AUTO_ROPE past the trained grid and plain positions inside it."""
    if choice not in ROPE_CHOICES:
        raise ValueError(f"unknown RoPE strategy {choice!r}; choose one of {', '.join(ROPE_CHOICES)}")
    if choice == "auto":
        return None if is_native(width, height, patch_size, trained_grid) else AUTO_ROPE
    return None if choice == "none" else choice


def preset_name(preset: str) -> str:
    """How tables name a preset: "Native", "HR", "1K", ..."""
    return {NATIVE: "Native", HR: "HR"}.get(preset, preset)


def preset_label(preset: str, geometry: Geometry) -> str:
    """E.g. "4K · 4096 px · zero-shot" (long side; native or zero-shot for the loaded model); a preset at the HR
    model's native side says so: "HR · 512 px · zero-shot for the 1x model · the HR model's native size (Compare: 3
    models)"."""
    if preset == CUSTOM:
        return f"Custom · width × height below (multiples of {geometry.multiple})"
    side = long_side(preset, geometry)
    status = "native" if side <= geometry.native_side else "zero-shot"
    name = preset_name(preset)
    if side == geometry.hr_side:
        status += " for the 1x model · the HR model's native size (Compare: 3 models)"
    return f"{name} · {side} px · {status}"


def preset_for_size(width: int, height: int, geometry: Geometry) -> tuple[str, str]:
    """The (preset, aspect ratio) that makes this size, or (CUSTOM, "1:1") when none does (then the size goes
    into width and height)."""
    for preset in geometry.presets:
        for aspect_ratio in ASPECT_RATIOS:
            if image_size(preset, aspect_ratio, geometry) == (width, height):
                return preset, aspect_ratio
    return CUSTOM, "1:1"
