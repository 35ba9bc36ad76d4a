"""Compare training runs side by side: what each one trained, how far its loss fell by common steps, and its toy
scores there, as one Markdown table (the transfer-versus-scratch comparison and the depth ablation in
docs/results.md).

    python -m training.summary runs/toy/transfer runs/toy/scratch --at 200 400 600 800 --out docs/results/transfer-vs-scratch.md

Runs with the same seed, corpus and batch size see the same images, captions, noise and timesteps at every step
(all are pure functions of seed, rank and step), so their losses at a step are a paired comparison. Each loss is
the mean of the logged losses over the `--window` steps ending there, which averages over the sampled timesteps.
A score column appears where the run folder holds a `curve.json` from `training.evaluate toy-curve ... --out RUN`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from safetensors import safe_open

from .files import atomic_file
from .checkpoints import TRAINED_FILE, checkpoints, run_config


def parameter_count(folder: Path) -> int:
    """The number of parameters a checkpoint's trained tensors hold, read from the file's header only."""
    with safe_open(str(folder / TRAINED_FILE), "pt") as tensors:
        return sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())


def model_parameter_count(config: dict) -> int:
    """All parameters of the pixel model a run trains (the frozen ones included), from configs alone: the models
    are built on the meta device, so no weights are read (the full-scale source is 6B parameters)."""
    from accelerate import init_empty_weights
    from diffusers import ZImageTransformer2DModel

    from l2p import L2PTransformer2DModel

    m = config["model"]
    with init_empty_weights():
        source = ZImageTransformer2DModel.from_config(ZImageTransformer2DModel.load_config(m["source"], subfolder="transformer"))
        model = L2PTransformer2DModel.from_source(
            source, patch_size=m["patch_size"], detailer_channels=m["detailer_channels"], trained_grid=m["trained_grid"]
        )
    return sum(parameter.numel() for parameter in model.parameters())


def mean_loss(rows: list[dict], at: int, window: int) -> float | None:
    losses = [float(row["loss"]) for row in rows if at - window < int(row["step"]) <= at]
    return sum(losses) / len(losses) if losses and int(rows[-1]["step"]) >= at else None


def summarize(run: Path, at: list[int], window: int) -> dict:
    found = checkpoints(run)
    if not found:
        raise FileNotFoundError(f"{run} has no checkpoint-* folders")
    config = run_config(found[-1])
    rows = list(csv.DictReader(open(run / "log.csv")))
    trained = parameter_count(found[-1])
    total = model_parameter_count(config) if config["model"]["kind"] == "pixel" else trained
    curve = run / "curve.json"
    scores = {row["step"]: row["overall"] for row in json.loads(curve.read_text())["curve"]} if curve.is_file() else {}
    return {
        "run": run.name,
        "init": config["model"]["init"],
        "n_shallow": config["model"]["n_shallow"] if config["model"]["init"] == "source" else "all",
        "trainable": trained,
        "fraction": trained / total,
        "seconds_per_step": float(rows[-1]["seconds"]) / int(rows[-1]["step"]),
        "loss": {step: mean_loss(rows, step, window) for step in at},
        "score": {step: scores.get(step) for step in at},
    }


def markdown(summaries: list[dict], window: int) -> str:
    steps = list(summaries[0]["loss"])
    scored = [step for step in steps if any(s["score"][step] is not None for s in summaries)]  # others have no column
    show = lambda value, form: "-" if value is None else format(value, form)  # noqa: E731
    header = ["run", "init", "trained blocks (n_shallow)", "trainable parameters", "s/step"]
    header += [f"loss @{step}" for step in steps] + [f"score @{step}" for step in scored]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        cells = [s["run"], s["init"], str(s["n_shallow"]), f"{s['trainable']:,} ({s['fraction']:.0%})", f"{s['seconds_per_step']:.2f}"]
        cells += [show(s["loss"][step], ".4f") for step in steps]
        cells += [show(s["score"][step], ".3f") for step in scored]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nLoss: mean of the logged training losses over the {window} steps up to each step (the same batches in every run).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders")
    parser.add_argument("--at", nargs="+", type=int, required=True, help="steps to compare at")
    parser.add_argument("--window", type=int, default=100, help="steps averaged into each loss")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    table = markdown([summarize(run, args.at, args.window) for run in args.runs], args.window)
    print(table)
    if args.out:
        with atomic_file(args.out, "w") as stream:
            stream.write(table)


if __name__ == "__main__":
    main()
