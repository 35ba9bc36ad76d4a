"""What a downloaded PNG says about how it was made: text chunks that other tools read back.

`parameters` follows the convention of the common Stable Diffusion UIs (prompt, then "Negative prompt: ...",
then "Key: value" pairs on one line), which image viewers and those UIs parse; the same facts are also stored
one per chunk (`prompt`, `seed`, ...) for programs.
"""

from __future__ import annotations

from PIL import Image

SAMPLER = "Euler (flow matching)"


# The chunks a PNG of this app carries, one fact each (and `parameters`, all of them in one line).
SETTING_KEYS = ("prompt", "negative_prompt", "steps", "guidance", "seed", "size", "model", "rope", "shift",
                "cfg_start", "dype_lambda_s", "dype_lambda_t")


def settings_of(prompt: str, negative_prompt: str, steps: int, guidance: float, seed: int, width: int, height: int,
                model: str, rope: str | None, shift: float | None = None, cfg_start: float = 0.0,
                dype: tuple[float, float] | None = None) -> dict[str, str]:
    """The text chunks of one image; `cfg_start`: where guidance started (L2PPipeline's argument), kept when not
    0; `dype`: DyPE's (scale, exponent) when the image was made with DyPE."""
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
    if cfg_start:
        values["cfg_start"] = f"{cfg_start:g}"
    if dype is not None:
        values["dype_lambda_s"], values["dype_lambda_t"] = (f"{value:g}" for value in dype)
    return values


def parameters_text(settings: dict[str, str]) -> str:
    lines = [settings["prompt"]]
    if settings["negative_prompt"]:
        lines.append(f"Negative prompt: {settings['negative_prompt']}")
    lines.append(
        f"Steps: {settings['steps']}, Sampler: {SAMPLER}, CFG scale: {settings['guidance']}, Seed: {settings['seed']}, "
        f"Size: {settings['size']}, Model: {settings['model']}, RoPE: {settings['rope']}"
        + (f", Shift: {settings['shift']}" if "shift" in settings else "")
        + (f", CFG start: {settings['cfg_start']}" if "cfg_start" in settings else "")
        + (f", DyPE: {settings['dype_lambda_s']} {settings['dype_lambda_t']}" if "dype_lambda_s" in settings else "")
    )
    return "\n".join(lines)


def tag(image: Image.Image, **settings) -> Image.Image:
    """`image` with its settings in `image.info`, which Gradio writes into the PNG as text chunks."""
    values = settings_of(**settings)
    image.info.update(values)
    image.info["parameters"] = parameters_text(values)
    return image


def read_settings(info: dict) -> dict[str, str] | None:
    """The settings a PNG of this app carries (`PIL.Image.open(path).info`), or None for an image without them
    (such as a live preview)."""
    if not all(key in info for key in ("prompt", "seed", "steps", "guidance", "size")):
        return None
    return {key: str(info[key]) for key in SETTING_KEYS if key in info}
