"""How much of a DiT block's image tokens is the noise: their variance across noise draws of the same renders.

The same toy renders are noised to one sigma several times (a latent source in its VAE's latent space, a pixel model
in pixels) and the image tokens leaving a block are kept (`training.token_probes.block_tokens`). The **noise share**
is the tokens' variance across the draws over their whole variance (across draws, renders and positions, per
channel, averaged over channels): 0 where the block's tokens ignore the noise, 1 where they are nothing else.
At high sigma the source's tokens are mostly noise, and its frozen middle blocks were trained on tokens like that;
a pixel model's front that hands them tokens with a much smaller share gives them inputs they never saw (an
alignment that averaged over noise the pixel model cannot see did exactly that: `training.alignment`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoints import load_trained
from .evaluate import load_pipeline, run_settings
from .files import atomic_file
from .token_probes import PROBE_SEED, block_tokens

NOISE_SIGMAS = (0.3, 0.6, 0.8, 0.9, 0.95, 0.99)


def noise_share(tokens: torch.Tensor) -> float:
    """`tokens` (draws, renders, positions, channels): the variance across draws over the whole variance."""
    within = tokens.var(0).mean()
    total = tokens.flatten(0, 2).var(0).mean()
    return (within / total.clamp(min=1e-12)).item()


def evaluate_token_noise(folder, checkpoint=None, block: int = 0, sigmas=NOISE_SIGMAS, n_images: int = 32, draws: int = 4,
                         size: int | None = None, out: str | Path | None = None) -> dict:
    """Per sigma, the noise share of the image tokens leaving `layers[block]` (0: the block the transfer's
    alignment targets at n_shallow 1). `checkpoint`: a checkpoint-* folder of a run laid over the DiT."""
    pipe = load_pipeline(folder)
    if checkpoint is not None:
        load_trained(pipe.transformer, checkpoint)
    resolution = size or run_settings(folder, pipe).width
    name = f"block {block}"
    rows = []
    for sigma in sigmas:
        tokens = torch.stack([block_tokens(pipe, n_images, sigma, resolution, noise_seed=PROBE_SEED + draw)[0][name]
                              for draw in range(draws)])
        rows.append({"sigma": sigma, "noise_share": noise_share(tokens)})
    result = {"pipeline": str(folder), "checkpoint": None if checkpoint is None else str(checkpoint), "block": block,
              "images": n_images, "draws": draws, "resolution": resolution, "levels": rows}
    if out is not None:
        with atomic_file(Path(out) / "token-noise.json", "w") as stream:
            json.dump(result, stream, indent=1)
    return result
