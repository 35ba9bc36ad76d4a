"""Token alignment for the L2P transfer: the tokens the pixel model hands its frozen middle blocks are pulled toward
the ones the latent source hands them, for the same image at the same noise level.

Why: the frozen middle blocks turn the source's own tokens into what the source draws, and only those. At toy
scale, linear probes on each block's image tokens (sigma 0.5, docs/results.md "Where the transfer loses the
source") name the object in 93% of the object tokens leaving the source's first middle block but in 54% of the
pixel model's, and the frozen blocks add almost nothing to the pixel model's tokens (52% before them, 55% after)
where they lift the source's from 79% to 93%. The velocity loss alone has to find the source's token distribution
through the frozen blocks and the new head; this loss shows it directly. It is not the paper's recipe (plain
velocity MSE), so it is off unless `flow.align_weight` asks for it.

For a high-resolution variant grown from the 1x pixel model (`flow.align_to: base`), the teacher is that 1x
model instead, on the image shrunk to its native side and noised in pixels: its tokens are the ones the copied
blocks and inner head levels were trained with.

The target is the source DiT's sequence (image and caption tokens) leaving block `block` (the last retrained front
block), computed without gradients on the image's VAE latent noised to the same sigma; the source's forward
stops there. The loss is their mean squared difference over the target's variance, so its weight does not depend
on the DiT's feature scale.

The teacher's noise (`flow.align_noise`): drawn independently of the pixel model's (`independent`), the target at a
high sigma is mostly that noise, which the pixel model cannot see, so the MSE pulls its tokens to their mean over the
teacher's noise: tokens that no longer vary with the noise as the frozen blocks were trained to expect (at sigma 0.9,
16% of such a pixel model's block-0 token variance is due to the noise against 65% of the source's:
`training.evaluate token-noise`, docs/results.md "The alignment's noise"). `shared` derives
the teacher's noise from the pixel model's own: area-averaged to the teacher's side (times the shrink, which keeps
it unit Gaussian) and, for a latent teacher, each VAE cell's pixel noise projected by `noise_map` (orthonormal rows:
the result is exactly the unit Gaussian the source was trained with), so the target is a function of what the
pixel model sees.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .flow import predict


# What `flow.align_to` may name: the source DiT on VAE latents, or the 1x pixel model an HR variant grows from.
ALIGN_TARGETS = ("source", "base")
# What `flow.align_noise` may name: the teacher's noise drawn on its own, or derived from the pixel model's.
ALIGN_NOISE = ("independent", "shared")


def noise_map(pixels: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """A map from each VAE cell's pixel noise to its latent noise, as a conv weight (C, 3, f, f) for stride f: the
    orthonormal-row matrix nearest to how the VAE maps the cell's pixels to its latent (orthogonal Procrustes on
    their centred cross-covariance over `pixels` (B, 3, H, W) and their standardised `latents` (B, C, H/f, W/f)),
    so that the noise lands in the latent directions the pixels' own content does, and stays unit Gaussian."""
    channels, factor = latents.shape[1], pixels.shape[-1] // latents.shape[-1]
    cells = F.unfold(pixels.float(), factor, stride=factor).transpose(1, 2).reshape(-1, 3 * factor * factor)
    codes = latents.float().flatten(2).transpose(1, 2).reshape(-1, channels)
    cross = (codes - codes.mean(0)).T @ (cells - cells.mean(0))
    u, _, vh = torch.linalg.svd(cross, full_matrices=False)
    return (u @ vh).reshape(channels, 3, factor, factor)


def teacher_noise(noise: torch.Tensor, shrink: int, cell_map: torch.Tensor | None) -> torch.Tensor:
    """The teacher's noise derived from the pixel model's `noise` (B, 3, H, W): area-averaged by `shrink` (times it,
    so each value stays unit Gaussian), then, for a latent teacher, through `cell_map` (see `noise_map`)."""
    if shrink > 1:
        noise = F.avg_pool2d(noise, shrink) * shrink
    if cell_map is not None:
        noise = F.conv2d(noise, cell_map.to(noise), stride=cell_map.shape[-1])
    return noise


class _SourceTokens(Exception):
    """Raised from the source's hooked block to stop its forward there, carrying the block's output."""


class SourceAlignment(nn.Module):
    """The teacher DiT (frozen: the source's, or an HR model's 1x base) and forward hooks on `layers[block]` of it
    and of the pixel model."""

    def __init__(self, model: nn.Module, source_transformer: nn.Module, block: int, latent: bool = True):
        """`latent`: the teacher reads VAE latents (the source's DiT), else pixels (a 1x pixel model)."""
        super().__init__()
        self.source = source_transformer.requires_grad_(False).eval()
        self.latent = latent
        self._pixel_tokens = None
        self._whole, self._teacher_tokens = False, None  # see `targets(..., whole=True)`
        self._hooks = [model.layers[block].register_forward_hook(self._keep),
                       self.source.layers[block].register_forward_hook(self._stop)]

    def remove(self) -> None:
        """Unhook the pixel model (and the source), so that the model runs as if it had never been aligned."""
        for hook in self._hooks:
            hook.remove()
        self._pixel_tokens = None

    def _keep(self, module, inputs, output):
        self._pixel_tokens = output

    def _stop(self, module, inputs, output):
        if not self._whole:
            raise _SourceTokens(output)
        self._teacher_tokens = output

    @torch.no_grad()
    def targets(self, x_t: torch.Tensor, t: torch.Tensor, captions, whole: bool = False):
        """The teacher's tokens leaving the block for its noisy input `x_t` (B, C, H, W) at time `t`: VAE latents
        for the source, pixels for a 1x pixel model. With `whole`, its forward runs on to the end and the pair
        (tokens, output) comes back, the output being its x0 - noise (for `flow.teach_weight`)."""
        self._whole = whole
        try:
            output = predict(self.source, x_t, t, captions, latent=self.latent)
        except _SourceTokens as stop:  # not `whole`: stopped at the block
            return stop.args[0]
        finally:
            self._whole = False
        tokens, self._teacher_tokens = self._teacher_tokens, None
        if tokens is None:
            raise RuntimeError("the teacher's forward never reached the aligned block")
        return tokens, output

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """For the pixel model's forward just run: its tokens at the block against `targets`."""
        tokens, self._pixel_tokens = self._pixel_tokens, None
        if tokens is None or tokens.shape != targets.shape:
            raise RuntimeError(f"pixel tokens {None if tokens is None else tuple(tokens.shape)} do not line up with "
                               f"the source's {tuple(targets.shape)}: both must see the same captions and token grid")
        targets = targets.float()
        return F.mse_loss(tokens.float(), targets) / targets.var().clamp(min=1e-8)
