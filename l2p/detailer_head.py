"""The Detailer Head: the small U-Net that turns DiT features back into full-resolution pixels.

L2P drops the DiT's final layer and unpatchify. Instead, the image tokens leaving the last block are laid
out as a feature map at 1/p of the image size, and this U-Net, running over the whole noisy image x_t,
fuses them in at its bottleneck and predicts every pixel. The module and key names follow the release
(`enc1..4`, `bottleneck`, `up1..4`, `dec1..4`, `out_conv`) so that its checkpoint loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DetailerHead(nn.Module):
    """U-Net over the noisy image with the DiT feature map injected at the bottleneck.

    Args:
        feature_dim: channels of the DiT feature map (the DiT width, 3840 at full size).
        channels: encoder widths from the full-resolution level down; each level is Conv3x3 + SiLU then
            2x max pooling, so the bottleneck sits at 1/2**len(channels) of the image. The release uses
            (64, 128, 256, 512) with patch 16.
        in_channels / out_channels: image channels (3 for RGB).
    """

    def __init__(self, feature_dim: int, channels=(64, 128, 256, 512), in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        channels = list(channels)
        self.num_levels = len(channels)
        encoder_inputs = [in_channels] + channels[:-1]
        for level, (c_in, c_out) in enumerate(zip(encoder_inputs, channels), start=1):
            self.add_module(f"enc{level}", nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.SiLU()))
        deepest = channels[-1]
        self.bottleneck = nn.Sequential(nn.Conv2d(deepest + feature_dim, deepest, 1), nn.SiLU())
        # Decoder level i upsamples what came from below (width channels[i-1]) and, after concatenating
        # encoder level i's output, narrows to channels[i-2] (the outermost level keeps channels[0]).
        for level in range(self.num_levels, 0, -1):
            c_up = channels[level - 1]
            c_out = channels[max(level - 2, 0)]
            self.add_module(
                f"up{level}", nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_up, c_up, 3, padding=1))
            )
            self.add_module(f"dec{level}", nn.Sequential(nn.Conv2d(c_up * 2, c_out, 3, padding=1), nn.SiLU()))
        self.out_conv = nn.Conv2d(channels[0], out_channels, 1)

    @property
    def downsampling(self) -> int:
        """How many pixels per side one bottleneck cell covers."""
        return 2**self.num_levels

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """image: (B, C, H, W) noisy pixels; features: (B, feature_dim, h, w) DiT feature map."""
        skips = []
        x = image
        for level in range(1, self.num_levels + 1):
            x = getattr(self, f"enc{level}")(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        if features.shape[-2:] != x.shape[-2:]:
            # Patch size and head depth need not agree (a patch-64 DiT on a 4-level head): match by nearest.
            features = F.interpolate(features, size=x.shape[-2:], mode="nearest")
        x = self.bottleneck(torch.cat([x, features.to(x.dtype)], dim=1))
        for level in range(self.num_levels, 0, -1):
            x = getattr(self, f"up{level}")(x)
            x = getattr(self, f"dec{level}")(torch.cat([x, skips[level - 1]], dim=1))
        return self.out_conv(x)
