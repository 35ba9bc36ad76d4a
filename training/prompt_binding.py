"""Whether a model's colours come from the prompt: one-step estimates under the prompt and under its colours swapped.

Held-out toy renders of prompts that name colours (the grammar's `colors` and `color_attr` forms) are noised to
each sigma (a latent source in its VAE's latent space, a pixel model in pixels) and denoised in one step twice with
the same noise: once with the render's own prompt and once with every colour word replaced by another palette
colour (`swap_colours`). Per sigma it reports how far the objects' mean colour moves between the two estimates
(`colour_word_shift`, per channel in [-1, 1] units) and how much nearer the render's own colours the true prompt
puts them (`colour_word_gain`: the swapped prompt's object colour error minus the true prompt's, with its standard
error over the renders). A model that binds the prompt's colours to its objects has a clear gain at the high sigmas
where a sampling run lays out the picture; one that reads its colours off the noise in x_t has none, and its
samples draw shapes in colours that follow the noise. It takes a minute, where the toy score needs a sampling run
of hundreds of prompts and stays at its floor until a model draws whole objects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from l2p.toyworld import COLORS, render_prompt, sample_prompts

from .checkpoints import load_trained
from .evaluate import (HELD_OUT_SEED, caption_features, in_model_space, load_pipeline, objects_mean_colour, one_step_estimate,
                       run_settings, to_pixels)
from .files import atomic_file
from .flow import noised
from .toy_data import object_weights, to_tensor

# Where a toy run's colours are decided: the source's colour words matter at 0.9-0.95 and no more by 0.5.
BINDING_SIGMAS = (0.98, 0.95, 0.9, 0.8, 0.5)

COLOUR_CATEGORIES = ("colors", "color_attr")  # the prompts that name their objects' colours
_PALETTE = list(COLORS)
_COLOUR_WORD = re.compile(r"\b(?:(an?) )?({})\b".format("|".join(_PALETTE)))


def swap_colours(prompt: str, offset: int = 2) -> str:
    """The prompt with each palette colour replaced by the one `offset` places on in the palette (and its article
    mended: "a red" becomes "an orange"): a different colour for every word, two different colours stay
    different, and nothing else changes."""
    def swap(match: re.Match) -> str:
        colour = _PALETTE[(_PALETTE.index(match.group(2)) + offset) % len(_PALETTE)]
        if match.group(1) is None:
            return colour
        return ("an " if colour[0] in "aeiou" else "a ") + colour

    return _COLOUR_WORD.sub(swap, prompt)


def evaluate_prompt_binding(folder, checkpoint=None, n_images: int = 128, sigmas=BINDING_SIGMAS, seed: int = HELD_OUT_SEED,
                            size: int | None = None, out: str | Path | None = None) -> dict:
    """Per sigma: the objects' colour error under the true and the colour-swapped prompts, their difference
    (`colour_word_gain`) and the shift of the objects' mean colour between the two (`colour_word_shift`).

    `folder`: a ZImagePipeline or L2PPipeline folder; `checkpoint`: a checkpoint-* folder of a run laid over its
    DiT; `size`: the renders' side (default: the folder's sampling.json)."""
    pipe = load_pipeline(folder)
    if checkpoint is not None:
        load_trained(pipe.transformer, checkpoint)
    resolution = size or run_settings(folder, pipe).width
    prompts = [prompt for _, prompt in sample_prompts(n_images, seed=seed, categories=COLOUR_CATEGORIES)]
    images = torch.stack([to_tensor(render_prompt(p, resolution, seed=seed + i)) for i, p in enumerate(prompts)])
    objects = object_weights(images, 1.0) > 1
    truth = objects_mean_colour(images, objects)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        captions = {"true": caption_features(pipe, prompts), "swapped": caption_features(pipe, [swap_colours(p) for p in prompts])}
        clean = in_model_space(pipe, images)
        for sigma in sigmas:
            noise = torch.randn(clean.shape, generator=generator)
            x_t = noised(clean, noise, torch.full((n_images,), sigma))
            colour = {name: objects_mean_colour(to_pixels(pipe, one_step_estimate(pipe, x_t, sigma, caption)).clamp(-1, 1), objects)
                      for name, caption in captions.items()}
            error = {name: (c - truth).abs().mean(1) for name, c in colour.items()}  # (B,) per image
            gain = error["swapped"] - error["true"]
            rows.append({"sigma": sigma, "object_colour_error": error["true"].mean().item(),
                         "object_colour_error_swapped": error["swapped"].mean().item(),
                         "colour_word_gain": gain.mean().item(),
                         "colour_word_gain_se": (gain.std() / n_images**0.5).item(),
                         "colour_word_shift": (colour["true"] - colour["swapped"]).abs().mean().item()})
    result = {"pipeline": str(folder), "checkpoint": None if checkpoint is None else str(checkpoint), "images": n_images,
              "resolution": resolution, "seed": seed, "levels": rows}
    if out is not None:
        with atomic_file(Path(out) / "binding.json", "w") as stream:
            json.dump(result, stream, indent=1)
    return result
