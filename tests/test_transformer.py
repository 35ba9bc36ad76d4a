"""L2PTransformer2DModel: the release layout, construction from a latent source, freezing, any size."""

import pytest
import torch
from accelerate import init_empty_weights

import tiny
from l2p import L2PTransformer2DModel, freeze_for_transfer
from l2p.transfer import PARTS

RELEASE_HEAD_SHAPES = {
    "enc1.0": (64, 3, 3, 3), "enc2.0": (128, 64, 3, 3), "enc3.0": (256, 128, 3, 3), "enc4.0": (512, 256, 3, 3),
    "bottleneck.0": (512, 4352, 1, 1), "out_conv": (3, 64, 1, 1),
    "up4.1": (512, 512, 3, 3), "dec4.0": (256, 1024, 3, 3), "up3.1": (256, 256, 3, 3), "dec3.0": (128, 512, 3, 3),
    "up2.1": (128, 128, 3, 3), "dec2.0": (64, 256, 3, 3), "up1.1": (64, 64, 3, 3), "dec1.0": (64, 128, 3, 3),
}


def full_size_models():
    from diffusers import ZImageTransformer2DModel

    with init_empty_weights():
        return ZImageTransformer2DModel(), L2PTransformer2DModel()


def test_full_size_state_dict_is_the_release_layout():
    source, pixel = full_size_models()
    pixel_state, source_state = pixel.state_dict(), source.state_dict()
    assert len(pixel_state) == 545
    # The release = diffusers' default Z-Image minus the final layer, with an RGB embedder and the head.
    expected = {k: tuple(v.shape) for k, v in source_state.items() if not k.startswith(("all_final_layer", "all_x_embedder"))}
    expected["all_x_embedder.16-1.weight"] = (3840, 768)
    expected["all_x_embedder.16-1.bias"] = (3840,)
    for name, shape in RELEASE_HEAD_SHAPES.items():
        expected[f"local_decoder.{name}.weight"] = shape
        expected[f"local_decoder.{name}.bias"] = (shape[0],)
    assert {k: tuple(v.shape) for k, v in pixel_state.items()} == expected
    total = sum(p.numel() for p in pixel.parameters())
    assert abs(total / 1e9 - 6.17) < 0.01


def test_trainable_counts_for_both_policies_at_full_size():
    _, pixel = full_size_models()
    total = sum(p.numel() for p in pixel.parameters())
    release = freeze_for_transfer(pixel, n_shallow=5, policy="release")
    # Reference: about 2.55B of 6.17B (41%) train in the release.
    assert abs(release / 1e9 - 2.55) < 0.01 and abs(release / total - 0.41) < 0.01
    frozen_middle = sum(p.numel() for block in pixel.layers[5:25] for p in block.parameters())
    assert release == total - frozen_middle
    paper = freeze_for_transfer(pixel, n_shallow=5, policy="paper")
    block = sum(p.numel() for p in pixel.layers[0].parameters())
    embedder = sum(p.numel() for p in pixel.all_x_embedder.parameters())
    head = sum(p.numel() for p in pixel.local_decoder.parameters())
    assert paper == 10 * block + embedder + head
    assert 9e6 < head < 13e6  # "about 10M parameters"


def test_freeze_rejects_bad_arguments():
    model = tiny.pixel_transformer()
    with pytest.raises(ValueError, match="n_shallow=3 is too large for a model of 4 blocks"):
        freeze_for_transfer(model, n_shallow=3)
    with pytest.raises(ValueError, match="unknown freeze policy"):
        freeze_for_transfer(model, policy="everything")
    assert freeze_for_transfer(model, n_shallow=2) == sum(p.numel() for p in model.parameters())


def test_also_frozen_parts_stop_training_on_top_of_either_policy():
    model = tiny.pixel_transformer()
    parts = [name for name, _ in model.named_children() if name != "layers"]
    assert sorted(PARTS) == sorted(parts + [name for name, _ in model.named_parameters(recurse=False)])
    text_and_time = ["cap_embedder", "context_refiner", "cap_pad_token", "t_embedder"]
    release = freeze_for_transfer(model, n_shallow=1)
    fewer = freeze_for_transfer(model, n_shallow=1, also_frozen=text_and_time)
    in_parts = [p for name, p in model.named_parameters() if name.split(".")[0] in text_and_time]
    assert release - fewer == sum(p.numel() for p in in_parts)
    assert not any(p.requires_grad for p in in_parts)
    assert all(p.requires_grad for p in model.noise_refiner.parameters())  # the rest of the policy stands
    paper = freeze_for_transfer(model, n_shallow=1, policy="paper", also_frozen=["local_decoder"])
    assert not any(p.requires_grad for p in model.local_decoder.parameters()) and paper > 0
    with pytest.raises(ValueError, match=r"cannot freeze \['layers'\]"):
        freeze_for_transfer(model, also_frozen=["layers"])


def test_from_source_copies_matching_tensors_exactly_and_initialises_the_rest():
    source = tiny.source_transformer(seed=3)
    pixel = L2PTransformer2DModel.from_source(source, patch_size=16, detailer_channels=(8, 8, 16, 16), trained_grid=16)
    source_state, pixel_state = source.state_dict(), pixel.state_dict()
    copied = [k for k in pixel_state if k in source_state]
    assert len(copied) == len(pixel_state) - 2 - 28  # all but the RGB embedder and the head's 28 tensors
    for key in copied:
        assert torch.equal(pixel_state[key], source_state[key]), key
    assert pixel.all_x_embedder["16-1"].weight.shape == (64, 768)
    assert pixel.config.dim == source.config.dim and pixel.config.n_layers == source.config.n_layers


def test_frozen_blocks_do_not_move_in_an_optimizer_step():
    torch.manual_seed(0)
    model = tiny.pixel_transformer().train()
    trainable = freeze_for_transfer(model, n_shallow=1, policy="release")
    assert trainable == sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for block in model.layers[1:3] for p in block.parameters()
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    image = torch.randn(1, 3, 32, 48)
    out = model(image, torch.tensor([0.3]), [torch.randn(5, tiny.TEXT_DIM)]).sample
    out.square().mean().backward()
    optimizer.step()
    after = model.state_dict()
    for key in before:
        moved = not torch.equal(before[key], after[key])
        middle = key.startswith(("layers.1.", "layers.2."))
        if middle:
            assert not moved, key
    assert not torch.equal(before["local_decoder.out_conv.weight"], after["local_decoder.out_conv.weight"])
    assert not torch.equal(before["layers.0.feed_forward.w1.weight"], after["layers.0.feed_forward.w1.weight"])


@pytest.mark.parametrize("height,width", [(272, 400), (16, 16), (48, 176)])
def test_any_multiple_of_the_patch_works_and_batching_is_exact(height, width):
    """Token counts that are not multiples of 32, in a batch with captions of different lengths, give the
    same prediction as each item alone: padding and masks never leak into the image."""
    model = tiny.pixel_transformer(seed=1)
    torch.manual_seed(0)
    images = torch.randn(2, 3, height, width)
    t = torch.tensor([0.2, 0.7])
    captions = [torch.randn(7, tiny.TEXT_DIM), torch.randn(40, tiny.TEXT_DIM)]
    with torch.no_grad():
        batched = model(images, t, captions).sample
        alone = [model(images[i : i + 1], t[i : i + 1], [captions[i]]).sample for i in range(2)]
    assert batched.shape == (2, 3, height, width)
    for i in range(2):
        torch.testing.assert_close(batched[i : i + 1], alone[i], atol=2e-5, rtol=1e-4)


def test_sizes_off_the_patch_grid_name_the_nearest_valid_ones():
    model = tiny.pixel_transformer()
    with pytest.raises(ValueError, match=r"height 100 is not a multiple of 16 \(nearest valid: 96 or 112\)"):
        model(torch.randn(1, 3, 100, 64), torch.tensor([0.5]), [torch.randn(3, tiny.TEXT_DIM)])


def test_patch_size_must_pool_evenly_in_the_head():
    with pytest.raises(ValueError, match="multiple of 2\\*\\*len\\(detailer_channels\\)"):
        L2PTransformer2DModel(patch_size=8, detailer_channels=(8, 8, 8, 8), **tiny.DIT)


def test_detailer_tiling_through_the_model_gives_the_same_prediction():
    model = tiny.pixel_transformer(seed=2)
    images, t, captions = torch.randn(1, 3, 96, 160), torch.tensor([0.4]), [torch.randn(6, tiny.TEXT_DIM)]
    with torch.no_grad():
        whole = model(images, t, captions).sample
        model.enable_detailer_tiling(64)
        tiled = model(images, t, captions).sample
        model.disable_detailer_tiling()
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-4)


def test_sample_prediction_returns_the_heads_clean_image_as_x0_minus_noise():
    """With prediction_type "sample" the head's output is x0: the model returns (x0 - x_t) / sigma (sigma floored
    at 0.05), so x_t + sigma * output, the one-step estimate the sampler and the previews use, is the head's
    image; the same weights as "velocity" return the head's output unchanged. A saved config keeps the choice."""
    velocity = tiny.pixel_transformer(seed=3)
    sample = tiny.pixel_transformer(seed=3, prediction_type="sample")
    torch.manual_seed(0)
    x_t, captions = torch.randn(3, 3, 32, 48), [torch.randn(5, tiny.TEXT_DIM) for _ in range(3)]
    sigma = torch.tensor([0.9, 0.3, 0.01])
    with torch.no_grad():
        head = velocity(x_t, 1 - sigma, captions).sample
        out = sample(x_t, 1 - sigma, captions).sample
    floored = sigma.clamp(min=0.05).view(-1, 1, 1, 1)
    torch.testing.assert_close(out, (head - x_t) / floored, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((x_t + floored * out)[:2], head[:2], atol=1e-5, rtol=1e-5)
    assert L2PTransformer2DModel.from_config(sample.config).config.prediction_type == "sample"
    with pytest.raises(ValueError, match="prediction_type 'epsilon' is not one of"):
        tiny.pixel_transformer(prediction_type="epsilon")


def test_blend_prediction_makes_the_heads_output_x0_minus_sigma_noise():
    """With prediction_type "blend" the head's output means x0 - sigma * noise: for a head that outputs exactly that
    for a known x0 and noise, the model returns x0 - noise (the velocity target) at every sigma above the floor."""
    velocity = tiny.pixel_transformer(seed=3)
    blend = tiny.pixel_transformer(seed=3, prediction_type="blend")
    torch.manual_seed(0)
    x0, noise, captions = torch.randn(3, 3, 32, 48), torch.randn(3, 3, 32, 48), [torch.randn(5, tiny.TEXT_DIM) for _ in range(3)]
    sigma = torch.tensor([1.0, 0.5, 0.1]).view(-1, 1, 1, 1)
    x_t = (1 - sigma) * x0 + sigma * noise
    with torch.no_grad():
        head = velocity(x_t, 1 - sigma.flatten(), captions).sample
        out = blend(x_t, 1 - sigma.flatten(), captions).sample
    torch.testing.assert_close(out, ((head + x_t) / (2 - sigma) - x_t) / sigma, atol=1e-4, rtol=1e-4)
    # The head's ideal output for this x0 and noise, put in by hand: the model then returns the velocity target.
    blend.local_decoder.forward = lambda image, features: x0 - sigma * noise
    with torch.no_grad():
        torch.testing.assert_close(blend(x_t, 1 - sigma.flatten(), captions).sample, x0 - noise, atol=1e-4, rtol=1e-4)
