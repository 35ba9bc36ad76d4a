"""The shipped tiny models (assets/) draw what simple prompts say: a smoke test of their quality, so that a
regression in the assets (or in the code that runs them) fails here. Each pipeline runs as its sampling.json says."""

import json
from pathlib import Path

import pytest
import torch

from l2p.demo.service import TOY_EXAMPLES
from l2p.high_resolution import grow_for_high_resolution
from l2p.sampling import read_sampling
from l2p.toyworld import COLORS, detect, parse_prompt
from l2p.toyworld.grammar import FORMS
from training.evaluate import load_pipeline

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# (prompt, seed): simple prompts of the grammar, each naming a background and a colour.
CASES = [
    ("a red circle on a white background", 0),
    ("a blue square on a black background", 1),
    ("a yellow triangle on a gray background", 2),
    ("a green circle on a black background", 3),
    ("a purple square on a gray background", 4),
    ("an orange triangle on a white background", 5),
]

# How many of CASES must also hold an object of the named colour: what the shipped models do now (the source all
# six; the pixel model four, the blue square, green circle, purple square and orange triangle, drawing the red
# circle and yellow triangle orange: docs/results.md; its colour binding is checked in test_prompt_binding.py),
# less one for the pixel model, whose hits sit nearer the colour boundaries, against another CPU's rounding.
# The previous pixel model drew only orange and blue (1 of 6). Raise these when better assets land.
COLOUR_HITS_AT_LEAST = {"tiny-source": 6, "tiny-l2p": 3}
# How many of CASES may show another background: none for the source; one for the pixel model, whose sampling.json
# leaves guidance off for its first steps (cfg_start). That halves its empty canvases but lets about 1 in 90 of its
# named backgrounds go otherwise on validation prompts (1.0 on the held-out ones), here the green circle's black
# (docs/results.md, "Guidance at the first steps empties the canvas").
WRONG_BACKGROUNDS_AT_MOST = {"tiny-source": 0, "tiny-l2p": 1}


@pytest.fixture(scope="module", params=["tiny-source", "tiny-l2p"])
def embedded(request):
    folder = ASSETS / request.param
    settings = read_sampling(folder)
    assert settings is not None, f"{folder} has no sampling.json"
    return request.param, load_pipeline(folder), settings


def test_every_toy_example_is_a_sentence_of_the_grammar():
    for prompt in TOY_EXAMPLES:
        assert parse_prompt(prompt).category in FORMS  # parse_prompt raises on anything the models never saw


def test_embedded_models_draw_the_named_background_and_an_object_of_the_named_colour(embedded):
    name, pipe, settings = embedded
    prompts, seeds = zip(*CASES)
    images = pipe(list(prompts), generator=[torch.Generator().manual_seed(s) for s in seeds], **settings.as_kwargs()).images
    wrong_background, colour_hits, seen = [], 0, []
    for prompt, image in zip(prompts, images):
        parsed = parse_prompt(prompt)
        background, objects = detect(image)
        colours = {obj.color for obj in objects}
        wanted = parsed.objects[0].color
        assert wanted in COLORS
        seen.append(f"{prompt!r}: background {background}, objects {sorted(colours) or 'none'}")
        if background != parsed.background:
            wrong_background.append(seen[-1])
        colour_hits += wanted in colours
    assert len(wrong_background) <= WRONG_BACKGROUNDS_AT_MOST[name], f"{name}: " + "; ".join(wrong_background)
    assert colour_hits >= COLOUR_HITS_AT_LEAST[name], f"{name}: {colour_hits} of {len(CASES)} drew the colour; " + "; ".join(seen)


@pytest.mark.parametrize("name", ["tiny-source", "tiny-l2p"])
def test_one_step_denoising_of_the_shipped_models_beats_doing_nothing(name, tmp_path):
    from training.evaluate import evaluate_denoising

    result = evaluate_denoising(ASSETS / name, n_images=4, sigmas=(0.136, 0.5, 0.8, 0.95), out=tmp_path)
    levels = {level["sigma"]: level for level in result["levels"]}
    # At mid and high noise a trained DiT's one-step estimate is far closer to the render than x_t itself
    # (shipped: source +6 / +11 dB at 0.5 / 0.8 through its VAE, pixel model +12 / +12 dB in pixels).
    for sigma in (0.5, 0.8):
        assert levels[sigma]["psnr_db"] > levels[sigma]["psnr_db_noisy"] + 4, levels[sigma]
    # Less noise, truer colours on the objects.
    assert levels[0.5]["object_colour_error"] < levels[0.95]["object_colour_error"]
    assert result["space"].startswith("pixels" if name == "tiny-l2p" else "latents")
    assert json.loads((tmp_path / "denoising.json").read_text())["levels"] == result["levels"]


def test_embedded_high_resolution_variant_is_the_pixel_model_grown_to_4x_its_side():
    hr, pixel = (load_pipeline(ASSETS / name) for name in ("tiny-l2p-hr", "tiny-l2p"))
    settings = read_sampling(ASSETS / "tiny-l2p-hr")
    native = read_sampling(ASSETS / "tiny-l2p")
    assert settings.size == (4 * native.width, 4 * native.height)
    config = hr.transformer.config
    assert config.patch_size == 4 * pixel.transformer.config.patch_size
    assert config.detailer_channels[2:] == pixel.transformer.config.detailer_channels  # two outer levels
    assert config.trained_grid == pixel.transformer.config.trained_grid  # the same token grid
    assert sum(f.stat().st_size for f in (ASSETS / "tiny-l2p-hr").rglob("*") if f.is_file()) < 25e6
    # Only its head was trained: the DiT is the 1x model's, grown (the 64-px embedder reads the averaged patch),
    # as the folder stores it (float16).
    grown = grow_for_high_resolution(pixel.transformer, 4, config.detailer_channels).state_dict()
    assert all(torch.equal(tensor.half(), grown[key].half()) for key, tensor in hr.transformer.state_dict().items()
               if not key.startswith("local_decoder."))
    image = hr("a red circle", generator=torch.Generator().manual_seed(0), height=settings.height, width=settings.width,
               num_inference_steps=2, guidance_scale=settings.guidance_scale).images[0]
    assert image.size == settings.size
