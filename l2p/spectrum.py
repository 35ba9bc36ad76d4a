"""Radially averaged power spectra: where an image keeps (or a VAE loses) its high frequencies.

The luminance of the image, minus its mean and tapered with a 2-D Hann window (so the image border does not
add a cross of false high frequencies), is Fourier transformed; the power |F|^2 is averaged over rings of
equal spatial frequency, in cycles per pixel from 0 to 0.5 (Nyquist). Images of different sizes land on the
same axis, so a 256 px and a 4K image can be read against each other.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# ITU-R BT.601 luma weights.
LUMA = np.array([0.299, 0.587, 0.114])


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
