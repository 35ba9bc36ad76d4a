"""The toy world as training data: an endless, reproducible stream of (image, prompt, seed) renders.

Each process of a multi-process run draws from its own seed stream (`rank`), so shards never repeat one
another, and a run restarted at step k with the same seeds sees exactly the batches it would have seen.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from l2p.toyworld import render_prompt, sample_prompts


def to_tensor(image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1], the pixel convention of every model here."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def toy_batch(step: int, batch_size: int, resolution: int, seed: int = 0, rank: int = 0):
    """The batch for one step: prompts sampled from the grammar and one render each."""
    batch_seed = (seed * 1_000_003 + rank) * 1_000_003 + step
    prompts = [prompt for _, prompt in sample_prompts(batch_size, seed=batch_seed)]
    rng = np.random.default_rng(batch_seed)
    # sample_prompts cycles categories in a fixed order; shuffle so batch position says nothing.
    rng.shuffle(prompts)
    seeds = rng.integers(0, 2**31 - 1, size=batch_size).tolist()
    images = torch.stack([to_tensor(render_prompt(p, resolution, seed=s)) for p, s in zip(prompts, seeds)])
    return images, prompts, seeds


def off_background(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float mask: 1 where a pixel is off its image's background colour, 0 on it.

    The background is each image's per-channel median, since it covers most of every toy render."""
    background = images.flatten(2).median(dim=2).values[:, :, None, None]
    return ((images - background).abs().amax(dim=1, keepdim=True) > 0.05).float()


def object_weights(images: torch.Tensor, object_weight: float) -> torch.Tensor:
    """(B, 1, H, W) loss weights: 1 on the background, 1 + object_weight where a pixel is off its colour."""
    return 1.0 + object_weight * off_background(images)


def border_weights(images: torch.Tensor, border_weight: float) -> torch.Tensor:
    """(B, 1, H, W) loss weights: 1, plus `border_weight` within 1/64 of the side of where an image leaves its
    background colour (8 px at 512: a ring on both sides of every object's border, where the HR model's borders
    measured 10-15 px wide)."""
    objects = off_background(images)
    radius = max(1, images.shape[-1] // 64)
    size = 2 * radius + 1
    dilated = F.max_pool2d(objects, size, stride=1, padding=radius)
    eroded = -F.max_pool2d(-objects, size, stride=1, padding=radius)
    return 1.0 + border_weight * (dilated - eroded)
