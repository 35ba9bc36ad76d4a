"""What each DiT block's image tokens know: linear probes for the token's class on noised toy renders.

For a source or a pixel model, toy renders (their layouts known exactly) are noised to one sigma (a latent source
in its VAE's latent space, a pixel model in pixels) and run through the DiT; the image tokens leaving the last
noise refiner and each main block are kept. Per block, a linear probe (multinomial logistic regression on
standardised tokens) learns each token's class from the first `n_train` renders (`training.semantic.token_labels`:
the background, or the colour and shape of the object covering the token's cell) and is scored on the next
`n_test`: over all tokens, over object tokens (the right colour and shape), their colour alone, and how many of
them it calls an object at all. A block whose object accuracy is low has lost what the prompt said about that
place; comparing a pixel model's curve with its source's shows where the transfer loses the source.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from l2p.sizes import pixels_per_token
from l2p.toyworld import BACKGROUNDS, SHAPES, layout_prompt

from .checkpoints import load_trained
from .evaluate import caption_features, in_model_space
from .files import atomic_file
from .flow import noised, predict
from .semantic import NUM_CLASSES, token_labels
from .toy_data import toy_batch

PROBE_SEED = 424242  # renders for the probes: not the training pool's seeds nor the held-out evaluation's
PROBE_STEPS = 300


def block_tokens(pipe, n_images: int, sigma: float, resolution: int, batch: int = 32, noise_seed: int = PROBE_SEED):
    """{block name: (n_images, tokens, dim)} image tokens after each block, and (n_images, tokens) their labels;
    the renders are always the same, the noise is drawn from `noise_seed`."""
    model = pipe.transformer.eval()
    vae = getattr(pipe, "vae", None)
    grid = resolution // pixels_per_token(pipe)
    captured: dict[str, list[torch.Tensor]] = {}

    def keep(name):
        def hook(module, inputs, output):  # the sequence starts with the image tokens, row-major
            captured.setdefault(name, []).append(output[:, : grid * grid].float())
        return hook

    blocks = [("refiner", model.noise_refiner[-1])] + [(f"block {i}", block) for i, block in enumerate(model.layers)]
    handles = [block.register_forward_hook(keep(name)) for name, block in blocks]
    labels = []
    generator = torch.Generator().manual_seed(noise_seed)
    try:
        with torch.no_grad():
            for start in range(0, n_images, batch):
                images, prompts, seeds = toy_batch(start, min(batch, n_images - start), resolution, seed=PROBE_SEED)
                labels += [token_labels(layout_prompt(p, s), grid, grid).flatten() for p, s in zip(prompts, seeds)]
                clean = in_model_space(pipe, images)
                x_t = noised(clean, torch.randn(clean.shape, generator=generator), torch.full((len(images),), sigma))
                predict(model, x_t, torch.full((len(images),), 1.0 - sigma), caption_features(pipe, prompts), latent=vae is not None)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in captured.items()}, torch.stack(labels)


def probe_scores(tokens: torch.Tensor, labels: torch.Tensor, n_train: int) -> dict:
    """Fit a linear probe on the first n_train images' tokens, score it on the rest."""
    x, y = tokens.flatten(0, 1), labels.flatten()
    n = n_train * tokens.shape[1]
    mean, std = x[:n].mean(0), x[:n].std(0) + 1e-5
    x = (x - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], NUM_CLASSES)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(PROBE_STEPS):
        optimizer.zero_grad()
        F.cross_entropy(probe(x[:n]), y[:n]).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(x[n:]).argmax(1)
    truth = y[n:]
    first_object = len(BACKGROUNDS)  # the classes are the backgrounds, then one per colour x shape (training.semantic)
    objects = truth >= first_object

    def colour(classes):
        return (classes - first_object) // len(SHAPES)

    return {"all": (predicted == truth).float().mean().item(),
            "objects": (predicted[objects] == truth[objects]).float().mean().item(),
            "object_colour": (colour(predicted[objects]) == colour(truth[objects])).float().mean().item(),
            "objects_found": (predicted[objects] >= first_object).float().mean().item()}


def evaluate_token_probes(folder, checkpoint=None, sigma: float = 0.5, n_train: int = 512, n_test: int = 128,
                          out: str | Path | None = None) -> dict:
    """Probe scores per block for the pipeline in `folder` (with a run's `checkpoint` laid over its DiT)."""
    from .evaluate import load_pipeline, run_settings

    pipe = load_pipeline(folder)
    if checkpoint is not None:
        load_trained(pipe.transformer, checkpoint)
    resolution = run_settings(folder, pipe).width
    tokens, labels = block_tokens(pipe, n_train + n_test, sigma, resolution)
    result = {"pipeline": str(folder), "checkpoint": None if checkpoint is None else str(checkpoint), "sigma": sigma,
              "resolution": resolution, "train_images": n_train, "test_images": n_test,
              "blocks": {name: probe_scores(t, labels, n_train) for name, t in tokens.items()}}
    if out is not None:
        with atomic_file(Path(out) / "token-probes.json", "w") as stream:
            json.dump(result, stream, indent=1)
    return result
