"""What a downloaded PNG says about how it was made: text chunks that other tools read back.

`parameters` follows the convention of the common Stable Diffusion UIs (prompt, then "Negative prompt: ...",
then "Key: value" pairs on one line), which image viewers and those UIs parse; the same facts are also stored
one per chunk (`prompt`, `seed`, ...) for programs.
"""

from __future__ import annotations

from PIL import Image

SAMPLER = "Euler (flow matching)"


def settings_of(prompt: str, negative_prompt: str, steps: int, guidance: float, seed: int, width: int, height: int,
                model: str, rope: str | None, shift: float | None = None) -> dict[str, str]:
    values = {
        "prompt": prompt,
        "negative_prompt": negative_prompt or "",
        "steps": str(steps),
        "guidance": f"{guidance:g}",
        "seed": str(seed),
        "size": f"{width}x{height}",
        "model": model,
        "rope": rope or "none",
    }
    if shift is not None:
        values["shift"] = f"{shift:g}"
    return values


def parameters_text(settings: dict[str, str]) -> str:
    lines = [settings["prompt"]]
    if settings["negative_prompt"]:
        lines.append(f"Negative prompt: {settings['negative_prompt']}")
    lines.append(
        f"Steps: {settings['steps']}, Sampler: {SAMPLER}, CFG scale: {settings['guidance']}, Seed: {settings['seed']}, "
        f"Size: {settings['size']}, Model: {settings['model']}, RoPE: {settings['rope']}"
        + (f", Shift: {settings['shift']}" if "shift" in settings else "")
    )
    return "\n".join(lines)


def tag(image: Image.Image, **settings) -> Image.Image:
    """`image` with its settings in `image.info`, which Gradio writes into the PNG as text chunks."""
    values = settings_of(**settings)
    image.info.update(values)
    image.info["parameters"] = parameters_text(values)
    return image
