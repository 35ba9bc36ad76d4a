"""What a comparison shows of two images besides the images: 1:1 crops of the same detailed region, and radially
averaged power spectra (where an image keeps, or a VAE loses, its high frequencies).

Spectra: the luminance of the image, minus its mean and tapered with a 2-D Hann window (so the image border does
not add a cross of false high frequencies), is Fourier transformed; the power |F|^2 is averaged over rings of
equal spatial frequency, in cycles per pixel from 0 to 0.5 (Nyquist). Images of different sizes land on the
same axis, so a 256 px and a 4K image can be read against each other.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# ITU-R BT.601 luma weights.
LUMA = np.array([0.299, 0.587, 0.114])


# -- crops ------------------------------------------------------------------------------------------------------
def _detail_energy(image: Image.Image) -> np.ndarray:
    """Squared luminance gradients, (H, W)."""
    luma = np.asarray(image.convert("L"), dtype=np.float64)
    energy = np.zeros_like(luma)
    energy[:, 1:] += np.diff(luma, axis=1) ** 2
    energy[1:, :] += np.diff(luma, axis=0) ** 2
    return energy


def detail_box(images: list[Image.Image], size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the `size`-square window, on a half-window grid, where the images
    together have the most fine detail (luminance gradient energy). All images must have the same size."""
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError(f"images differ in size: {[image.size for image in images]}")
    size = min(size, width, height)
    energy = sum(_detail_energy(image) for image in images)
    # Summed-area table: the energy of any window in O(1).
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    stride = max(1, size // 2)
    best, box = -1.0, (0, 0, size, size)
    for top in sorted({*range(0, height - size + 1, stride), height - size}):
        for left in sorted({*range(0, width - size + 1, stride), width - size}):
            total = table[top + size, left + size] - table[top, left + size] - table[top + size, left] + table[top, left]
            if total > best:
                best, box = total, (left, top, left + size, top + size)
    return box


def matching_crops(
    images: list[Image.Image], size: int = 128, display: int = 256
) -> tuple[tuple[int, int, int, int], int, list[Image.Image]]:
    """Crops of the same most-detailed region of each image at 100% (one image pixel per crop pixel).

    Crops smaller than `display` are enlarged by a whole factor with nearest-neighbour sampling, so every
    image pixel stays a sharp square. Returns (box, enlargement, crops).
    """
    box = detail_box(images, size)
    side = box[2] - box[0]
    factor = max(1, display // side)
    crops = [image.crop(box) for image in images]
    if factor > 1:
        crops = [crop.resize((side * factor, side * factor), Image.Resampling.NEAREST) for crop in crops]
    return box, factor, crops


# -- spectra ----------------------------------------------------------------------------------------------------
def luminance(image) -> np.ndarray:
    """(H, W) float64 in [0, 1] from a PIL image or an (H, W) / (H, W, 3) array (uint8 or [0, 1] floats)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    values = array.astype(np.float64)
    if array.dtype == np.uint8:
        values /= 255.0
    if values.ndim == 3:
        values = values[..., :3] @ LUMA
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    return values


def radial_power_spectrum(image, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles per pixel, ring centres in (0, 0.5]) and the mean power of each ring.

    `bins` defaults to half the shorter side (one ring per frequency step the image can resolve).
    """
    values = luminance(image)
    height, width = values.shape
    if min(height, width) < 4:
        raise ValueError(f"image too small for a spectrum: {width}x{height}")
    window = np.outer(np.hanning(height), np.hanning(width))
    tapered = (values - values.mean()) * window
    # Normalised by the window's energy, so a flat spectrum reads the same at every image size.
    power = np.abs(np.fft.fft2(tapered)) ** 2 / (window**2).sum()
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij"))
    bins = bins or min(height, width) // 2
    edges = np.linspace(0.0, 0.5, bins + 1)
    ring = np.digitize(radius.ravel(), edges[1:-1])  # 0 .. bins-1; past Nyquist (the corners) joins the last
    inside = radius.ravel() <= 0.5
    sums = np.bincount(ring[inside], weights=power.ravel()[inside], minlength=bins)
    counts = np.bincount(ring[inside], minlength=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    keep = counts > 0
    return centres[keep], sums[keep] / counts[keep]


def high_frequency_share(frequencies: np.ndarray, power: np.ndarray, cutoff: float = 0.25) -> float:
    """Fraction of the (ring-averaged) power above `cutoff` cycles per pixel."""
    total = float(power.sum())
    return float(power[frequencies > cutoff].sum()) / total if total > 0 else 0.0


def spectrum_db(power: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(power, 1e-20))
