"""L2PPipeline on tiny components: determinism, round trips, sizes, batches, guidance, previews."""

import numpy as np
import pytest
import torch
from PIL import Image

import tiny
from l2p import L2PPipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny.pixel_pipeline(seed=0)


def run(pipe, prompt="a red circle", seed=0, **kwargs):
    kwargs = {"height": 64, "width": 64, "num_inference_steps": 3, "output_type": "np", **kwargs}
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_same_seed_same_pixels_and_other_seed_other_pixels(pipe):
    first, again, other = run(pipe, seed=1), run(pipe, seed=1), run(pipe, seed=2)
    assert first.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_save_pretrained_from_pretrained_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert not list(tmp_path.rglob("*.bin")) and list(tmp_path.rglob("*.safetensors"))
    loaded = L2PPipeline.from_pretrained(tmp_path)
    assert type(loaded.transformer).__name__ == "L2PTransformer2DModel"
    assert loaded.transformer.config.trained_grid == pipe.transformer.config.trained_grid
    np.testing.assert_array_equal(run(loaded, seed=5), run(pipe, seed=5))


def test_non_square_odd_token_count_and_batch_of_two_prompts(pipe):
    images = pipe(
        ["a red circle", "two blue squares on a gray background"], height=272, width=400, num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    ).images
    assert [image.size for image in images] == [(400, 272), (400, 272)]
    assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images)


def test_batch_items_equal_single_runs(pipe):
    """Prompts of different lengths in one batch give the images each prompt gives alone."""
    prompts = ["a circle", "a purple triangle above a yellow square on a black background"]
    noise = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(3))
    batched = pipe(prompts, height=48, width=80, num_inference_steps=2, latents=noise, output_type="pt").images
    for i, prompt in enumerate(prompts):
        alone = pipe(prompt, height=48, width=80, num_inference_steps=2, latents=noise[i : i + 1], output_type="pt").images
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-4, rtol=1e-4)


def test_guidance_on_and_off(pipe):
    calls = []
    original = pipe.transformer.forward

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return original(*args, **kwargs)

    pipe.transformer.forward = counting
    try:
        run(pipe, guidance_scale=1.0, num_inference_steps=2)
        run(pipe, guidance_scale=4.0, num_inference_steps=2, negative_prompt="a blue square")
    finally:
        del pipe.transformer.forward
    assert calls == [1, 1, 2, 2]  # without guidance one forward of batch 1; with it, cond + uncond together


def test_guidance_is_negative_plus_scale_times_difference(pipe):
    """One Euler step from sigma 1 to 0 lands on noise + prediction, so the CFG arithmetic is visible."""
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = pipe("a red circle", negative_prompt="a blue square", height=32, width=32, num_inference_steps=1,
               guidance_scale=3.0, latents=noise, output_type="pt").images
    positive, negative = pipe.encode_prompt(["a red circle"], negative_prompt=["a blue square"], device="cpu")
    t = torch.zeros(1)  # the DiT's clock: 0 = pure noise
    with torch.no_grad():
        pos = pipe.transformer(noise, t, positive).sample
        neg = pipe.transformer(noise, t, negative).sample
    expected = ((noise + neg + 3.0 * (pos - neg)).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert not torch.equal(pos, neg)


def test_output_types(pipe):
    pt = run(pipe, output_type="pt")
    np_images = run(pipe, output_type="np")
    pil = run(pipe, output_type="pil")
    assert pt.shape == (1, 3, 64, 64) and 0 <= pt.min() and pt.max() <= 1
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), np_images, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(pil[0]), (np_images[0] * 255).round().astype(np.uint8))
    with pytest.raises(ValueError, match="output_type must be one of"):
        run(pipe, output_type="latent")


def test_x0_callback_sees_one_image_per_step(pipe):
    seen = []

    def preview(pipeline, step, timestep, callback_kwargs):
        seen.append((step, callback_kwargs["x0"].clone()))
        return {}

    final = run(pipe, num_inference_steps=4, height=48, width=80, output_type="pt",
                callback_on_step_end=preview, callback_on_step_end_tensor_inputs=["x0"])
    assert [step for step, _ in seen] == [0, 1, 2, 3]
    for _, x0 in seen:
        assert x0.shape == (1, 3, 48, 80) and x0.min() >= -1 and x0.max() <= 1
    # The last step lands exactly on its own x0 estimate.
    torch.testing.assert_close(final, (seen[-1][1] + 1) / 2, atol=1e-6, rtol=0)


def test_interrupt_returns_the_current_estimate(pipe):
    steps = []

    def stop_after_two(pipeline, step, timestep, callback_kwargs):
        steps.append(step)
        if step == 1:
            pipeline._interrupt = True
        return {}

    image = run(pipe, num_inference_steps=10, callback_on_step_end=stop_after_two)
    assert steps == [0, 1] and image.shape == (1, 64, 64, 3)


def test_bad_inputs_raise_clear_errors(pipe):
    with pytest.raises(ValueError, match="nearest valid: 64 or 80"):
        run(pipe, width=70)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
        run(pipe, num_inference_steps=0)
    with pytest.raises(ValueError, match="not among"):
        run(pipe, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"])
    with pytest.raises(ValueError, match="pass a prompt"):
        pipe(None)


def test_precomputed_embeddings_give_the_same_image(pipe):
    positive, negative = pipe.encode_prompt(["a red circle"], negative_prompt=["a blue square"], device="cpu")
    direct = run(pipe, negative_prompt="a blue square", guidance_scale=3.0)
    embedded = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, guidance_scale=3.0, height=64, width=64,
                    num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(direct, embedded)
    with pytest.raises(ValueError, match="needs negative_prompt_embeds"):
        pipe(prompt_embeds=positive, guidance_scale=3.0, height=64, width=64)
