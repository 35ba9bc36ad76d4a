"""The arguments L2PPipeline shares with ZImagePipeline: each changes what it should, and nothing else.

On the shipped embedded pixel model: a random tiny one barely listens to its prompt, so guidance settings would
not show (its guided and unguided images differ by 1e-5).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

from l2p import L2PPipeline

STEPS = 3
EMBEDDED = Path(__file__).resolve().parent.parent / "assets" / "tiny-l2p"


@pytest.fixture(scope="module")
def pipe():
    return L2PPipeline.from_pretrained(EMBEDDED)


def run(pipe, prompt="a red circle", **kwargs):
    kwargs = {"height": 128, "width": 128, "num_inference_steps": STEPS, "output_type": "np", "guidance_scale": 3.0, **kwargs}
    return pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images


def differs(first, second):
    return np.abs(first - second).max() > 1e-4


def test_explicit_default_sigmas_equal_the_default_and_others_change_the_image(pipe):
    default = run(pipe)
    np.testing.assert_array_equal(run(pipe, sigmas=get_default_z_image_sigmas(STEPS)), default)
    assert differs(run(pipe, sigmas=[1.0, 0.5, 0.1]), default)
    with pytest.raises(ValueError, match="sigmas"):
        run(pipe, sigmas=[0.2, 0.9])


def test_shift_for_one_call(pipe):
    default = run(pipe)
    np.testing.assert_array_equal(run(pipe, shift=3.0), default)  # the scheduler's own
    assert differs(run(pipe, shift=1.0), default)
    assert pipe.scheduler.config.shift == 3.0  # the call did not change the pipeline
    np.testing.assert_array_equal(run(pipe), default)
    with pytest.raises(ValueError, match="shift"):
        run(pipe, shift=0)


def test_cfg_truncation_switches_guidance_off_at_the_steps_past_it(pipe):
    default = run(pipe)
    np.testing.assert_array_equal(run(pipe, cfg_truncation=1.0), default)
    # Past every step's normalised time: no guidance anywhere, as guidance_scale 1.
    np.testing.assert_array_equal(run(pipe, cfg_truncation=-1.0), run(pipe, guidance_scale=1.0))
    # Guided only on the first step (normalised time 0).
    partly = run(pipe, cfg_truncation=0.0)
    assert differs(partly, default) and differs(partly, run(pipe, guidance_scale=1.0))


def test_cfg_start_switches_guidance_off_at_the_noisiest_steps(pipe):
    default = run(pipe)
    np.testing.assert_array_equal(run(pipe, cfg_start=0.0), default)
    # Past every step's normalised time (the last of 3 steps is at 1 - sigma < 1): no guidance, as guidance_scale 1.
    np.testing.assert_array_equal(run(pipe, cfg_start=1.0), run(pipe, guidance_scale=1.0))
    # The first step (normalised time 0) unguided, the rest guided: neither of the two.
    later = run(pipe, cfg_start=0.01)
    assert differs(later, default) and differs(later, run(pipe, guidance_scale=1.0))
    # With cfg_truncation: guided only between the two, so an empty interval guides nothing.
    np.testing.assert_array_equal(run(pipe, cfg_start=0.5, cfg_truncation=0.4), run(pipe, guidance_scale=1.0))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="cfg_start"):
            run(pipe, cfg_start=bad)


def test_cfg_normalization_caps_the_guided_norm(pipe):
    strong = run(pipe, guidance_scale=8.0)
    np.testing.assert_array_equal(run(pipe, guidance_scale=8.0, cfg_normalization=1e6), strong)
    assert differs(run(pipe, guidance_scale=8.0, cfg_normalization=True), strong)


def test_max_sequence_length_cuts_the_prompt(pipe):
    prompt = "a red circle left of a blue square on a gray background"
    full = run(pipe, prompt)
    assert differs(run(pipe, prompt, max_sequence_length=4), full)
    np.testing.assert_array_equal(run(pipe, prompt, max_sequence_length=512), full)


def test_joint_attention_kwargs_backend_and_keys(pipe):
    default = run(pipe)
    np.testing.assert_allclose(run(pipe, joint_attention_kwargs={"attention_backend": "_native_math"}), default, atol=1e-5)
    # The backend reaches diffusers' dispatcher, which names what it needs.
    with pytest.raises((RuntimeError, ImportError, ValueError), match="(?i)flash"):
        run(pipe, joint_attention_kwargs={"attention_backend": "flash"})
    with pytest.raises(ValueError, match="not among"):
        run(pipe, joint_attention_kwargs={"backend": "native"})
    np.testing.assert_array_equal(run(pipe), default)  # a failed call leaves the default backend


def test_rope_scaling_parameters_reach_the_strategy(pipe):
    large = {"height": 256, "width": 256, "num_inference_steps": 2}  # past the trained 8 x 8 tokens
    dype = run(pipe, rope_scaling="dype", **large)
    np.testing.assert_array_equal(run(pipe, rope_scaling={"strategy": "dype"}, **large), dype)
    assert differs(run(pipe, rope_scaling={"strategy": "dype", "dype_lambda_s": 0.5}, **large), dype)
    yarn = run(pipe, rope_scaling="yarn", **large)
    assert differs(run(pipe, rope_scaling={"strategy": "yarn", "beta_fast": 4.0}, **large), yarn)
