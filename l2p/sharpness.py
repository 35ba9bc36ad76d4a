"""Edge sharpness of flat-colour images: how many pixels an object's border takes to rise from the background
colour to the object's own.

For each object (a connected region visibly off the background), its colour distance from the background is
expressed as a fraction of its contrast (the median distance inside it). The border's *width* is the area of
the band where that fraction is between 10% and 90%, divided by the border's length (the pixels of the
half-contrast outline): the mean 10-90% rise distance across the border, in pixels, whatever the object's
size, shape or colour. Toy renders (antialiased vector drawing) measure 0.9 at any resolution; Gaussian blurs
of sigma 1, 2, 3 px make them 2.9, 5.6, 7.9 (a blurred step's 10-90% rise is 2.56 sigma). A VAE, which rebuilds each 8x8 block from 16 numbers, widens borders; a pixel-space
model need not, which is what this measures.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

OFF_BACKGROUND = 0.1  # colour distance (RGB in [0, 1]) above which a pixel belongs to some object
MIN_OBJECT_PIXELS = 30  # smaller specks have no interior to measure a contrast from
MARGIN = 4  # pixels around an object searched for the faint start of its border


def edge_widths(image: Image.Image | np.ndarray) -> list[float]:
    """The 10-90% border width, in pixels, of each object in the image (empty when there is none)."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    background = np.median(rgb.reshape(-1, 3), axis=0)  # flat backgrounds cover most of every toy image
    distance = np.linalg.norm(rgb - background, axis=-1)
    labels, _ = ndimage.label(distance > OFF_BACKGROUND)
    widths = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        top, left = max(0, box[0].start - MARGIN), max(0, box[1].start - MARGIN)
        window = (slice(top, box[0].stop + MARGIN), slice(left, box[1].stop + MARGIN))
        own = labels[window] == index
        if own.sum() < MIN_OBJECT_PIXELS:
            continue
        interior = ndimage.binary_erosion(own, iterations=2)
        if not interior.any():
            continue
        level = distance[window] / np.median(distance[window][interior])
        # The object's neighbourhood, without other objects that happen to be close.
        near = ndimage.binary_dilation(own, iterations=MARGIN) & ((labels[window] == 0) | own)
        band = near & (level > 0.1) & (level < 0.9)
        inside = near & (level >= 0.5)
        outline = inside & ~ndimage.binary_erosion(inside)
        if outline.any():
            widths.append(float(band.sum() / outline.sum()))
    return widths


def mean_edge_width(images) -> float:
    """The mean border width over every object of every image (NaN when no image holds a measurable object)."""
    widths = [width for image in images for width in edge_widths(image)]
    return float(np.mean(widths)) if widths else float("nan")
