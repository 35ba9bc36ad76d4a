"""Rotary positions beyond the trained grid: plain extension, PI, NTK, YaRN and timestep-aware DyPE.

Z-Image looks its 3-axis RoPE up in a precomputed table of integer positions (512 per spatial axis), so a
grid past the table crashes and a grid past the *trained* size extrapolates badly. `RotaryPositions`
computes the same rotations on the fly for any (even fractional) position, bit-identical to the table
inside it, and rescales the two spatial axes with one of the strategies below. Only the spatial axes
(1 and 2) are touched: axis 0 carries caption order, which does not change with image size.

With s = target tokens per axis / trained tokens per axis (one s for both axes, from the longer side, so
non-square images are scaled isotropically and never stretched), d = an axis' rotary dim, b = the base:
- `None`: plain integer positions, extended past the table.
- `"pi"`: positions divided by s.
- `"ntk"`: base b * s ** (d / (d - 2)).
- `"yarn"`: per frequency, blend interpolation (for wavelengths longer than the trained grid) and
  extrapolation (for short ones) with a linear ramp between beta_slow and beta_fast rotations over the
  trained grid; attention logits scaled by 0.1 ln(s) + 1.
- `"dype"`: YaRN whose effective scale follows the denoising time. At noise level sigma (1 = pure noise)
  the exponent k = lambda_s * sigma ** lambda_t (clipped to [0, 1]) gives s_eff = s ** k: full
  interpolation while the layout forms, relaxing to the trained frequencies (s_eff = 1, no division) as
  the detail resolves.

`rope_scaling(transformer, strategy, trained_grid)` applies a strategy to any Z-Image-family transformer
(this project's L2P model or a stock `diffusers.ZImageTransformer2DModel`) for the duration of a `with`
block, without editing diffusers: it swaps the transformer's `rope_embedder` and watches the timestep of
each forward call through a forward pre-hook, then restores both.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

STRATEGIES = (None, "pi", "ntk", "yarn", "dype")
SPATIAL_AXES = (1, 2)


@dataclass(frozen=True)
class RopeScaling:
    """A resolution-extrapolation setting. `trained_grid` is the token count per axis seen in training."""

    strategy: str | None = None
    trained_grid: int = 64
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    dype_lambda_s: float = 2.0
    dype_lambda_t: float = 2.0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown RoPE strategy {self.strategy!r}; choose one of {list(STRATEGIES)}")
        if self.trained_grid < 1:
            raise ValueError(f"trained_grid must be a positive token count, got {self.trained_grid}")


class RotaryPositions:
    """Drop-in replacement for diffusers' Z-Image `RopeEmbedder`: `__call__(ids) -> complex freqs`.

    `ids` is (N, 3) integer positions, as Z-Image builds them. The spatial scale is read from the ids
    themselves (the largest spatial position + 1 is the token grid), so this needs no knowledge of the
    model's patch size or the image size. Caption ids have 0 on both spatial axes and are left as they are.
    """

    def __init__(self, theta: float, axes_dims, scaling: RopeScaling | None = None):
        self.theta = float(theta)
        self.axes_dims = list(axes_dims)
        self.scaling = scaling or RopeScaling()
        # Noise level of the current forward pass (1 = pure noise); set by the pre-hook, used by DyPE.
        self.sigma = 1.0
        # The image-token call comes before the caption call in a forward pass; the caption tokens must share
        # the image tokens' attention scaling, so the last image grid's scale is remembered here.
        self._scale = 1.0

    # -- frequencies per axis ---------------------------------------------------------------------------
    def _base_frequencies(self, dim: int, theta: float, device=None) -> torch.Tensor:
        # float64 as in diffusers' table, so unscaled positions give bit-identical rotations.
        return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim))

    def _effective_scale(self, scale: float) -> float:
        if self.scaling.strategy != "dype" or scale <= 1.0:
            return scale
        k = self.scaling.dype_lambda_s * max(self.sigma, 0.0) ** self.scaling.dype_lambda_t
        return scale ** min(max(k, 0.0), 1.0)

    def _axis_frequencies(self, dim: int, scale: float, device) -> tuple[torch.Tensor, float]:
        """Frequencies for one spatial axis and the factor its positions are divided by."""
        strategy = self.scaling.strategy
        if strategy is None or scale <= 1.0:
            return self._base_frequencies(dim, self.theta, device), 1.0
        if strategy == "pi":
            return self._base_frequencies(dim, self.theta, device), scale
        if strategy == "ntk":
            return self._base_frequencies(dim, self.theta * scale ** (dim / (dim - 2)), device), 1.0
        # yarn and dype: blend interpolated and original frequencies by how many turns each makes over
        # the trained grid.
        freqs = self._base_frequencies(dim, self.theta, device)
        rotations = self.scaling.trained_grid * freqs / (2 * math.pi)
        ramp = (rotations - self.scaling.beta_slow) / (self.scaling.beta_fast - self.scaling.beta_slow)
        keep_original = ramp.clamp(0.0, 1.0)
        return freqs / scale * (1 - keep_original) + freqs * keep_original, 1.0

    def attention_factor(self, scale: float) -> float:
        """YaRN's logit scaling, folded into the rotation magnitude (q and k each get its square root)."""
        if self.scaling.strategy not in ("yarn", "dype") or scale <= 1.0:
            return 1.0
        return 0.1 * math.log(scale) + 1.0

    # -- the embedder interface -------------------------------------------------------------------------
    def grid_scale(self, ids: torch.Tensor) -> float:
        grid = int(ids[:, list(SPATIAL_AXES)].max().item()) + 1
        return max(grid / self.scaling.trained_grid, 1.0)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.shape[-1] != len(self.axes_dims):
            raise ValueError(f"expected position ids of shape (N, {len(self.axes_dims)}), got {tuple(ids.shape)}")
        if ids[:, list(SPATIAL_AXES)].any():
            self._scale = self.grid_scale(ids)
        scale = self._effective_scale(self._scale)
        positions = ids.to(torch.float64)
        parts = []
        for axis, dim in enumerate(self.axes_dims):
            if axis in SPATIAL_AXES:
                freqs, divisor = self._axis_frequencies(dim, scale, ids.device)
            else:
                freqs, divisor = self._base_frequencies(dim, self.theta, ids.device), 1.0
            angles = torch.outer(positions[:, axis] / divisor, freqs).float()
            parts.append(torch.polar(torch.ones_like(angles), angles))
        freqs_cis = torch.cat(parts, dim=-1)
        magnitude = math.sqrt(self.attention_factor(scale))
        if magnitude != 1.0:
            freqs_cis = freqs_cis * magnitude
        return freqs_cis.to(torch.complex64)


def resolve_scaling(rope_scaling, trained_grid: int) -> RopeScaling:
    """Accept a strategy name, a dict of `RopeScaling` fields, a `RopeScaling`, or None."""
    if isinstance(rope_scaling, RopeScaling):
        return rope_scaling
    if isinstance(rope_scaling, dict):
        return RopeScaling(**{"trained_grid": trained_grid, **rope_scaling})
    return RopeScaling(strategy=rope_scaling, trained_grid=trained_grid)


@contextlib.contextmanager
def rope_scaling(transformer, strategy=None, trained_grid: int | None = None):
    """Run `transformer` (any Z-Image-family DiT) with a RoPE extrapolation strategy inside the block.

    `trained_grid` defaults to the transformer's `trained_grid` config value when it has one.
    """
    if trained_grid is None:
        trained_grid = getattr(transformer.config, "trained_grid", None)
        if trained_grid is None:
            raise ValueError("pass trained_grid: this transformer's config does not record its trained token grid")
    scaled = RotaryPositions(transformer.config.rope_theta, transformer.config.axes_dims, resolve_scaling(strategy, trained_grid))

    def watch_timestep(module, args, kwargs):
        # Z-Image-family forwards take t as the second argument (or `t=`/`timestep=`); t is 1 at clean.
        t = args[1] if len(args) > 1 else kwargs.get("t", kwargs.get("timestep"))
        if t is not None:
            scaled.sigma = float(1.0 - torch.as_tensor(t).float().flatten()[0])

    original = transformer.rope_embedder
    transformer.rope_embedder = scaled
    handle = transformer.register_forward_pre_hook(watch_timestep, with_kwargs=True)
    try:
        yield scaled
    finally:
        handle.remove()
        transformer.rope_embedder = original
