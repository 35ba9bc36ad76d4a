"""RoPE past the trained grid and past Z-Image's table, for the pixel model and the stock source pipeline."""

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_z_image import RopeEmbedder

import tiny
from l2p import RopeScaling, RotaryPositions, rope_scaling
from l2p.rope import STRATEGIES


def grid_ids(h, w, offset=33):
    hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([torch.full_like(hh, offset), hh, ww], dim=-1).reshape(-1, 3)


def test_plain_positions_equal_diffusers_table_inside_it():
    table = RopeEmbedder(theta=256.0, axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512])
    ids = torch.cat([grid_ids(64, 64), torch.tensor([[5, 0, 0], [0, 511, 511]])])
    assert torch.equal(RotaryPositions(256.0, [32, 48, 48])(ids), table(ids))


def test_plain_positions_extend_past_the_table():
    ids = grid_ids(2, 700)  # 700 tokens wide: past the 512-entry table, which would index out of range
    with pytest.raises(IndexError):
        RopeEmbedder(theta=256.0, axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512])(ids)
    freqs = RotaryPositions(256.0, [32, 48, 48])(ids)
    assert freqs.shape == (1400, 64) and torch.isfinite(torch.view_as_real(freqs)).all()


def test_strategies_leave_the_trained_grid_alone_and_change_larger_grids():
    inside, outside = grid_ids(16, 16), grid_ids(32, 32)
    plain = RotaryPositions(256.0, [8, 12, 12])
    for strategy in ["pi", "ntk", "yarn", "dype"]:
        scaled = RotaryPositions(256.0, [8, 12, 12], RopeScaling(strategy, trained_grid=16))
        assert torch.equal(scaled(inside), plain(inside)), strategy
        assert not torch.allclose(scaled(outside), plain(outside)), strategy


def test_pi_maps_a_doubled_grid_onto_the_trained_positions():
    pi = RotaryPositions(256.0, [8, 12, 12], RopeScaling("pi", trained_grid=16))
    plain = RotaryPositions(256.0, [8, 12, 12])
    # Position 2k on a 32-grid under PI equals position k on the trained 16-grid.
    big, small = pi(grid_ids(32, 32)).reshape(32, 32, -1), plain(grid_ids(16, 16)).reshape(16, 16, -1)
    torch.testing.assert_close(big[::2, ::2], small)


def test_isotropic_scaling_on_non_square_grids():
    scaled = RotaryPositions(256.0, [8, 12, 12], RopeScaling("pi", trained_grid=16))
    wide = scaled(grid_ids(16, 64)).reshape(16, 64, -1)
    # One scale (from the longer side) for both axes: height positions are compressed as much as width.
    angle_h = torch.angle(wide[1, 0, 4:10]) - torch.angle(wide[0, 0, 4:10])
    angle_w = torch.angle(wide[0, 1, 10:16]) - torch.angle(wide[0, 0, 10:16])
    torch.testing.assert_close(angle_h, angle_w)


def test_dype_relaxes_to_the_trained_frequencies_at_the_clean_end():
    dype = RotaryPositions(256.0, [8, 12, 12], RopeScaling("dype", trained_grid=16))
    yarn = RotaryPositions(256.0, [8, 12, 12], RopeScaling("yarn", trained_grid=16))
    plain = RotaryPositions(256.0, [8, 12, 12])
    ids = grid_ids(64, 64)
    dype.sigma = 1.0
    torch.testing.assert_close(dype(ids), yarn(ids))
    dype.sigma = 0.0  # no division by zero at t = 0: exactly the plain rotations
    assert torch.equal(dype(ids), plain(ids))


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown RoPE strategy 'linear'"):
        RopeScaling("linear")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("factor", [2, 4])
def test_pixel_pipeline_is_finite_past_the_trained_grid(strategy, factor):
    pipe = tiny.pixel_pipeline()
    size = 16 * 16 * factor  # trained grid is 16 tokens at patch 16
    image = pipe("a red circle", height=size, width=size // 2, num_inference_steps=2, output_type="pt",
                 rope_scaling=strategy, generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, size, size // 2) and torch.isfinite(image).all()


def test_plain_strategy_past_the_rope_table_does_not_crash():
    model = tiny.pixel_transformer()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 16 * 600), torch.tensor([0.5]), [torch.randn(4, tiny.TEXT_DIM)]).sample
    assert out.shape == (1, 3, 16, 9600) and torch.isfinite(out).all()


def test_source_zimage_pipeline_runs_with_a_strategy_and_is_restored():
    source = tiny.source_pipeline()
    original = source.transformer.rope_embedder
    kwargs = dict(height=512, width=256, num_inference_steps=2, guidance_scale=0.0, output_type="np")
    plain = source("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    with rope_scaling(source.transformer, "yarn", trained_grid=16) as scaled:
        stretched = source("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
        assert source.transformer.rope_embedder is scaled
    assert source.transformer.rope_embedder is original and not source.transformer._forward_pre_hooks
    assert np.isfinite(stretched).all() and np.abs(stretched - plain).max() > 0
    again = source("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_array_equal(again, plain)


def test_dype_follows_the_denoising_time_through_the_hook():
    source = tiny.source_pipeline()
    sigmas = []
    with rope_scaling(source.transformer, "dype", trained_grid=16) as scaled:

        def recording(ids):
            sigmas.append(scaled.sigma)
            return scaled(ids)

        source.transformer.rope_embedder = recording  # the context manager restores the original after
        source("a red circle", height=512, width=512, num_inference_steps=3, guidance_scale=0.0, output_type="np")
    assert sigmas[0] == pytest.approx(1.0) and sigmas[-1] < sigmas[0]
