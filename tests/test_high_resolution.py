"""High-resolution variants grown from a 1x pixel model (l2p.high_resolution), at tiny scale."""

import pytest
import torch
import torch.nn.functional as F

import tiny
from l2p import L2PTransformer2DModel
from l2p.high_resolution import grow_for_high_resolution, high_resolution_channels
from l2p.transformer_l2p import dit_noise_level


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


def test_grown_dit_runs_at_the_noise_level_the_averaged_patch_has():
    """Averaging 4x4 pixels divides their noise by 4: the grown model's first block gives, on a noisy 4x image, the
    1x model's tokens for the image averaged down and noised at the lower level dit_noise_level names."""
    base = tiny.pixel_transformer(seed=3, patch_size=16, trained_grid=4).eval()
    grown = grow_for_high_resolution(base, 4).eval()
    assert (base.config.noise_pooling, grown.config.noise_pooling) == (1, 4)
    generator = torch.Generator().manual_seed(0)
    small = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    image = F.interpolate(small, scale_factor=4, mode="nearest")  # averages back down to `small` exactly
    noise = torch.randn(image.shape, generator=generator)
    sigma = torch.tensor([0.9, 0.3])
    dit_sigma, scale = dit_noise_level(sigma, 4)
    torch.testing.assert_close(4 * dit_sigma / (1 + 3 * dit_sigma), sigma)  # the inverse of the timestep shift by 4
    assert dit_noise_level(torch.tensor([1.0]), 4) == (torch.tensor([1.0]), torch.tensor([4.0]))
    captions = [torch.randn(5, base.config.cap_feat_dim, generator=generator) for _ in range(2)]
    tokens = {}
    for name, model in (("grown", grown), ("base", base)):
        model.layers[0].register_forward_hook(lambda module, inputs, output, name=name: tokens.__setitem__(name, output))
    s, d = sigma.view(-1, 1, 1, 1), dit_sigma.view(-1, 1, 1, 1)
    with torch.no_grad():
        grown((1 - s) * image + s * noise, 1 - sigma, captions)
        base((1 - d) * small + d * F.avg_pool2d(noise, 4) * 4, 1 - dit_sigma, captions)
    torch.testing.assert_close(tokens["grown"], tokens["base"], rtol=1e-4, atol=1e-4)


def test_grown_model_round_trips_through_its_config(tmp_path):
    base = tiny.pixel_transformer(seed=1, patch_size=16, trained_grid=4)
    grown = grow_for_high_resolution(base, 2)
    grown.save_pretrained(tmp_path)
    loaded = L2PTransformer2DModel.from_pretrained(tmp_path)
    assert (loaded.config.patch_size, loaded.config.detailer_channels, loaded.config.noise_pooling) == (32, [4, 8, 8, 16, 16], 2)
    assert all(torch.equal(loaded.state_dict()[key], tensor) for key, tensor in grown.state_dict().items())


def test_head_widths_must_extend_the_1x_head():
    base = tiny.pixel_transformer(patch_size=16, trained_grid=4)
    with pytest.raises(ValueError, match="outer level"):
        grow_for_high_resolution(base, 4, detailer_channels=[4, 4, 8, 8, 8, 16])
    with pytest.raises(ValueError, match="power of two"):
        grow_for_high_resolution(base, 3)
