"""Detect the toy world's objects in an image, check an image against its prompt, and score a set.

Detection: the dominant colour is the background; pixels clearly away from it form connected
components, one per object (objects never touch). Each component's colour is the canonical colour
nearest (in CIELAB) to its core, and its shape comes from scale- and blur-invariant moments of its soft
coverage: how far each pixel lies from the background towards the object's colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from .grammar import BACKGROUNDS, CATEGORIES, COLORS, ParsedPrompt, parse_prompt

ANALYSIS_SIDE = 512  # larger images are box-reduced until their shorter side is at most this
FOREGROUND_DISTANCE = 40.0  # RGB distance from the background beyond which a pixel may be an object
# The smallest legal object, a triangle of side 0.08, covers 0.0032 of the squared shorter side.
MIN_OBJECT_AREA = 0.0012
RELATION_MARGIN = 0.05  # "A left of B": B's centre is right of A's by this fraction of the width
HALO = 2  # pixels around a component that still hold its blurred rim (objects keep a wider gap)

# Shape prototypes as (q, s), from the cumulants k of the coverage: q = k22 / mean(k40, k04) tells a
# square (0: its x and y are independent) from a circle (1/3: isotropic); s = k03 / |k04|^(3/4), a
# skewness of the vertical profile, is negative for an upright triangle, whose mass sits low. Both are
# scale invariant and unchanged by a Gaussian blur, which adds nothing to cumulants above the second.
# The triangle's values are those of the renderer's (base = height).
_PROTOTYPES = {"circle": (1 / 3, 0.0), "square": (0.0, 0.0), "triangle": (0.32, -0.83)}
_FEATURE_SCALES = np.array([0.1, 0.2])
_MAX_SHAPE_DISTANCE = 3.0  # in feature scales; anything further is an "unknown" blob
# Sanity bounds on the bounding box, which the cumulants do not see: hollow or ragged blobs cover too
# little of it, elongated ones are no toy-world shape.
_MIN_FILL, _MAX_LOG_ASPECT = 0.35, 0.4


@dataclass(frozen=True)
class DetectedObject:
    shape: str  # circle, square, triangle, or "unknown"
    color: str  # nearest canonical colour: a palette colour, or a background colour for a greyish object
    center: tuple[float, float]  # (x, y) centre of the bounding box, in pixels of the input image
    bbox: tuple[float, float, float, float]  # (left, top, right, bottom), pixels, right/bottom exclusive
    area: float  # pixels of the input image

    def describe(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    objects: tuple[DetectedObject, ...]
    background: str  # nearest canonical colour to the dominant colour
    reason: str = ""  # why it failed; empty when it passed


def check(image: Image.Image, prompt: str | ParsedPrompt) -> CheckResult:
    """Whether the image shows exactly what the prompt says: the named objects and no others, with their
    colours, counts and relation, on the named background (an unnamed background may be anything)."""
    parsed = prompt if isinstance(prompt, ParsedPrompt) else parse_prompt(prompt)
    background, objects = detect(image)
    reason = _mismatch(parsed, background, objects, image.size)
    return CheckResult(not reason, objects, background, reason)


def _checked(images: Iterable[Image.Image], prompts: Iterable[str], caller: str) -> list[tuple[ParsedPrompt, CheckResult]]:
    """Each prompt parsed and its image checked against it: what `score` and `partial_credit` both count."""
    images, prompts = list(images), list(prompts)
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
    if not prompts:
        raise ValueError(f"{caller} needs at least one image")
    parsed = [parse_prompt(prompt) for prompt in prompts]
    return [(p, check(image, p)) for image, p in zip(images, parsed)]


def score(images: Iterable[Image.Image], prompts: Iterable[str]) -> dict[str, float]:
    """GenEval-style accuracy per category present, and `overall`, the mean over those categories."""
    outcomes: dict[str, list[bool]] = {}
    for parsed, result in _checked(images, prompts, "score"):
        outcomes.setdefault(parsed.category, []).append(result.passed)
    scores = {category: float(np.mean(outcomes[category])) for category in CATEGORIES if category in outcomes}
    scores["overall"] = float(np.mean(list(scores.values())))
    return scores


def partial_credit(images: Iterable[Image.Image], prompts: Iterable[str]) -> dict[str, float]:
    """What a weak model already gets right before whole prompts pass: diagnostics, not part of `overall`.

    `background_match`: of the prompts that name a background, the share drawn on it (a colour the text
    encoder and the DiT must carry; no shape needed). `count_match`: the share of images with exactly as many
    objects as the prompt asks for, whatever their shapes and colours."""
    checked = _checked(images, prompts, "partial_credit")
    backgrounds = [result.background == parsed.background for parsed, result in checked if parsed.background]
    counts = [len(result.objects) == sum(spec.count for spec in parsed.objects) for parsed, result in checked]
    return {"background_match": float(np.mean(backgrounds)) if backgrounds else float("nan"), "count_match": float(np.mean(counts))}


def detect(image: Image.Image) -> tuple[str, tuple[DetectedObject, ...]]:
    """The background colour's name and the objects, left to right."""
    rgb = _as_rgb(image)
    factor = math.ceil(min(rgb.size) / ANALYSIS_SIDE)
    if factor > 1:
        rgb = rgb.reduce(factor)
    scale_x, scale_y = image.size[0] / rgb.size[0], image.size[1] / rgb.size[1]
    array = np.asarray(rgb)
    background = _dominant_color(array)
    # A 3x3 mean takes the edge off pixel noise and JPEG speckle; it is linear, so the shape features hold.
    pixels = box_blur3(array.astype(np.float32))
    offsets = pixels - background
    labels, count = ndimage.label(np.einsum("ijc,ijc->ij", offsets, offsets) > FOREGROUND_DISTANCE**2)
    min_area = MIN_OBJECT_AREA * min(pixels.shape[:2]) ** 2
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    background_name = _nearest_color(background)

    objects = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        # Cheap pre-filter on the thresholded area (about the soft area: blur rims add about as much as
        # they take) before the per-component analysis.
        if sizes[index] < min_area / 2:
            continue
        found = _analyse(pixels, labels, index, box, background)
        if found is None:
            continue
        color, shape, area, (left, top, right, bottom) = found
        if area < min_area or color == background_name:
            continue
        bbox = (float(left * scale_x), float(top * scale_y), float(right * scale_x), float(bottom * scale_y))
        center = ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
        objects.append(DetectedObject(shape, color, center, bbox, float(area * scale_x * scale_y)))
    return background_name, tuple(sorted(objects, key=lambda obj: obj.center))


def _as_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def box_blur3(pixels: np.ndarray) -> np.ndarray:
    """3x3 mean with edge replication (shifted sums: several times faster than ndimage on H x W x 3)."""
    padded = np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="edge")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9


def _dominant_color(rgb: np.ndarray) -> np.ndarray:
    """Mean colour of the densest spot of the colour histogram: 16 bins per channel, counted over each
    bin's neighbours too, so that a colour lying on a bin edge is not split in eight."""
    # A subsample of about 2**14 pixels is plenty to find the colour that covers most of the image.
    step = max(1, math.isqrt(rgb.shape[0] * rgb.shape[1] >> 14))
    rgb = rgb[::step, ::step]
    bins = (rgb >> 4).astype(np.int16)
    histogram = np.bincount((bins[..., 0] * 256 + bins[..., 1] * 16 + bins[..., 2]).ravel(), minlength=16**3)
    density = ndimage.uniform_filter(histogram.reshape(16, 16, 16).astype(np.float64), size=3, mode="constant")
    peak = np.unravel_index(density.argmax(), density.shape)
    near = (np.abs(bins - np.array(peak, np.int16)) <= 1).all(axis=-1)
    return rgb[near].mean(axis=0, dtype=np.float64).astype(np.float32)


def _analyse(pixels, labels, index, box, background):
    """(colour, shape, area, bbox) of one component, or None if it has no clear core."""
    height, width = labels.shape
    rows = slice(max(0, box[0].start - HALO), min(height, box[0].stop + HALO))
    cols = slice(max(0, box[1].start - HALO), min(width, box[1].stop + HALO))
    crop, crop_labels = pixels[rows, cols] - background, labels[rows, cols]
    inside = crop_labels == index
    # The halo takes in the blurred rim but never another component's pixels.
    region = ndimage.binary_dilation(inside, iterations=HALO) & ((crop_labels == 0) | inside)

    # The core, the pixels furthest from the background, gives the colour free of the rim's blend.
    offsets = crop[inside]
    strength = np.linalg.norm(offsets, axis=-1)
    direction = np.median(offsets[strength >= 0.8 * np.percentile(strength, 90)], axis=0)
    if direction @ direction < FOREGROUND_DISTANCE**2:
        return None
    color = _nearest_color(background + direction)

    # Coverage: each pixel's position between the background (0) and the core colour (1). Unclipped, so
    # noise averages out instead of adding up, and linear in the image, so blur only spreads it.
    coverage = (crop @ direction) / (direction @ direction) * region
    area = float(coverage.sum())
    solid = coverage >= 0.5
    if area <= 0 or not solid.any():
        return None
    solid_rows, solid_cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    top, bottom = rows.start + solid_rows[0], rows.start + solid_rows[-1] + 1
    left, right = cols.start + solid_cols[0], cols.start + solid_cols[-1] + 1
    return color, _classify_shape(coverage, area, right - left, bottom - top), area, (left, top, right, bottom)


def _classify_shape(coverage: np.ndarray, area: float, width: int, height: int) -> str:
    if area / (width * height) < _MIN_FILL or abs(math.log(width / height)) > _MAX_LOG_ASPECT:
        return "unknown"
    # Central moments from the two marginal profiles, plus bilinear forms for the two mixed ones.
    coverage = coverage.astype(np.float64) / area
    x_profile, y_profile = coverage.sum(axis=0), coverage.sum(axis=1)
    x = np.arange(len(x_profile)) - x_profile @ np.arange(len(x_profile))
    y = np.arange(len(y_profile)) - y_profile @ np.arange(len(y_profile))
    m20, m02 = x_profile @ x**2, y_profile @ y**2
    m11, m22 = y @ coverage @ x, y**2 @ coverage @ x**2
    k40, k04 = x_profile @ x**4 - 3 * m20**2, y_profile @ y**4 - 3 * m02**2
    k22 = m22 - m20 * m02 - 2 * m11**2
    if k40 >= 0 or k04 >= 0:  # the three shapes are flatter than a Gaussian along both axes; this is not
        return "unknown"
    features = np.array([2 * k22 / (k40 + k04), y_profile @ y**3 / abs(k04) ** 0.75])
    distances = {
        shape: float(np.linalg.norm((features - prototype) / _FEATURE_SCALES))
        for shape, prototype in _PROTOTYPES.items()
    }
    shape = min(distances, key=distances.get)
    return shape if distances[shape] <= _MAX_SHAPE_DISTANCE else "unknown"


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    c = np.asarray(rgb, np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_CANONICAL = {**COLORS, **BACKGROUNDS}
_CANONICAL_LAB = _srgb_to_lab(np.array(list(_CANONICAL.values())))


def _nearest_color(rgb: np.ndarray) -> str:
    distances = np.linalg.norm(_CANONICAL_LAB - _srgb_to_lab(np.clip(rgb, 0, 255)), axis=-1)
    return list(_CANONICAL)[int(distances.argmin())]


def _mismatch(
    parsed: ParsedPrompt, background: str, objects: Sequence[DetectedObject], size: tuple[int, int]
) -> str:
    """Why the detected scene does not satisfy the prompt, or "" if it does."""
    if parsed.background and background != parsed.background:
        return f"background is {background}, expected {parsed.background}"
    wanted = [(spec.shape, spec.color) for spec in parsed.objects for _ in range(spec.count)]
    found = ", ".join(obj.describe() for obj in objects) or "nothing"
    if len(objects) != len(wanted):
        return f"expected {len(wanted)} object(s), found {len(objects)}: {found}"
    matched_unrelated = None
    for order in permutations(objects):
        if all(obj.shape == shape and color in (None, obj.color) for obj, (shape, color) in zip(order, wanted)):
            if parsed.relation is None or _holds(parsed.relation, order[0], order[1], size):
                return ""
            matched_unrelated = order
    if matched_unrelated:
        first, second = matched_unrelated[:2]
        return f"the {first.describe()} is not {parsed.relation} the {second.describe()}"
    return f"objects do not match the prompt: found {found}"


def _holds(relation: str, first: DetectedObject, second: DetectedObject, size: tuple[int, int]) -> bool:
    """Whether "first {relation} second" holds between the centres, by more than the margin."""
    dx = (second.center[0] - first.center[0]) / size[0]
    dy = (second.center[1] - first.center[1]) / size[1]
    along = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[relation]
    return along > RELATION_MARGIN
