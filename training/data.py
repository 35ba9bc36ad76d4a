"""Training data: the synthetic corpus (an image folder) or the toy world's endless renders.

Batches are a pure function of (seed, process rank, step): every process draws different items, and a run
resumed at step k sees exactly the batches an uninterrupted run would have. A batch never mixes image sizes:
items are grouped into aspect-ratio buckets under a pixel budget (sizes floored to the patch multiple).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from l2p.toyworld import CATEGORIES, render_prompt, sample_prompts


@dataclass(frozen=True)
class Item:
    key: str  # stable identity, used to cache encoded latents and text features
    prompt: str
    seed: int
    load: object  # () -> PIL.Image at the item's bucket size


def bucket_size(width: int, height: int, pixel_budget: int, multiple: int) -> tuple[int, int]:
    """The training size for an image: its aspect ratio at about `pixel_budget` pixels, floored to `multiple`."""
    scale = math.sqrt(pixel_budget / (width * height))
    return (max(multiple, int(width * scale) // multiple * multiple), max(multiple, int(height * scale) // multiple * multiple))


def step_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, rank, step])


class ToyCorpus:
    """Toy renders of grammar prompts. `pool_size` items are reused (so encoded latents can be cached);
    0 means every draw is a fresh prompt and layout."""

    def __init__(self, resolution: int, seed: int = 0, pool_size: int = 0):
        self.resolution, self.seed, self.pool_size = resolution, seed, pool_size

    def item(self, index: int) -> Item:
        rng = np.random.default_rng([self.seed, index])
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        prompt = sample_prompts(1, seed=int(rng.integers(2**31)), categories=[category])[0][1]
        render_seed = int(rng.integers(2**31))
        return Item(
            key=f"toy-{self.seed}-{index}",
            prompt=prompt,
            seed=render_seed,
            load=lambda p=prompt, s=render_seed: render_prompt(p, self.resolution, seed=s),
        )

    def batch(self, step: int, rank: int, batch_size: int) -> list[Item]:
        rng = step_rng(self.seed, rank, step)
        high = self.pool_size if self.pool_size else 2**62
        return [self.item(int(i)) for i in rng.integers(0, high, size=batch_size)]


class ImageFolderCorpus:
    """A `metadata.jsonl` image folder (file_name, prompt, seed), as `training.synthesize` writes it and
    `datasets`' imagefolder loader reads it."""

    def __init__(self, path: str | Path, pixel_budget: int, multiple: int, seed: int = 0):
        self.root = Path(path)
        metadata = self.root / "metadata.jsonl"
        if not metadata.is_file():
            raise FileNotFoundError(f"data.path: no metadata.jsonl in {self.root}")
        self.records = [json.loads(line) for line in metadata.read_text().splitlines() if line.strip()]
        if not self.records:
            raise ValueError(f"data.path: {metadata} lists no images")
        self.seed = seed
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index, record in enumerate(self.records):
            with Image.open(self.root / record["file_name"]) as image:
                size = bucket_size(*image.size, pixel_budget, multiple)
            self.buckets.setdefault(size, []).append(index)
        self.bucket_list = sorted(self.buckets)
        self.bucket_weights = np.array([len(self.buckets[b]) for b in self.bucket_list], dtype=float)
        self.bucket_weights /= self.bucket_weights.sum()

    def __len__(self) -> int:
        return len(self.records)

    def item(self, index: int, size: tuple[int, int]) -> Item:
        record = self.records[index]

        def load():
            with Image.open(self.root / record["file_name"]) as image:
                image = image.convert("RGB")
                return image if image.size == size else image.resize(size, Image.LANCZOS)

        return Item(key=f"{record['file_name']}@{size[0]}x{size[1]}", prompt=record["prompt"], seed=int(record["seed"]), load=load)

    def batch(self, step: int, rank: int, batch_size: int) -> list[Item]:
        rng = step_rng(self.seed, rank, step)
        size = self.bucket_list[int(rng.choice(len(self.bucket_list), p=self.bucket_weights))]
        members = self.buckets[size]
        return [self.item(members[int(i)], size) for i in rng.integers(0, len(members), size=batch_size)]
