"""Semantic alignment for the toy source: a REPA-style auxiliary loss that tells the DiT, at every token, what
the clean image holds there.

REPA (Yu et al., 2024) speeds DiT training by aligning an early block's hidden states on noisy inputs with a
pretrained encoder's features of the clean image. In the toy world the clean image's content is known exactly
from its layout, so the target is that content itself: for each image token, which object (colour and shape)
covers most of its cell, or which background. A linear probe on the tokens leaving one early block predicts it
with cross-entropy. At high noise the location is uncertain but the prompt still says which colours and shapes
there are, so the loss pushes the DiT to read the prompt early, which is the skill a short CPU budget otherwise
teaches last (backgrounds come first, then blobs in the colours of the data's prior). The probe is not part of
the model: it is dropped when the source is exported, and the sampled distribution is learnt by the plain
flow-matching loss as before.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from l2p.toyworld import BACKGROUNDS, COLORS, SHAPES, Layout
from l2p.toyworld.render import _coverage

BACKGROUND_NAMES = list(BACKGROUNDS)
COLOR_NAMES = list(COLORS)
NUM_CLASSES = len(BACKGROUNDS) + len(COLORS) * len(SHAPES)
SAMPLES_PER_CELL = 4  # per axis: coverage is estimated on a 4 x 4 grid of points inside each token's cell
MIN_COVER = 0.3  # an object labels a cell it covers at least this share of


def token_labels(layout: Layout, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h, grid_w) class indices: the background's, or 3 + 3 * colour + shape of the object covering most."""
    n = SAMPLES_PER_CELL
    # Sample points in a unit canvas of (grid_w, grid_h) cells; sizes follow the shorter side as in rendering.
    xs = (np.arange(grid_w * n) + 0.5) / (grid_w * n)
    ys = (np.arange(grid_h * n) + 0.5) / (grid_h * n)
    width, height = float(grid_w * n), float(grid_h * n)
    unit = min(width, height)
    best = np.zeros((grid_h, grid_w))
    labels = np.full((grid_h, grid_w), BACKGROUND_NAMES.index(layout.background), dtype=np.int64)
    for obj in layout.objects:
        dx = (xs * width - obj.x * width)[None, :]
        dy = (ys * height - obj.y * height)[:, None]
        cover = _coverage(obj.shape, dx, dy, obj.size * unit / 2)
        share = cover.reshape(grid_h, n, grid_w, n).mean(axis=(1, 3))
        wins = (share >= MIN_COVER) & (share > best)
        best = np.where(wins, share, best)
        labels[wins] = len(BACKGROUNDS) + COLOR_NAMES.index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)
    return torch.from_numpy(labels)


class SemanticProbe(nn.Module):
    """A linear probe on the image tokens leaving `model.layers[block]`, read through a forward hook, so the
    diffusers model runs unchanged."""

    def __init__(self, model: nn.Module, block: int):
        super().__init__()
        if not 0 <= block < len(model.layers):
            raise ValueError(f"flow.semantic_block={block} is not a block of a {len(model.layers)}-block DiT")
        self.linear = nn.Linear(model.config.dim, NUM_CLASSES)
        self._hidden: torch.Tensor | None = None
        self._handle = model.layers[block].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self._hidden = output

    def loss(self, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the probe on the last forward's image tokens; labels (B, h, w)."""
        tokens = labels.shape[1] * labels.shape[2]
        hidden = self._hidden[:, :tokens].float()  # image tokens come first in Z-Image's unified sequence
        self._hidden = None
        logits = self.linear(hidden)
        return F.cross_entropy(logits.reshape(-1, NUM_CLASSES), labels.reshape(-1).to(logits.device))
