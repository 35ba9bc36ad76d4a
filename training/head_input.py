"""Standardised head input for the L2P transfer: the Detailer Head's bottleneck trained on per-channel standardised
DiT features, folded back into its 1x1 convolution whenever weights are written, so checkpoints keep the release's
layout and load into a plain `L2PTransformer2DModel`.

Why: the head reads the raw residual stream leaving the last block (the release's layout: no norm). At toy scale
those features have per-channel standard deviations from 0.14 to 13, one channel sits at a mean of ~49, and four
channels hold a third of the variance (docs/results.md, "Where the transfer loses the source"). AdamW moves every
weight by about the learning rate a step, so the bottleneck's columns for the loud channels change the output ~100x
faster than those for the quiet ones, and its default init sees mostly the one offset channel. Training the columns
against standardised channels gives each channel the same rate and a sensible start. It changes the optimisation,
not the model: the folded convolution computes the same function. Off unless `model.standardize_head_input`.

The statistics are measured once, on the first training batch (averaged over processes), and kept as buffers of
the head, so `--resume` restores them with the rest of accelerate's model state.
"""

from __future__ import annotations

import torch
import torch.nn as nn

BOTTLENECK = "local_decoder.bottleneck.0."  # the 1x1 convolution over cat([head channels, DiT features])


class StandardizedHeadInput:
    """A forward pre-hook on the head's bottleneck that standardises the DiT feature channels of its input.

    While it is on, the bottleneck's weight and bias are those of the standardised features; `fold` turns them
    into the plain convolution's. `reduce` averages a tensor over processes (accelerate's `reduce`)."""

    def __init__(self, model: nn.Module, reduce=lambda tensor: tensor):
        head = model.local_decoder
        self.features = model.config.dim
        self.offset = head.bottleneck[0].in_channels - self.features  # the head's own channels come first
        # Zeros until measured: a checkpoint's restored buffers are never zero, a fresh run's are.
        head.register_buffer("feature_mean", torch.zeros(self.features))
        head.register_buffer("feature_scale", torch.zeros(self.features))
        self.head, self.reduce = head, reduce
        head.bottleneck.register_forward_pre_hook(self._standardize)

    @property
    def measured(self) -> bool:
        return bool(self.head.feature_scale.any())

    @torch.no_grad()
    def measure(self, features: torch.Tensor) -> None:
        """Take the channels' mean and standard deviation from (B, C, H, W) features, averaged over processes."""
        flat = features.detach().float().transpose(0, 1).reshape(self.features, -1)
        mean = self.reduce(flat.mean(1))
        square = self.reduce(flat.square().mean(1))
        self.head.feature_mean.copy_(mean)
        self.head.feature_scale.copy_((square - mean.square()).clamp(min=0).sqrt().clamp(min=1e-3))

    def _standardize(self, module, inputs):
        (x,) = inputs
        own, features = x[:, : self.offset], x[:, self.offset :]
        if not self.measured:
            self.measure(features)
        shape = (1, self.features, 1, 1)
        mean = self.head.feature_mean.view(shape).to(features.dtype)
        scale = self.head.feature_scale.view(shape).to(features.dtype)
        return (torch.cat([own, (features - mean) / scale], dim=1),)

    @torch.no_grad()
    def fold(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` with the bottleneck's standardised-space weight and bias replaced by the plain convolution's:
        W x_std + b = (W / s) x + (b - (W / s) mu)."""
        weight, bias = state[BOTTLENECK + "weight"], state[BOTTLENECK + "bias"]
        scale = self.head.feature_scale.to(weight.device, torch.float32)
        mean = self.head.feature_mean.to(weight.device, torch.float32)
        plain = weight.float().clone()
        plain[:, self.offset :] /= scale.view(1, -1, 1, 1)
        plain_bias = bias.float() - (plain[:, self.offset :, 0, 0] * mean).sum(1)
        return {**state, BOTTLENECK + "weight": plain.to(weight.dtype).contiguous(),
                BOTTLENECK + "bias": plain_bias.to(bias.dtype).contiguous()}
