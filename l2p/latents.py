"""Z-Image's VAE latents as its DiT sees them: standardised with the VAE config's `shift_factor` and
`scaling_factor` (the latents' mean and 1/std), undone before every decode, as `ZImagePipeline` does."""

from __future__ import annotations

import torch


def standardise_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The VAE's encoded latents on the DiT's scale (roughly zero mean, unit variance)."""
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


def destandardise_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The DiT's latents back on the VAE's scale, ready for `vae.decode`."""
    return latents / vae.config.scaling_factor + vae.config.shift_factor
