"""Training data: the synthetic corpus (an image folder) or the toy world's endless renders.

Batches are a pure function of (seed, process rank, step): every process draws different items, and a run
resumed at step k sees exactly the batches an uninterrupted run would have. A batch never mixes image sizes:
items are grouped into aspect-ratio buckets under a pixel budget (sizes floored to the patch multiple).
"""

from __future__ import annotations

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


def load_corpus_dataset(path: str | Path, split: str = "train"):
    """The corpus as a `datasets.Dataset`: a local `metadata.jsonl` image folder (what `training.synthesize`
    writes) through datasets' `imagefolder` builder, anything else (a Hub dataset id, a folder of parquet
    shards) through `load_dataset` itself."""
    from datasets import load_dataset

    local = Path(path)
    if (local / "metadata.jsonl").is_file():
        return load_dataset("imagefolder", data_dir=str(local), split=split)
    return load_dataset(str(path), split=split)


class DatasetCorpus:
    """(image, prompt, seed) rows read through `datasets`, grouped into aspect buckets under a pixel budget.

    Column names are configurable because published corpora name them their own way; the seed column is the
    seed the source rendered the image with (the release draws each sample's noise from it)."""

    def __init__(self, path: str | Path, pixel_budget: int, multiple: int, seed: int = 0, split: str = "train",
                 image_column: str = "image", caption_column: str = "prompt", seed_column: str = "seed"):
        self.dataset = load_corpus_dataset(path, split)
        missing = [c for c in (image_column, caption_column, seed_column) if c not in self.dataset.column_names]
        if missing:
            raise ValueError(f"data.path: {path} has no column(s) {missing}; its columns are {self.dataset.column_names} "
                             "(name them with data.image_column, data.caption_column, data.seed_column)")
        if len(self.dataset) == 0:
            raise ValueError(f"data.path: {path} ({split}) holds no rows")
        self.columns = (image_column, caption_column, seed_column)
        self.seed = seed
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(self.dataset[image_column]):  # PIL opens lazily: only headers are read
            self.buckets.setdefault(bucket_size(*image.size, pixel_budget, multiple), []).append(index)
        self.bucket_list = sorted(self.buckets)
        self.bucket_weights = np.array([len(self.buckets[b]) for b in self.bucket_list], dtype=float)
        self.bucket_weights /= self.bucket_weights.sum()

    def __len__(self) -> int:
        return len(self.dataset)

    def item(self, index: int, size: tuple[int, int]) -> Item:
        image_column, caption_column, seed_column = self.columns
        row = self.dataset[index]

        def load():
            image = row[image_column].convert("RGB")
            return image if image.size == size else image.resize(size, Image.LANCZOS)

        return Item(key=f"{index}@{size[0]}x{size[1]}", prompt=row[caption_column], seed=int(row[seed_column]), load=load)

    def batch(self, step: int, rank: int, batch_size: int) -> list[Item]:
        rng = step_rng(self.seed, rank, step)
        size = self.bucket_list[int(rng.choice(len(self.bucket_list), p=self.bucket_weights))]
        members = self.buckets[size]
        return [self.item(members[int(i)], size) for i in rng.integers(0, len(members), size=batch_size)]
