"""Low-memory paths give the images they would without them."""

from pathlib import Path

import numpy as np
import torch

from l2p import L2PPipeline

EMBEDDED = Path(__file__).resolve().parent.parent / "assets" / "tiny-l2p"


def generate(pipe):
    return pipe("a red circle left of a blue square", height=128, width=128, num_inference_steps=3, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def test_model_cpu_offload_gives_the_same_images():
    """diffusers' hooks move each component to the execution device only while it runs (here the CPU itself:
    what is tested is that the hooks and the pipeline's `model_cpu_offload_seq` leave the result unchanged)."""
    pipe = L2PPipeline.from_pretrained(EMBEDDED)
    reference = generate(pipe)
    pipe.enable_model_cpu_offload(device="cpu")
    assert all(hasattr(component, "_hf_hook") for component in (pipe.text_encoder, pipe.transformer))
    np.testing.assert_array_equal(generate(pipe), reference)
    np.testing.assert_array_equal(generate(pipe), reference)  # and again, after the hooks offloaded everything


def test_detailer_tiling_and_bf16_stay_close():
    pipe = L2PPipeline.from_pretrained(EMBEDDED)
    reference = generate(pipe)
    pipe.transformer.enable_detailer_tiling(64)
    np.testing.assert_allclose(generate(pipe), reference, atol=2e-5)
    pipe.transformer.disable_detailer_tiling()
    pipe.to(torch.bfloat16)
    assert np.abs(generate(pipe) - reference).mean() < 0.05
