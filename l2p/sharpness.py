"""Edge sharpness of flat-colour images: how many pixels an object's border takes to rise from the background
colour to the object's own.

For each object (a connected region off the background, found as the toy evaluator finds them: below), its
colour distance from the background is expressed as a fraction of its contrast (the median distance inside it).
The border's *width* is the area of the band where that fraction is between 10% and 90%, divided by the border's
length (the pixels of the half-contrast outline): the mean 10-90% rise distance across the border, in pixels,
whatever the object's size, shape or colour. Toy renders (antialiased vector drawing) measure 0.9 at any
resolution; Gaussian blurs of sigma 1, 2, 3 px make them 2.9, 5.6, 7.9 (a blurred step's 10-90% rise is 2.56
sigma). A VAE, which rebuilds each 8x8 block from 16 numbers, widens borders; a pixel-space model need not, which
is what this measures.

Which regions are objects, and where their outline runs, is read as the toy evaluator reads them
(l2p.toyworld.evaluate): after a 3x3 mean, beyond its `FOREGROUND_DISTANCE` from the background, and at least its
smallest object's area. Read on the raw pixels instead, a pixel model's per-pixel grain clumped into speck
"objects" (hundreds in 48 samples of the 1x pixel model) whose ragged 1-2 px "borders" outnumbered and hid the real
objects': its samples read 3.7-4.0 px where their objects' borders measure 7-9, and a grainy 512-px sample 2.8 px
where its objects' measured 10-20 (docs/results.md, "The edge metric read grain"). The band itself is counted on
the raw pixels, so grain along a border still widens it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .toyworld.evaluate import FOREGROUND_DISTANCE, MIN_OBJECT_AREA, box_blur3

MIN_OBJECT_PIXELS = 30  # smaller specks have no interior to measure a contrast from
MARGIN = 4  # pixels around an object searched for the faint start of its border


def edge_widths(image: Image.Image | np.ndarray) -> list[float]:
    """The 10-90% border width, in pixels, of each object in the image (empty when there is none)."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    background = np.median(rgb.reshape(-1, 3), axis=0)  # flat backgrounds cover most of every toy image
    distance = np.linalg.norm(rgb - background, axis=-1)
    # Grain averaged out (in colour, before the distance, which would add up its magnitude), borders kept in place.
    smooth = np.linalg.norm(box_blur3(rgb) - background, axis=-1)
    labels, _ = ndimage.label(smooth > FOREGROUND_DISTANCE / 255)  # where the toy evaluator looks for objects
    min_pixels = max(MIN_OBJECT_PIXELS, MIN_OBJECT_AREA * min(distance.shape) ** 2)
    widths = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        top, left = max(0, box[0].start - MARGIN), max(0, box[1].start - MARGIN)
        window = (slice(top, box[0].stop + MARGIN), slice(left, box[1].stop + MARGIN))
        own = labels[window] == index
        if own.sum() < min_pixels:
            continue
        interior = ndimage.binary_erosion(own, iterations=2)
        if not interior.any():
            continue
        contrast = np.median(distance[window][interior])
        level = distance[window] / contrast
        # The object's neighbourhood, without other objects that happen to be close.
        near = ndimage.binary_dilation(own, iterations=MARGIN) & ((labels[window] == 0) | own)
        band = near & (level > 0.1) & (level < 0.9)
        inside = near & (smooth[window] / contrast >= 0.5)
        outline = inside & ~ndimage.binary_erosion(inside)
        if outline.any():
            widths.append(float(band.sum() / outline.sum()))
    return widths


def mean_edge_width(images) -> float:
    """The mean border width over every object of every image (NaN when no image holds a measurable object)."""
    widths = [width for image in images for width in edge_widths(image)]
    return float(np.mean(widths)) if widths else float("nan")
