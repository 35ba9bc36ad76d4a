"""A visitor's gallery of this visit's images: each with the settings it was made with, newest first, and the
page's inputs that make it again when the visitor picks one.

The history is the visitor's own `gr.State` (one per browser session, never shared between visitors): a list of
`Entry`, each the path of a PNG the page was served (in Gradio's cache, so nothing is encoded or stored twice)
and the settings read back from that PNG's own text chunks (`l2p.demo.metadata`), the one record of how an image
was made. Images without settings (live previews) are never remembered.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from .metadata import read_settings
from .presets import CUSTOM, Geometry, preset_for_size

HISTORY_MAX = 60  # entries kept per visit; the oldest go first
CAPTION_PROMPT_CHARS = 48


@dataclass(frozen=True)
class Entry:
    path: str
    settings: dict[str, str]

    @property
    def size(self) -> tuple[int, int]:
        width, height = self.settings["size"].split("x")
        return int(width), int(height)


def remember(history: list[Entry] | None, served) -> list[Entry]:
    """`history` with a run's images in front (newest first), at most HISTORY_MAX. `served` is the run's gallery
    as Gradio hands it to an event (`gr.Gallery(type="filepath")`: (path, caption) pairs, or paths)."""
    added = []
    for item in served or []:
        path = item[0] if isinstance(item, (tuple, list)) else item
        try:
            with Image.open(path) as image:
                settings = read_settings(image.info)
        except (OSError, ValueError):
            continue
        if settings is not None:
            added.append(Entry(str(path), settings))
    return (added + list(history or []))[:HISTORY_MAX]


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def model_name(model: str) -> str:
    """A model as a caption names it: a Hub id as it is, a local folder by its own name."""
    return model.rstrip("/").rsplit("/", 1)[-1] if model.startswith("/") else model


def caption(entry: Entry) -> str:
    s = entry.settings
    width, height = entry.size
    return (f"{_short(s['prompt'], CAPTION_PROMPT_CHARS)} · seed {s['seed']} · {width}×{height} · {s['steps']} steps · "
            f"guidance {s['guidance']} · {model_name(s.get('model', '?'))}")


def gallery(history: list[Entry] | None) -> list[tuple[str, str]]:
    """What the history's gallery shows: (path, caption) per entry."""
    return [(entry.path, caption(entry)) for entry in history or []]


def reused(entry: Entry, geometry: Geometry) -> dict[str, object]:
    """The Generate inputs (field name -> value, as `l2p.demo.plan.Request` names them) that make this entry's
    image again: its prompt, seed (not randomized), steps, guidance, size (its preset and aspect ratio where one
    makes it, else custom), RoPE strategy, shift and DyPE parameters, one image. Fields the PNG does not record
    are left out (the page keeps what it has)."""
    s = entry.settings
    width, height = entry.size
    preset, aspect_ratio = preset_for_size(width, height, geometry)
    values: dict[str, object] = {
        "prompt": s["prompt"], "negative_prompt": s.get("negative_prompt", ""), "preset": preset,
        "steps": int(s["steps"]), "guidance": float(s["guidance"]), "seed": int(s["seed"]), "randomize_seed": False,
        "num_images": 1,
    }
    if preset == CUSTOM:
        values.update(width=width, height=height)
    else:
        values["aspect_ratio"] = aspect_ratio
    if "rope" in s:
        values["rope"] = s["rope"]
    for name in ("shift", "dype_lambda_s", "dype_lambda_t"):
        if name in s:
            values[name] = float(s[name])
    return values


def reused_line(entry: Entry) -> str:
    """What the page says once a history entry's settings are back in the inputs."""
    s = entry.settings
    width, height = entry.size
    return (f"**Settings reused** from “{_short(s['prompt'], CAPTION_PROMPT_CHARS)}”: seed {s['seed']}, {s['steps']} "
            f"steps, guidance {s['guidance']}, {width}×{height}, model {model_name(s.get('model', '?'))}. "
            f"Press Generate to make it again.")
