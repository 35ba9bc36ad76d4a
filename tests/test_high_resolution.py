"""High-resolution variants grown from a 1x pixel model (l2p.high_resolution), at tiny scale."""

import pytest
import torch
import torch.nn.functional as F

import tiny
from l2p import L2PTransformer2DModel
from l2p.high_resolution import grow_for_high_resolution, high_resolution_channels


def test_outer_levels_halve_outwards_as_the_release_4k_head_does():
    assert high_resolution_channels([64, 128, 256, 512], 4) == [16, 32, 64, 128, 256, 512]  # the release's 4K head
    assert high_resolution_channels([64, 128, 256, 512], 8) == [8, 16, 32, 64, 128, 256, 512]
    assert high_resolution_channels([8, 16, 32, 64], 4) == [4, 4, 8, 16, 32, 64]  # never narrower than RGB needs
    with pytest.raises(ValueError, match="power of two"):
        high_resolution_channels([8, 16], 3)


def test_grown_model_starts_from_the_1x_model():
    base = tiny.pixel_transformer(seed=2, patch_size=16, trained_grid=4).eval()
    grown = grow_for_high_resolution(base, 4).eval()
    assert (grown.config.patch_size, grown.config.detailer_channels) == (64, [4, 4, 8, 8, 16, 16])
    assert grown.native_side == 4 * base.native_side
    own, theirs = grown.state_dict(), base.state_dict()
    # Every DiT tensor is the 1x model's; the head's levels move out by two.
    for key, tensor in theirs.items():
        if not key.startswith(("all_x_embedder.", "local_decoder.")):
            assert torch.equal(own[key], tensor), key
    for level in (2, 3, 4):
        assert torch.equal(own[f"local_decoder.enc{level + 2}.0.weight"], theirs[f"local_decoder.enc{level}.0.weight"])
    for level in (1, 2, 3, 4):
        assert torch.equal(own[f"local_decoder.up{level + 2}.1.weight"], theirs[f"local_decoder.up{level}.1.weight"])
    assert torch.equal(own["local_decoder.bottleneck.0.weight"], theirs["local_decoder.bottleneck.0.weight"])
    # A conv whose weights could not be copied keeps its own bias too (no half-copied layer).
    assert not torch.equal(own["local_decoder.out_conv.bias"], theirs["local_decoder.out_conv.bias"])
    # The DiT sees on a 4x image the tokens the 1x model sees on the image averaged down to its size.
    image = torch.randn(1, 3, 256, 256)

    def tokens(model, pixels, patch):
        grid = pixels.shape[-1] // patch
        patches = pixels[0].view(3, grid, patch, grid, patch).permute(1, 3, 2, 4, 0).reshape(-1, patch * patch * 3)
        return model.all_x_embedder[f"{patch}-1"](patches)

    with torch.no_grad():
        torch.testing.assert_close(tokens(grown, image, 64), tokens(base, F.avg_pool2d(image, 4), 16), rtol=1e-5, atol=1e-5)
        prediction = grown(image, torch.tensor([0.5]), [torch.randn(5, base.config.cap_feat_dim)]).sample
    assert prediction.shape == image.shape and torch.isfinite(prediction).all()


def test_grown_model_round_trips_through_its_config(tmp_path):
    base = tiny.pixel_transformer(seed=1, patch_size=16, trained_grid=4)
    grown = grow_for_high_resolution(base, 2)
    grown.save_pretrained(tmp_path)
    loaded = L2PTransformer2DModel.from_pretrained(tmp_path)
    assert (loaded.config.patch_size, loaded.config.detailer_channels) == (32, [4, 8, 8, 16, 16])
    assert all(torch.equal(loaded.state_dict()[key], tensor) for key, tensor in grown.state_dict().items())


def test_head_widths_must_extend_the_1x_head():
    base = tiny.pixel_transformer(patch_size=16, trained_grid=4)
    with pytest.raises(ValueError, match="outer level"):
        grow_for_high_resolution(base, 4, detailer_channels=[4, 4, 8, 8, 8, 16])
    with pytest.raises(ValueError, match="power of two"):
        grow_for_high_resolution(base, 3)
