"""High-resolution variants of a pixel model, as the release's 4K and 8K models are built (reference section 7).

The DiT's token grid stays what the model was trained on; the patch grows by `factor` (16 -> 64 at 4x the side)
and the Detailer Head gains one outer level per doubling, narrow ones (the release's 4K head puts 16- and
32-channel levels outside its 64..512 ones). Nothing else changes, so an HR variant is an ordinary
`L2PTransformer2DModel` whose config says its patch and head widths, and loads like any other.

`grow_for_high_resolution` builds one from the 1x model so that its training starts from what the 1x model knows:
- every DiT tensor is the 1x model's own;
- the RGB embedder for the larger patches is the 1x embedder applied to the patch averaged down by `factor`, and
  the DiT runs at the noise level the averaging leaves (config `noise_pooling`: averaging divides the pixel noise by
  `factor` and keeps the image): at the start the DiT sees exactly the tokens the 1x model sees on the image shrunk
  to its native size and noised as it was trained;
- the 1x head's levels become the HR head's inner ones (level l -> l + extra levels) wherever the shapes agree.
  Three convs start fresh with the outer levels: the first inner encoder conv (its input is now an outer level's
  output, not RGB), the decoder conv that feeds the outer levels when their width differs, and the output conv.
"""

from __future__ import annotations

import math
import re

import torch

from .transformer_l2p import L2PTransformer2DModel

MIN_OUTER_CHANNELS = 4  # the output conv maps the outermost level to RGB: narrower would not span the colours


def high_resolution_channels(base_channels, factor: int) -> list[int]:
    """The HR head's widths: one extra outer level per doubling of the side, each half as wide as the level
    inside it (at least MIN_OUTER_CHANNELS), before the 1x head's own widths."""
    extra = _doublings(factor)
    channels = list(base_channels)
    for _ in range(extra):
        channels.insert(0, max(channels[0] // 2, MIN_OUTER_CHANNELS))
    return channels


def grow_for_high_resolution(model: L2PTransformer2DModel, factor: int, detailer_channels=None,
                             prediction_type: str | None = None) -> L2PTransformer2DModel:
    """A pixel model for `factor` x the side of `model`'s native size, initialised from `model` (see above).

    `detailer_channels`: the HR head's widths; they must end with the 1x head's and add one level per doubling
    (default: `high_resolution_channels`). `prediction_type`: what the grown head predicts (default: `model`'s)."""
    base = model.config
    channels = growth_channels(base.detailer_channels, factor, detailer_channels)
    extra = _doublings(factor)
    config = {key: value for key, value in base.items() if not key.startswith("_")}
    config.update(patch_size=base.patch_size * factor, detailer_channels=channels,
                  noise_pooling=base.get("noise_pooling", 1) * factor)
    if prediction_type is not None:
        config.update(prediction_type=prediction_type)
    reference = next(model.parameters())
    grown = L2PTransformer2DModel.from_config(config)
    if (reference.device, reference.dtype) != (grown.device, grown.dtype):
        grown.to(device=reference.device, dtype=reference.dtype)
    own = grown.state_dict()
    renamed = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("all_x_embedder."):
            key, tensor = _grown_embedder(key, tensor, base.patch_size, factor)
        elif key.startswith("local_decoder."):
            key = _outer_level_key(key, extra)
        renamed[key] = tensor
    # A layer is copied whole or not at all (no 1x bias on a fresh conv's weights).
    layers = {}
    for key, tensor in renamed.items():
        layers.setdefault(key.rsplit(".", 1)[0], {})[key] = tensor
    state = {key: tensor for layer in layers.values()
             if all(key in own and own[key].shape == tensor.shape for key, tensor in layer.items())
             for key, tensor in layer.items()}
    grown.load_state_dict(state, strict=False)
    return grown


def growth_channels(base_channels, factor: int, detailer_channels=None) -> list[int]:
    """The HR head's widths for growing a head of `base_channels` by `factor`: `detailer_channels`, checked to be
    one outer level per doubling followed by the 1x head's, or `high_resolution_channels` when None."""
    if detailer_channels is None:
        return high_resolution_channels(base_channels, factor)
    extra, channels, inner = _doublings(factor), list(detailer_channels), list(base_channels)
    if len(channels) != len(inner) + extra or channels[extra:] != inner:
        raise ValueError(f"detailer_channels {channels} must be {extra} outer level(s) followed by the 1x head's {inner}")
    return channels


def _doublings(factor: int) -> int:
    if not isinstance(factor, int) or factor < 2 or factor & (factor - 1):
        raise ValueError(f"the high-resolution factor must be a power of two >= 2, got {factor!r}")
    return int(math.log2(factor))


def _grown_embedder(key: str, tensor: torch.Tensor, patch: int, factor: int) -> tuple[str, torch.Tensor]:
    """`all_x_embedder.{p}-1.*` for patches `factor` times larger: each weight over a (p, p, 3) patch spread over
    the factor x factor pixels it stands for, divided among them (so it sums their mean); the bias as it is."""
    name = key.replace(f"all_x_embedder.{patch}-1.", f"all_x_embedder.{patch * factor}-1.")
    if not key.endswith(".weight"):
        return name, tensor
    dim = tensor.shape[0]
    weight = tensor.reshape(dim, patch, patch, -1)  # the patch's (ph, pw, c) order, as Z-Image patchifies
    weight = weight.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2) / factor**2
    return name, weight.reshape(dim, -1)


def _outer_level_key(key: str, extra: int) -> str:
    """The HR head's name for a 1x head tensor: level l of enc/up/dec becomes level l + extra."""
    return re.sub(r"^local_decoder\.(enc|up|dec)(\d+)\.", lambda m: f"local_decoder.{m[1]}{int(m[2]) + extra}.", key)
