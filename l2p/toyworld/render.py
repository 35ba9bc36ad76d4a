"""Random layouts that satisfy a prompt, and their antialiased rendering at any size.

A layout lives in normalised coordinates: centres are fractions of the canvas width and height, sizes
fractions of its shorter side. It is sampled to be valid on a square canvas, which makes it valid on every
canvas: sizes follow the shorter side, so lengthening the other axis only spreads the centres along it,
and gaps and margins can only grow.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from .grammar import BACKGROUNDS, COLORS, ParsedPrompt, parse_prompt

# An object's side (its bounding box is square), in shorter-side units. The evaluator judges any object from
# 0.08 up (EVALUATED_SIZES, its tests' range); the toy world draws them from 0.15, so that at the toy models'
# native 128 px even the smallest spans more than one 16-px token (19 px) and a triangle is still a triangle.
MIN_SIZE, MAX_SIZE = 0.15, 0.30
EVALUATED_SIZES = (0.08, 0.30)
GAP = 0.04  # clear space between the bounding boxes of any two objects
MARGIN = 0.03  # clear space between an object and the canvas edge
# The least centre offset along a relation's axis; it must also exceed the offset across, so that the
# relation reads at a glance. The evaluator asks for only 0.05.
RELATION_OFFSET = 0.15


@dataclass(frozen=True)
class PlacedObject:
    shape: str
    color: str
    x: float  # centre, fraction of the canvas width
    y: float  # centre, fraction of the canvas height (0 at the top)
    size: float  # side of the object's square bounding box, fraction of the canvas's shorter side


@dataclass(frozen=True)
class Layout:
    objects: tuple[PlacedObject, ...]
    background: str


def layout_prompt(prompt: str | ParsedPrompt, seed: int = 0, sizes: tuple[float, float] = (MIN_SIZE, MAX_SIZE)) -> Layout:
    """A random layout satisfying the prompt; it depends only on the prompt's meaning, the seed and `sizes`
    (the range of object sides, in shorter-side units)."""
    parsed = prompt if isinstance(prompt, ParsedPrompt) else parse_prompt(prompt)
    rng = np.random.default_rng([seed, zlib.crc32(parsed.text.encode())])
    palette = list(COLORS)
    specs = [
        (spec.shape, spec.color or palette[rng.integers(len(palette))])
        for spec in parsed.objects
        for _ in range(spec.count)
    ]
    return Layout(place_objects(specs, rng, parsed.relation, sizes), parsed.canvas_background)


def place_objects(
    specs: Sequence[tuple[str, str]],
    rng: np.random.Generator,
    relation: str | None = None,
    sizes: tuple[float, float] = (MIN_SIZE, MAX_SIZE),
) -> tuple[PlacedObject, ...]:
    """Place (shape, colour) objects at random sizes in `sizes` and random positions, none touching another.

    With a relation, objects 0 and 1 satisfy "0 {relation} 1". Sizes shrink when objects do not fit.
    """
    min_size, max_size = sizes
    if not 0 < min_size <= max_size <= 0.5:
        raise ValueError(f"sizes must satisfy 0 < min <= max <= 0.5, got {sizes!r}")
    while True:
        for _ in range(20):
            placed = _try_place(specs, rng, min_size, max_size, relation)
            if placed is not None:
                return placed
        if max_size == min_size:
            raise ValueError(f"cannot fit {len(specs)} objects on the canvas")
        max_size = max(min_size, 0.85 * max_size)


def _try_place(specs, rng, min_size, max_size, relation) -> tuple[PlacedObject, ...] | None:
    placed: list[PlacedObject] = []
    for i, (shape, color) in enumerate(specs):
        size = rng.uniform(min_size, max_size)
        low, high = MARGIN + size / 2, 1 - MARGIN - size / 2
        for _ in range(50):
            x, y = rng.uniform(low, high, size=2)
            if relation and i == 1 and not _shows(relation, placed[0], x, y):
                continue
            if all(_apart(other, x, y, size) for other in placed):
                placed.append(PlacedObject(shape, color, float(x), float(y), float(size)))
                break
        else:
            return None
    return tuple(placed)


def _apart(other: PlacedObject, x: float, y: float, size: float) -> bool:
    reach = (other.size + size) / 2 + GAP
    return abs(other.x - x) >= reach or abs(other.y - y) >= reach


def _shows(relation: str, first: PlacedObject, x: float, y: float) -> bool:
    """Whether an object centred at (x, y) makes "first {relation} it" clearly true."""
    dx, dy = x - first.x, y - first.y
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along >= RELATION_OFFSET and abs(across) <= along


def render_layout(layout: Layout, size: int | tuple[int, int] = 256) -> Image.Image:
    """Draw the layout on a canvas of `size` (an int for a square, or (width, height)), antialiased.

    Each pixel takes the exact or near-exact fraction of its area that the shape covers (analytic
    coverage), so edges look the same at every resolution and no supersampled canvas is needed.
    """
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUNDS[layout.background]
    unit = min(width, height)
    for obj in layout.objects:
        cx, cy, half = obj.x * width, obj.y * height, obj.size * unit / 2
        # One pixel of slack around the box holds the antialiased rim.
        x0, x1 = max(0, math.floor(cx - half) - 1), min(width, math.ceil(cx + half) + 1)
        y0, y1 = max(0, math.floor(cy - half) - 1), min(height, math.ceil(cy + half) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        cover = _coverage(obj.shape, dx, dy, half)[..., None]
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        region += cover * (np.asarray(COLORS[obj.color], np.float32) - region)
        canvas[y0:y1, x0:x1] = np.rint(region).astype(np.uint8)
    return Image.fromarray(canvas, "RGB")


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Fraction of each pixel inside the shape; (dx, dy) are pixel centres relative to the shape's centre."""
    if shape == "square":  # exact (for a side of a pixel or more): the product of the axes' overlaps
        return np.clip(half + 0.5 - np.abs(dx), 0, 1) * np.clip(half + 0.5 - np.abs(dy), 0, 1)
    if shape == "circle":
        signed_distance = np.sqrt(dx * dx + dy * dy) - half
    elif shape == "triangle":
        # Apex (0, -half), base corners (+-half, half): the signed distance is the largest over the base
        # and the two slanted sides, whose outward normals are (+-2, -1) / sqrt(5).
        slanted = (2 * np.abs(dx) - dy - half) / math.sqrt(5)
        signed_distance = np.maximum(dy - half, slanted)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    # A pixel whose centre lies on the edge is half covered; coverage ramps over one pixel across it.
    return np.clip(0.5 - signed_distance, 0, 1)


def render_prompt(
    prompt: str | ParsedPrompt,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    sizes: tuple[float, float] = (MIN_SIZE, MAX_SIZE),
) -> Image.Image:
    """An RGB image of a random layout satisfying the prompt; the same seed gives the same layout at every size.
    `sizes` is the range of object sides (the evaluator's tests draw from `EVALUATED_SIZES`)."""
    return render_layout(layout_prompt(prompt, seed, sizes), size)
