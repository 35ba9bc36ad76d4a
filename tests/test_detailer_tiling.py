"""The Detailer Head run in overlapping tiles gives the untiled result (within float tolerance)."""

import pytest
import torch

import tiny
from l2p import DetailerHead


FEATURE_DIM = 12


def _head(channels=(4, 8, 8, 16), seed=0):
    torch.manual_seed(seed)
    return DetailerHead(FEATURE_DIM, channels).eval()


def _inputs(head, height, width, feature_grid=None, batch=1, seed=1):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, height, width, generator=generator)
    grid = feature_grid or head.downsampling
    features = torch.randn(batch, FEATURE_DIM, height // grid, width // grid, generator=generator)
    return image, features


@pytest.mark.parametrize(
    "height, width, tile",
    [
        (96, 160, 32),  # non-square, several tiles each way, sides not multiples of the tile
        (96, 160, 48),
        (112, 80, 64),
        (128, 128, 16),  # tiles as small as the pooling grid
        (64, 192, 112),  # one tile high, two wide
    ],
)
def test_tiled_equals_untiled(height, width, tile):
    head = _head()
    image, features = _inputs(head, height, width)
    with torch.no_grad():
        whole = head(image, features)
        tiled = head(image, features, tile_size=tile)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_tiling_attribute_and_feature_resize():
    # A patch-32 feature map on a 4-level head (grid 16) is nearest-resized, before tiling as without it.
    head = _head()
    image, _ = _inputs(head, 96, 128)
    features = torch.randn(2, 12, 3, 4)
    image = image.expand(2, -1, -1, -1).contiguous()
    with torch.no_grad():
        whole = head(image, features)
        head.enable_tiling(32)
        tiled = head(image, features)
        head.disable_tiling()
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_halo_is_needed_and_sufficient():
    """The receptive radius is exact enough: a tile computed without a halo differs, with it it matches."""
    head = _head(channels=(4, 4, 4))  # grid 8, radius 28, halo 32
    assert head.receptive_radius == 28 and head.tile_halo == 32
    image, features = _inputs(head, 128, 128)
    with torch.no_grad():
        whole = head(image, features)
        inner = head(image[..., 32:96, 32:96], features[..., 4:12, 4:12])
    assert not torch.allclose(inner[..., 8:-8, 8:-8], whole[..., 40:88, 40:88], atol=1e-5)
    # The radius bounds what an output pixel sees: changing input pixels further away changes nothing.
    y = x = 64
    changed = image.clone()
    changed[..., :, : x - head.receptive_radius - 1] += 1.0
    changed[..., : y - head.receptive_radius - 1, :] += 1.0
    with torch.no_grad():
        out = head(changed, features)
    torch.testing.assert_close(out[..., y, x], whole[..., y, x], rtol=1e-6, atol=1e-6)


def test_bad_tile_sizes_are_rejected():
    head = _head()
    image, features = _inputs(head, 64, 64)
    with pytest.raises(ValueError, match="multiple"):
        head(image, features, tile_size=24)
    with pytest.raises(ValueError, match="multiple"):
        head.enable_tiling(0)


def test_tiled_head_inside_the_pixel_transformer():
    model = tiny.pixel_transformer()
    torch.manual_seed(2)
    x = torch.randn(1, 3, 96, 144)
    t = torch.tensor([0.3])
    captions = [torch.randn(5, tiny.TEXT_DIM)]
    with torch.no_grad():
        whole = model(x, t, captions).sample
        model.local_decoder.enable_tiling(32)
        tiled = model(x, t, captions).sample
        model.local_decoder.disable_tiling()
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
