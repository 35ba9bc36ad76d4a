"""The benchmark's outputs: `<scale>-<device>.json` (the records with the device, versions and command), `.md` (the
table, with the paper's targets where the run has the numbers) and `.png` (time, memory and decode against size)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .cases import PIPELINES


def _fmt_bytes(value) -> str:
    return "" if value is None else f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def _fmt_seconds(value) -> str:
    if value is None:
        return ""
    return f"{value:.3f} s" if value >= 1 else f"{value * 1e3:.1f} ms"


def markdown_table(result: dict) -> str:
    meta, records = result["meta"], result["records"]
    by_size_source = {(r["width"], r["height"]): r for r in records if r["pipeline"] == "source" and r["status"] == "ok"}
    lines = [
        f"# L2P benchmark: {meta['scale']} scale on {meta['device']}",
        "",
        f"- device: {meta['device_description']}; dtype {meta['dtype']}; attention {meta['attention']}"
        + (f"; {meta['threads']} CPU threads" if meta.get("threads") else ""),
        f"- matmul peak measured: {meta['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; FLOPs: {meta['flops_method']}",
        f"- step: one denoising forward, batch 1, no CFG; median of {meta['timed_steps']} after {meta['warmup_steps']} warm-up",
        f"- peak memory: {meta['memory_method']}; a whole {meta['generation_steps']}-step generation, weights included",
        f"- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- command: `{' '.join(meta['command'].split())}` ({meta['date']})",
        f"- models: {json.dumps(meta['models'])}",
        "",
        "| size | pipeline | patch | tokens | step | vs source | text enc. | VAE decode | peak memory | vs source "
        "| est. peak | GFLOP/step | of peak | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        source = by_size_source.get((r["width"], r["height"]))
        speed = memory = ""
        if source and r["status"] == "ok" and r["pipeline"] != "source":
            speed = f"{source['step_s'] / r['step_s']:.2f}x faster" if r["step_s"] <= source["step_s"] else f"{r['step_s'] / source['step_s']:.2f}x slower"
            memory = f"{r['peak_memory_bytes'] / source['peak_memory_bytes']:.2f}x"
        status = r["status"] if r["status"] == "ok" or not r.get("note") else f"{r['status']}: {r['note']}"
        flops = r.get("flops_per_step")
        fraction = r.get("achieved_fraction_of_peak")
        lines.append(
            f"| {r['width']}x{r['height']} | {r['pipeline']} | {r.get('patch_size', '')} | {r.get('tokens', '')} "
            f"| {_fmt_seconds(r.get('step_s'))} | {speed} | {_fmt_seconds(r.get('text_encode_s'))} "
            f"| {_fmt_seconds(r.get('vae_decode_s'))} | {_fmt_bytes(r.get('peak_memory_bytes'))} | {memory} "
            f"| {_fmt_bytes(r.get('estimated_peak_memory_bytes'))} | {'' if flops is None else f'{flops / 1e9:.2f}'} | {'' if fraction is None else f'{fraction:.1%}'} | {status} |"
        )
    lines += _targets(records)
    if result.get("skipped"):
        lines += ["", "Skipped (predicted time over the budget of "
                  f"{meta['time_budget_s']:.0f} s per case):"]
        lines += [f"- {s['pipeline']} {s['width']}x{s['height']}: predicted {s['predicted_s']:.0f} s" for s in result["skipped"]]
    lines += ["", "Source: patch is the latent patch (VAE factor 8 x 2 = 16 px per token); pixel_hr: the high-resolution "
              "patch and head. \"est. peak\" is the analytic estimate (parameters + activations) that decides "
              "\"does not fit\" before a case runs; \"of peak\" is FLOPs per step / step time / measured matmul peak."]
    return "\n".join(lines) + "\n"


def _targets(records: list[dict]) -> list[str]:
    """The issue's targets, checked where this run has the numbers (they are meant for full scale on a GPU)."""
    ok = {(r["pipeline"], r["width"], r["height"]): r for r in records if r["status"] == "ok"}
    lines = []
    source, hr = ok.get(("source", 4096, 4096)), ok.get(("pixel_hr", 4096, 4096))
    if source and hr:
        step = hr["step_s"] / source["step_s"]
        memory = hr["peak_memory_bytes"] / source["peak_memory_bytes"]
        lines.append(f"- 4K step, pixel_hr (patch {hr['patch_size']}) / source: {step:.4f} = 1/{1 / step:.1f} "
                     f"(target <= 1/43: {'met' if step <= 1 / 43 else 'not met'})")
        lines.append(f"- 4K peak memory, pixel_hr / source: {memory:.3f} (target <= 0.61: {'met' if memory <= 0.61 else 'not met'})")
    hr8 = next((r for r in records if r["pipeline"] == "pixel_hr" and max(r["width"], r["height"]) == 8192), None)
    if hr8:
        peak = hr8["peak_memory_bytes"] or hr8.get("estimated_peak_memory_bytes")
        kind = "measured" if hr8["peak_memory_bytes"] else "estimated"
        lines.append(f"- 8K pixel_hr peak memory ({kind}): {_fmt_bytes(peak)} "
                     f"(target: fits in 48 GB: {'met' if peak <= 48e9 else 'not met'})")
    return ["", "Targets (issue 6):", *lines] if lines else []


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    meta = result["meta"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    markers = {"source": "s", "pixel": "o", "pixel_hr": "^"}
    for pipeline in PIPELINES:
        done = sorted((r for r in result["records"] if r["pipeline"] == pipeline and r["status"] == "ok"
                       and r.get("step_s") is not None), key=lambda r: r["width"] * r["height"])
        sides = [math.sqrt(r["width"] * r["height"]) for r in done]
        axes[0].plot(sides, [r["step_s"] for r in done], marker=markers[pipeline], label=pipeline)
        axes[1].plot(sides, [r["peak_memory_bytes"] / 2**30 for r in done], marker=markers[pipeline], label=pipeline)
        unfit = [r for r in result["records"] if r["pipeline"] == pipeline and r["status"] == "does not fit"
                 and r.get("estimated_peak_memory_bytes")]
        if unfit:
            axes[1].scatter([math.sqrt(r["width"] * r["height"]) for r in unfit],
                            [r["estimated_peak_memory_bytes"] / 2**30 for r in unfit], marker="x", color="red",
                            label=f"{pipeline}: does not fit (estimate)")
        if pipeline == "source":
            axes[2].plot(sides, [r["vae_decode_s"] for r in done], marker="s", label="source VAE decode")
        axes[2].plot(sides, [r["text_encode_s"] for r in done], marker=markers[pipeline], linestyle=":",
                     label=f"{pipeline} text encoding")
    for ax, title, unit in zip(axes, ("time per step", "peak memory (whole generation)", "decode and text encoding"),
                               ("s", "GiB", "s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image side (sqrt of pixels)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"L2P {meta['scale']} scale, {meta['device_description']}, {meta['dtype']}\n{meta['command']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result['meta']['scale']}-{result['meta']['device']}"
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown_table(result))
    plot(result, paths["png"])
    return paths
