"""Plot training logs (`log.csv`: step, loss, ...) or toy score curves (`curve.json` from
`training.evaluate toy-curve`) as one PNG, for docs/results.md.

    python -m training.curves runs/toy/source/log.csv runs/toy/transfer/log.csv --out docs/results/curves.png
    python -m training.curves docs/results/source-curve/curve.json --out docs/results/source-score.png
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _axes():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4))


def _save(fig, ax, out: Path, **legend) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_logs(logs: list[Path], out: Path, smooth: int = 10) -> None:
    fig, ax = _axes()
    for log in logs:
        rows = list(csv.DictReader(open(log)))
        steps = [int(r["step"]) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        # A trailing mean: single-batch losses of flow matching swing with the sampled timesteps.
        smoothed = [sum(losses[max(0, i - smooth + 1) : i + 1]) / len(losses[max(0, i - smooth + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, smoothed, label=f"{log.parent.name} (mean of {smooth} logs)")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    _save(fig, ax, out)


def plot_scores(curves: list[Path], out: Path) -> None:
    fig, ax = _axes()
    for path in curves:
        record = json.loads(Path(path).read_text())
        rows = record["curve"]
        steps = [row["step"] for row in rows]
        # The score, and the partial credit that moves first while whole prompts still fail.
        for key, style in (("overall", "-o"), ("background_match", "--"), ("count_match", ":")):
            ax.plot(steps, [row.get(key, float("nan")) for row in rows], style, label=f"{Path(record['run']).name}: {key}")
    ax.set_ylabel(f"toy score ({record['prompts']} prompts)")
    ax.set_ylim(0, 1)
    _save(fig, ax, out, fontsize=8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="log.csv files, or curve.json files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if all(path.suffix == ".json" for path in args.logs):
        plot_scores(args.logs, args.out)
    else:
        plot_logs(args.logs, args.out)


if __name__ == "__main__":
    main()
