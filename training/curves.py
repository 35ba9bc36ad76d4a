"""Plot training logs (`log.csv`: step, loss, ...) as one PNG, for docs/results.md.

    python -m training.curves runs/toy/source/log.csv runs/toy/transfer/log.csv --out docs/results/curves.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def plot_logs(logs: list[Path], out: Path, smooth: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for log in logs:
        rows = list(csv.DictReader(open(log)))
        steps = [int(r["step"]) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        # A trailing mean: single-batch losses of flow matching swing with the sampled timesteps.
        smoothed = [sum(losses[max(0, i - smooth + 1) : i + 1]) / len(losses[max(0, i - smooth + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, smoothed, label=f"{log.parent.name} (mean of {smooth} logs)")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    plot_logs(args.logs, args.out)


if __name__ == "__main__":
    main()
