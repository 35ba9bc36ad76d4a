"""The Detailer Head: the small U-Net that turns DiT features back into full-resolution pixels.

L2P drops the DiT's final layer and unpatchify. Instead, the image tokens leaving the last block are laid
out as a feature map at 1/p of the image size, and this U-Net, running over the whole noisy image x_t,
fuses them in at its bottleneck and predicts every pixel. The module and key names follow the release
(`enc1..4`, `bottleneck`, `up1..4`, `dec1..4`, `out_conv`) so that its checkpoint loads unchanged.

At 8K the head's full-resolution activations (tens of channels over 67M pixels) can dominate peak memory, so
it can also run in overlapping tiles (`tile_size`): each tile is computed with a halo as wide as the head's
receptive field, on crops aligned to its pooling grid, and only its core is kept, so the stitched result is
the untiled one (up to float rounding).
"""

from __future__ import annotations

import math

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
        self.tile_size: int | None = None  # run in tiles of this many pixels per side (None: whole image)

    @property
    def downsampling(self) -> int:
        """How many pixels per side one bottleneck cell covers."""
        return 2**self.num_levels

    @property
    def receptive_radius(self) -> int:
        """How far (in pixels) an output pixel can see into the input, for the worst alignment.

        4 * (2**num_levels - 1): at level l (cells of 2**(l-1) pixels) the encoder conv, the pooling window,
        the up conv and the decoder conv each widen the view; found by propagating index sets through the
        layers and checked against the untiled forward in tests.
        """
        return 4 * (self.downsampling - 1)

    @property
    def tile_halo(self) -> int:
        """The margin each tile is computed with: the receptive radius rounded up to the pooling grid."""
        return math.ceil(self.receptive_radius / self.downsampling) * self.downsampling

    def enable_tiling(self, tile_size: int | None) -> None:
        """Run the head in tiles of `tile_size` pixels per side (a multiple of `downsampling`); None turns it off."""
        if tile_size is not None:
            self._check_tile_size(tile_size)
        self.tile_size = tile_size

    def disable_tiling(self) -> None:
        self.tile_size = None

    def _check_tile_size(self, tile_size) -> None:
        if not isinstance(tile_size, int) or tile_size < 1 or tile_size % self.downsampling:
            raise ValueError(
                f"tile_size must be a positive multiple of the head's pooling grid {self.downsampling}, got {tile_size!r}"
            )

    def forward(self, image: torch.Tensor, features: torch.Tensor, tile_size: int | None = None) -> torch.Tensor:
        """image: (B, C, H, W) noisy pixels; features: (B, feature_dim, h, w) DiT feature map.

        `tile_size` (or the `tile_size` attribute, see `enable_tiling`) runs the head in overlapping tiles of
        that many pixels per side, for less peak memory at the same result.
        """
        tile_size = tile_size if tile_size is not None else self.tile_size
        height, width = image.shape[-2:]
        if tile_size is None or (tile_size >= height and tile_size >= width):
            return self._forward_whole(image, features)
        self._check_tile_size(tile_size)
        return self._forward_tiled(image, features, tile_size)

    def _forward_tiled(self, image: torch.Tensor, features: torch.Tensor, tile_size: int) -> torch.Tensor:
        grid = self.downsampling
        height, width = image.shape[-2:]
        if height % grid or width % grid:
            raise ValueError(f"tiled Detailer Head needs image sides that are multiples of {grid}, got {height}x{width}")
        bottleneck_size = (height // grid, width // grid)
        if features.shape[-2:] != bottleneck_size:
            # Resize once over the whole map, as the untiled forward does, then crop per tile.
            features = F.interpolate(features, size=bottleneck_size, mode="nearest")
        halo = self.tile_halo
        output = None
        for top in range(0, height, tile_size):
            bottom = min(top + tile_size, height)
            crop_top, crop_bottom = max(0, top - halo), min(height, bottom + halo)
            for left in range(0, width, tile_size):
                right = min(left + tile_size, width)
                crop_left, crop_right = max(0, left - halo), min(width, right + halo)
                # Crop edges are multiples of the pooling grid, so every max-pool window matches the whole
                # image's, and the halo covers the receptive field, so the core sees what it would untiled.
                tile = self._forward_whole(
                    image[..., crop_top:crop_bottom, crop_left:crop_right],
                    features[..., crop_top // grid : crop_bottom // grid, crop_left // grid : crop_right // grid],
                )
                if output is None:
                    output = tile.new_empty(*image.shape[:-3], tile.shape[-3], height, width)
                output[..., top:bottom, left:right] = tile[
                    ..., top - crop_top : bottom - crop_top, left - crop_left : right - crop_left
                ]
        return output

    def _forward_whole(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if image.device.type == "cpu":
            # oneDNN's convolutions run faster on channels-last maps (measured on 2 cores: the toy head 1.35x,
            # the release's widths 1.14x), with the same result up to float rounding; every layer keeps the format.
            image = image.contiguous(memory_format=torch.channels_last)
            features = features.contiguous(memory_format=torch.channels_last)
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
