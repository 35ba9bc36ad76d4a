"""`python -m l2p.bench.memory_plan`: which low-memory settings run the full model at 1K, 4K and 8K on a 24, 48
or 80 GB card, from the benchmark's analytic peak-memory estimate (`l2p.bench.measure.analytic_peak_memory`,
the same guard that marks a benchmark case "does not fit").

The full-size pipelines are built on the meta device (no weights, no memory), in bf16. For each setting the
estimate keeps the activations and buffers of one batch-1 generation and changes only what is resident:
- none: every component on the GPU;
- model offload (`pipe.enable_model_cpu_offload()`): one component at a time, so the largest of them
  (the 6.2B DiT, 12.3 GB, over the 4B text encoder);
- sequential offload (`pipe.enable_sequential_cpu_offload()`): one submodule at a time (the largest leaf's
  weights), at the cost of moving every weight over PCIe at every step;
and the Detailer Head untiled or tiled at 2048 px (`pipe.transformer.enable_detailer_tiling(2048)`).
A setting fits a card when its estimate is at most 90% of it (room for the CUDA context and fragmentation).
These are estimates, not measurements: they are to be checked against `python -m l2p.bench --scale full` on
each card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..device import weight_bytes
from .cases import build_pipeline
from .measure import analytic_peak_memory

GB = 10**9
CARDS_GB = (24, 48, 80)
HEADROOM = 0.9
TILE = 2048
# (name, offload, tiled), cheapest in speed first: the plan picks the first that fits.
SETTINGS = (
    ("bf16", "none", False),
    ("bf16 + head tiling", "none", True),
    ("bf16 + model offload", "model", False),
    ("bf16 + model offload + head tiling", "model", True),
    ("bf16 + sequential offload + head tiling", "sequential", True),
)
# (label, pipeline, side): the 1x model at every size (zero-shot past 1K) and the high-resolution variant.
CASES = (("1K", "pixel", 1024), ("4K zero-shot", "pixel", 4096), ("4K HR", "pixel_hr", 4096), ("8K zero-shot", "pixel", 8192), ("8K HR", "pixel_hr", 8192))


def resident_weights(pipe, offload: str) -> int:
    components = [pipe.text_encoder, pipe.transformer]
    if offload == "none":
        return weight_bytes(*components)
    if offload == "model":
        return max(weight_bytes(component) for component in components)
    leaves = [m for c in components for m in c.modules() if not list(m.children())]
    return max(weight_bytes(leaf) for leaf in leaves)


def plan(cases=CASES, settings=SETTINGS) -> list[dict]:
    rows, shared = [], {}
    for label, pipeline, side in cases:
        pipe = build_pipeline({"scale": "full"}, pipeline, side, side, "meta", torch.bfloat16, shared)
        for name, offload, tiled in settings:
            pipe.transformer.local_decoder.enable_tiling(TILE if tiled else None)
            estimate = analytic_peak_memory(pipe, "pixel", side, side)
            peak = estimate["estimated_peak_memory_bytes"] - estimate["weights_bytes"] + resident_weights(pipe, offload)
            rows.append({"case": label, "side": side, "setting": name, "peak_bytes": peak})
    return rows


def markdown(rows: list[dict]) -> str:
    cases = list(dict.fromkeys(row["case"] for row in rows))
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    peak = {(row["case"], row["setting"]): row["peak_bytes"] for row in rows}
    lines = [
        "# Full-model memory plan (analytic estimates, bf16, batch 1)",
        "",
        "Written by `python -m l2p.bench.memory_plan`; see its docstring for what each setting keeps on the GPU.",
        f"A setting fits a card when its estimate is at most {HEADROOM:.0%} of the card. Not yet measured on a GPU.",
        "",
        "| case | " + " | ".join(settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for case in cases:
        lines.append(f"| {case} | " + " | ".join(f"{peak[case, s] / GB:.1f} GB" for s in settings) + " |")
    lines += ["", "The first setting (fastest first) that fits each card:", "",
              "| case | " + " | ".join(f"{card} GB" for card in CARDS_GB) + " |", "|---|" + "---|" * len(CARDS_GB)]
    for case in cases:
        cells = []
        for card in CARDS_GB:
            fitting = [s for s in settings if peak[case, s] <= HEADROOM * card * GB]
            cells.append(fitting[0] if fitting else "does not fit")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/benchmarks/memory-plan-full.md")
    arguments = parser.parse_args(argv)
    text = markdown(plan())
    Path(arguments.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
