"""Z-Image LoRAs on the pixel model: a LoRA trained (PEFT) on the latent source applies to the pixel model's
source blocks as it does to the source, never to the blocks retrained for pixels.

On the shipped embedded pair, whose middle blocks are shared as in the release: a random tiny DiT starts with
zero adaLN gates, so its blocks (and any LoRA on them) would not change its output.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ZImagePipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from l2p import L2PPipeline

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# The adapted modules: two in the source blocks (1-4 of 6), one in block 0, which the transfer retrained.
TARGETS = ["layers.1.attention.to_q", "layers.4.feed_forward.w1", "layers.0.attention.to_k"]
RETRAINED = ["layers.0.attention.to_k"]


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory):
    """A LoRA trained for a few steps on the tiny latent source, saved in diffusers' format."""
    source = ZImagePipeline.from_pretrained(ASSETS / "tiny-source").transformer
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=True)
    source.add_adapter(config)
    trainable = [p for name, p in source.named_parameters() if "lora_" in name]
    assert trainable and all(p.requires_grad for p in trainable)
    optimizer = torch.optim.Adam(trainable, lr=5e-2)
    torch.manual_seed(0)
    channels, text_dim = source.config.in_channels, source.config.cap_feat_dim
    latents = [torch.randn(channels, 1, 16, 16) for _ in range(2)]
    captions = [torch.randn(5, text_dim) for _ in range(2)]
    target = torch.randn(2, channels, 1, 16, 16)
    source.train()
    for _ in range(4):
        output = torch.stack(source(latents, torch.full((2,), 0.5), captions, return_dict=False)[0])
        loss = torch.nn.functional.mse_loss(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("lora")
    ZImagePipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(source),
        transformer_lora_adapter_metadata=config.to_dict(),
    )
    return folder


def pixel_pipeline():
    return L2PPipeline.from_pretrained(ASSETS / "tiny-l2p")


def predict(pipe, **kwargs):
    """The pixel model's prediction on fixed inputs (images would clamp away most of a tiny LoRA's effect)."""
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 3, 128, 128, generator=generator)
    captions = [torch.randn(5, pipe.transformer.config.cap_feat_dim, generator=generator) for _ in range(2)]
    with torch.no_grad():
        return pipe.transformer(noisy, torch.full((2,), 0.3), captions, return_dict=False, **kwargs)[0].numpy()


def test_lora_applies_to_source_blocks_and_names_what_it_skips(lora_folder):
    pipe = pixel_pipeline()
    assert list(pipe.transformer.source_blocks) == [1, 2, 3, 4]
    before = predict(pipe)
    with pytest.warns(UserWarning, match="layers.0.attention.to_k"):
        skipped = pipe.load_lora_weights(lora_folder, adapter_name="toy")
    assert skipped == RETRAINED
    layers = pipe.transformer.layers
    assert hasattr(layers[1].attention.to_q, "lora_A") and hasattr(layers[4].feed_forward.w1, "lora_A")
    assert not hasattr(layers[0].attention.to_k, "lora_A")  # never wrapped, so never applied
    with_lora = predict(pipe)
    assert np.abs(with_lora - before).max() > 1e-2
    np.testing.assert_allclose(predict(pipe, joint_attention_kwargs={"scale": 0.0}), before, atol=1e-6)
    half = predict(pipe, joint_attention_kwargs={"scale": 0.5})
    assert 1e-3 < np.abs(half - before).max() < np.abs(with_lora - before).max()
    image = pipe("a red circle", height=128, width=128, num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 128, 128, 3)  # the pipeline runs with the LoRA loaded

    pipe.unload_lora_weights()
    np.testing.assert_array_equal(predict(pipe), before)

    with pytest.warns(UserWarning):
        pipe.load_lora_weights(lora_folder)
    pipe.fuse_lora()
    np.testing.assert_allclose(predict(pipe), with_lora, atol=1e-5)


def test_fused_source_blocks_equal_the_fused_latent_source(lora_folder):
    """What the LoRA does to a source block is exactly what it does to the latent model's same block."""
    names = ("layers.1.attention.to_q.weight", "layers.4.feed_forward.w1.weight")
    pixel, latent = pixel_pipeline(), ZImagePipeline.from_pretrained(ASSETS / "tiny-source")
    untouched = {name: latent.transformer.get_parameter(name).clone() for name in names}
    for name in names:  # the release shares these blocks with its source
        torch.testing.assert_close(pixel.transformer.get_parameter(name), latent.transformer.get_parameter(name), rtol=0, atol=0)
    with pytest.warns(UserWarning):
        pixel.load_lora_weights(lora_folder)
    latent.load_lora_weights(lora_folder)
    pixel.fuse_lora()
    latent.fuse_lora()
    for name in names:
        fused = name.replace(".weight", ".base_layer.weight")
        torch.testing.assert_close(pixel.transformer.get_parameter(fused), latent.transformer.get_parameter(fused), rtol=0, atol=0)
        assert not torch.equal(pixel.transformer.get_parameter(fused), untouched[name])


def test_a_lora_only_on_retrained_blocks_is_refused(lora_folder):
    pipe = pixel_pipeline()
    state = L2PPipeline.lora_state_dict(lora_folder)
    only_retrained = {key: value for key, value in state.items() if "layers.0." in key}
    with pytest.raises(ValueError, match="source blocks"):
        pipe.load_lora_weights(only_retrained)
    assert not any("lora_" in name for name, _ in pipe.transformer.named_parameters())
