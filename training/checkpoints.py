"""A training run's checkpoint folders: their layout, writing them from every process, and reading them back.

    runs/<name>/checkpoint-0000500/
        accelerate/              accelerator.save_state(): the model, optimizer and RNG states in accelerate's own
                                 layout (sharded under FSDP or DeepSpeed); only `--resume` reads it
        trainable.safetensors    the trained tensors, whole (gathered from every process): merge, evaluate, summary
        ema.safetensors          their exponential moving average, when the run keeps one
        semantic-probe.safetensors   the toy source's alignment probe (a training aid, not part of the model)
        state.json               {"step", "config", "ema_step"}: where the run stands and what it was

Everything the model is made of is safetensors. accelerate writes the optimizer and RNG states with torch.save
and reads them back with `weights_only=True` (torch's restricted unpickler, which runs no code); accelerate's
custom-object states would be read with `weights_only=False`, so the run's own state (step, EMA, probe) is
written here as safetensors and JSON instead. Batches, noise and timesteps are pure functions of
(seed, rank, step), so the step is the data position.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ACCELERATE_STATE = "accelerate"
TRAINED_FILE = "trainable.safetensors"
EMA_FILE = "ema.safetensors"
PROBE_FILE = "semantic-probe.safetensors"
STATE_FILE = "state.json"


def folder_for(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step:07d}"


def checkpoints(output_dir: str | Path) -> list[Path]:
    """A run's complete checkpoint folders, oldest first (zero-padded names sort by step; staging folders,
    which start with a dot, are not matched)."""
    return sorted(folder for folder in Path(output_dir).glob("checkpoint-*") if (folder / STATE_FILE).is_file())


def checkpoint_step(folder: Path) -> int:
    return int(Path(folder).name.split("-")[1])


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def read_state(checkpoint: str | Path) -> dict:
    """state.json: the step, the run's whole config (as a dict) and, with EMA, the EMA's step."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder (no {STATE_FILE})")
    return json.loads(path.read_text())


def run_config(checkpoint: str | Path) -> dict:
    return read_state(checkpoint)["config"]


def trained_weights_file(checkpoint: str | Path, ema: bool | None = None) -> Path:
    """The file of a checkpoint's trained tensors: its EMA when it has one (or when `ema` is True)."""
    checkpoint = Path(checkpoint)
    if ema is None:
        ema = (checkpoint / EMA_FILE).is_file()
    path = checkpoint / (EMA_FILE if ema else TRAINED_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing" + (": the run kept no EMA (ema_decay: 0)" if ema else ""))
    return path


def load_trained(model: torch.nn.Module, checkpoint: str | Path, ema: bool | None = None) -> set[str]:
    """Lay a checkpoint's trained tensors over `model` (the rest stays as it is, but for a pixel run's
    `prediction_type`, which it takes from the run); returns their names.

    `ema`: None takes the EMA weights when the checkpoint has them, else the raw ones; True or False insists."""
    trained = load_file(str(trained_weights_file(checkpoint, ema)))
    unknown = set(trained) - set(model.state_dict())
    if unknown:
        raise ValueError(f"{checkpoint} holds tensors the model lacks: {sorted(unknown)[:5]}")
    model.load_state_dict(trained, strict=False)
    # What the pixel model's head predicts is config, not a tensor: the run's choice, whatever the model had (a
    # run from before the option predicted velocity).
    model_config = run_config(checkpoint).get("model", {})
    if model_config.get("kind") == "pixel" and hasattr(model.config, "prediction_type"):
        model.register_to_config(prediction_type=model_config.get("prediction_type", "velocity"))
    return set(trained)


def save(accelerator, folder: Path, meta: dict, trained: dict, ema: dict | None = None, probe: dict | None = None) -> Path:
    """Write a checkpoint from every process (each must call this, with the same `folder`).

    Everything goes to a staging folder beside `folder` first, renamed into place by the main process once
    all processes have written: a run killed mid-write leaves its previous checkpoints as they were."""
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging / ACCELERATE_STATE))
    if accelerator.is_main_process:
        save_file(trained, str(staging / TRAINED_FILE))
        if ema is not None:
            save_file(ema, str(staging / EMA_FILE))
        if probe is not None:
            save_file(probe, str(staging / PROBE_FILE))
        (staging / STATE_FILE).write_text(json.dumps(meta, indent=1))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    accelerator.wait_for_everyone()
    return folder


def restore(accelerator, folder: Path) -> dict:
    """Load the model, optimizer and RNG states of `folder` into the prepared objects; returns its state.json
    (the run's own EMA and probe files are read by the trainer, which owns them)."""
    folder = Path(folder)
    meta = read_state(folder)
    if not (folder / ACCELERATE_STATE).is_dir():
        raise ValueError(f"{folder} has no {ACCELERATE_STATE}/ state: it was written by an older version of "
                         "training.train and can be merged or evaluated, but not resumed")
    accelerator.load_state(str(folder / ACCELERATE_STATE))
    return meta
