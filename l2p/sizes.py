"""Image sizes: what the pixel model accepts (multiples of its patch, any aspect ratio, any token count), how many
tokens a size makes, and each model's native size, computed here and nowhere else."""

from __future__ import annotations

import math


def native_side(patch_size: int, trained_grid: int) -> int:
    """The side of the square image a model was trained at: its trained token grid times its pixels per token
    (256 px for the embedded tiny pixel model, 1024 for the 1K release)."""
    return patch_size * trained_grid


def pixels_per_token(pipe) -> int:
    """Image pixels per token side of a loaded pipeline: the patch of an `L2PPipeline`; for a latent
    `ZImagePipeline`, its VAE factor times its latent patch (8 x 2 = 16 for Z-Image)."""
    config = pipe.transformer.config
    if getattr(pipe, "vae", None) is not None:
        return pipe.vae_scale_factor * config.all_patch_size[0]
    return config.patch_size


def token_count(width: int, height: int, pixels_per_token: int) -> int:
    """Image tokens for a grid of `pixels_per_token`-sided patches (partial patches rounded up)."""
    return math.ceil(height / pixels_per_token) * math.ceil(width / pixels_per_token)


def nearest_multiples(value: int, multiple: int) -> tuple[int, int]:
    """The valid sizes just below and just above `value` (equal when `value` is valid)."""
    below = max(multiple, value // multiple * multiple)
    above = max(multiple, -(-value // multiple) * multiple)
    return below, above


def check_image_size(height: int, width: int, multiple: int) -> None:
    """Raise a ValueError naming the nearest valid sizes unless both sides are positive multiples."""
    problems = []
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < multiple or value % multiple:
            try:
                below, above = nearest_multiples(int(value), multiple)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be an integer multiple of {multiple}, got {value!r}") from None
            nearest = f"{below}" if below == above else f"{below} or {above}"
            problems.append(f"{name} {value} is not a multiple of {multiple} (nearest valid: {nearest})")
    if problems:
        raise ValueError("; ".join(problems) + f". The pixel model's patch size is {multiple}.")
