"""The flow-matching objective of the release, shared by the source and the pixel model.

x_t = (1 - sigma) x0 + sigma * noise; the model sees t = 1 - sigma (1 = clean) and is trained with plain MSE
to output x0 - noise (the negated velocity). sigma is drawn uniformly from a 500-point grid,
linspace(1, 0, 501)[:-1], shifted with s' = shift * s / (1 + (shift - 1) * s) (shift 3 at 1K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigma_grid(grid_steps: int = 500, shift: float = 3.0) -> torch.Tensor:
    sigmas = torch.linspace(1.0, 0.0, grid_steps + 1)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def predict(model, x_t: torch.Tensor, t: torch.Tensor, captions, latent: bool) -> torch.Tensor:
    """The DiT's output (x0 - noise) for a batch x_t of shape (B, C, H, W): L2P's pixel transformer takes the
    batch as it is; Z-Image's latent one (`latent`) takes a list of (C, frames, H, W) latents and returns one."""
    if not latent:
        return model(x_t, t, captions).sample
    out = model(list(x_t.unsqueeze(2).unbind(0)), t, captions).sample
    return torch.stack(out).squeeze(2)


def flow_matching_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Plain MSE (the release's); `weights` (broadcast over channels) rescales positions, normalised to mean 1
    per image so that the loss stays on the same scale."""
    if weights is None:
        return F.mse_loss(prediction.float(), (x0 - noise).float())
    weights = weights / weights.mean(dim=tuple(range(1, weights.ndim)), keepdim=True)
    return (weights * (prediction.float() - (x0 - noise).float()).square()).mean()
