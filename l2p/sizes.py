"""Image sizes the pixel model accepts: multiples of its patch size, any aspect ratio, any token count."""

from __future__ import annotations


def nearest_multiples(value: int, multiple: int) -> tuple[int, int]:
    """The valid sizes just below and just above `value` (equal when `value` is valid)."""
    below = max(multiple, value // multiple * multiple)
    above = max(multiple, -(-value // multiple) * multiple)
    return below, above


def check_image_size(height: int, width: int, multiple: int) -> None:
    """Raise a ValueError naming the nearest valid sizes unless both sides are positive multiples."""
    problems = []
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < multiple or value % multiple:
            try:
                below, above = nearest_multiples(int(value), multiple)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be an integer multiple of {multiple}, got {value!r}") from None
            nearest = f"{below}" if below == above else f"{below} or {above}"
            problems.append(f"{name} {value} is not a multiple of {multiple} (nearest valid: {nearest})")
    if problems:
        raise ValueError("; ".join(problems) + f". The pixel model's patch size is {multiple}.")
