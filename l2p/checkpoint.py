"""Reading the release's single-file checkpoints: safetensors only, checked key by key before use.

A release file is one flat state dict (diffusers-style Z-Image names plus `local_decoder.*`, dtypes mixed
fp32/bf16). It may be a local file, a folder holding it, or a file in a Hub repository (which is how a
Space gets it). Nothing here ever unpickles.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

# Hub ids: the released pixel model, and the latent source whose text encoder and tokenizer it runs with.
RELEASE_REPO_ID = "zhen-nan/L2P"
SOURCE_REPO_ID = "Tongyi-MAI/Z-Image-Turbo"
RELEASE_FILENAME = "model-1k-merge.safetensors"
_MAX_LISTED = 20
# What torch.save and friends write: pickles, which can run code when loaded, so they are refused by name.
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")


def refuse_pickle(path: str | os.PathLike) -> None:
    """Raise a ValueError naming the fix when `path` is a pickle file by its suffix."""
    if Path(path).suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{path} is a pickle file ({Path(path).suffix}); pickle files are never loaded, as loading one can run "
            f"code: convert it to safetensors (safetensors.torch.save_file(state_dict, 'model.safetensors'))"
        )


def resolve_checkpoint_file(path_or_hub_id: str | os.PathLike, filename: str | None = None) -> Path:
    """A local file, a file inside a local folder, or a file downloaded from a Hub repository."""
    refuse_pickle(path_or_hub_id)
    if filename:
        refuse_pickle(filename)
    location = Path(path_or_hub_id)
    if location.is_file():
        return location
    wanted = filename or RELEASE_FILENAME
    if location.is_dir():
        candidate = location / wanted
        if candidate.is_file():
            return candidate
        present = sorted(p.name for p in location.glob("*.safetensors"))
        raise FileNotFoundError(f"no {wanted} in folder {location}; .safetensors files there: {present or 'none'}")
    repo_id = str(path_or_hub_id)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{repo_id} is neither an existing file or folder nor a Hub repository id (owner/name)")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=wanted))
    except Exception as error:  # offline, unknown repo, missing file, auth: all mean "not fetched"
        reason = (str(error).strip().splitlines() or [""])[0]  # the Hub's messages run over several lines
        raise OSError(
            f"could not fetch {wanted} from the Hub repository {repo_id} ({type(error).__name__}: {reason}); "
            f"if you have the file, pass its local path instead"
        ) from error


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file, with a clear error for truncated or foreign files."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors checkpoint (truncated or corrupt?): {error}"
        ) from error


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} {title}: {shown}{more}"


def check_state_dict(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError that lists missing, unexpected and wrong-shape keys, if there are any."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(
        f"{key} (file {tuple(found[key].shape)}, model {tuple(expected[key].shape)})"
        for key in set(found) & set(expected)
        if tuple(found[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = [
            _listing(title, items)
            for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong-shape keys", wrong_shape))
            if items
        ]
        raise ValueError(
            f"{source} does not match the model's layout. " + "; ".join(parts) + ". If the checkpoint is of "
            "another size than the release's full 1K model, pass its config (a dict or a folder with config.json)."
        )
