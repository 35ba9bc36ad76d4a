"""Start the pixel model's RGB patch embedder where the source's tokens were (`model.embedder_init: vae_fit`).

The release starts the new embedder fresh (default init), so the frozen middle blocks first see tokens unlike any
they were trained on, and the shallow layers must learn the VAE encoder's job before the middle blocks can help.
At toy scale, with 1000 steps on a CPU, that never finished (pixel score 0.04 against the source's 0.44).

This option instead fits, on the source's own images, the linear map that best turns an image's RGB patches into
its latent patches (the source VAE's latents, standardised and patchified as the source DiT reads them), and
composes it with the source's latent embedder: the pixel model then starts with the tokens a linear VAE encoder
would give it. Least squares sets the map on clean images (t = 1, the sample end of the flow); its ridge is the
one under which pure pixel noise maps to unit-variance latents, as the source's noise was (t = 0), so both ends
of the flow start where the source's tokens were. Everything else in the transfer is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from l2p.latents import standardise_latents

# Bounds of the ridge search, relative to the pixel patches' covariance (pixels in [-1, 1]).
RIDGE_RANGE = (1e-8, 1e4)


def image_patches(transformer, images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * tokens, C * patch^2) in the order the Z-Image DiT embeds them."""
    return torch.cat([transformer._patchify_image(image.unsqueeze(1), patch_size, 1)[0] for image in images])


class PatchStatistics:
    """Running first and second moments of paired pixel patches x and latent patches z, in float64."""

    def __init__(self):
        self.count, self.sum_x, self.sum_z, self.sum_zz, self.sum_xx, self.sum_xz = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    def add(self, x: torch.Tensor, z: torch.Tensor) -> None:
        x, z = x.double(), z.double()
        self.count += len(x)
        self.sum_x = self.sum_x + x.sum(0)
        self.sum_z = self.sum_z + z.sum(0)
        self.sum_zz = self.sum_zz + (z * z).sum(0)
        self.sum_xx = self.sum_xx + x.T @ x
        self.sum_xz = self.sum_xz + x.T @ z

    def solve(self) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """The map z ~ x @ W + b, its ridge and the share of the latents' variance it explains."""
        n = self.count
        mean_x, mean_z = self.sum_x / n, self.sum_z / n
        cov_xx = self.sum_xx / n - torch.outer(mean_x, mean_x)
        cov_xz = self.sum_xz / n - torch.outer(mean_x, mean_z)
        var_z = (self.sum_zz / n - mean_z**2).sum()
        eigenvalues, eigenvectors = torch.linalg.eigh(cov_xx)
        eigenvalues = eigenvalues.clamp(min=0)
        projected = eigenvectors.T @ cov_xz  # the cross-covariance in the pixel patches' eigenbasis
        energy = (projected**2).sum(1)
        latent_dim = cov_xz.shape[1]

        def noise_std(ridge: float) -> float:  # std of W^T n for n ~ N(0, I): sqrt(trace(W^T W) / latent_dim)
            return math.sqrt(float((energy / (eigenvalues + ridge) ** 2).sum()) / latent_dim)

        low, high = RIDGE_RANGE
        if noise_std(high) > 1.0 or noise_std(low) < 1.0:
            raise ValueError(f"no ridge in {RIDGE_RANGE} maps pixel noise to unit-variance latents "
                             f"(noise std {noise_std(low):.3g} to {noise_std(high):.3g}); are the images all alike?")
        for _ in range(100):  # bisection in log space: the noise std falls as the ridge grows
            middle = math.sqrt(low * high)
            low, high = (middle, high) if noise_std(middle) > 1.0 else (low, middle)
        ridge = math.sqrt(low * high)
        weight = eigenvectors @ (projected / (eigenvalues + ridge)[:, None])
        bias = mean_z - mean_x @ weight
        residual = var_z - 2 * (weight * cov_xz).sum() + (weight * (cov_xx @ weight)).sum()
        return weight, bias, ridge, float(1 - residual / var_z)


@torch.no_grad()
def fit_rgb_embedder(model, source_transformer, vae, batches: Iterable[torch.Tensor]) -> dict:
    """In place: set `model`'s RGB patch embedder to the source's latent embedder composed with the fitted
    RGB -> latent patch map, from batches of the source's images (B, 3, H, W) in [-1, 1]. Returns what was fitted."""
    pixel_patch = model.config.patch_size
    latent_patch = source_transformer.config.all_patch_size[0]
    statistics, images = PatchStatistics(), 0
    for pixels in batches:
        latents = standardise_latents(vae, vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode())
        statistics.add(image_patches(model, pixels, pixel_patch), image_patches(source_transformer, latents, latent_patch))
        images += len(pixels)
    weight, bias, ridge, explained = statistics.solve()
    latent_embedder = source_transformer.all_x_embedder[f"{latent_patch}-1"]
    rgb_embedder = model.all_x_embedder[f"{pixel_patch}-1"]
    source_weight = latent_embedder.weight.double().cpu()
    rgb_embedder.weight.copy_(source_weight @ weight.T)
    rgb_embedder.bias.copy_(source_weight @ bias + latent_embedder.bias.double().cpu())
    return {"images": images, "patches": statistics.count, "ridge": ridge, "explained_variance": explained}
