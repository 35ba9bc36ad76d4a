"""Whole generations, the pixel model against its latent source, side by side in one process.

    python -m l2p.bench.generation [--repeats 10] [--threads 2] [--batch 1]

Each embedded pipeline (`assets/tiny-source`, `assets/tiny-l2p`, or --source/--pixel) runs as its
`sampling.json` says (size, steps, guidance, so classifier-free guidance in both), on the same prompt and seed:
text encoding, every DiT step and, for the source, the VAE decode, to a PIL image. The two alternate so that
drift in the machine's speed falls on both alike. The source's VAE decode is also timed on its own, to show
each pipeline's split. Writes docs/benchmarks/generation-<scale>-cpu.{json,md}. Target (issue 11): the pixel
model's generation at most 1.25x the source's at the native size, as at 1K where the DiT dominates both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET_RATIO = 1.25


def measure(source_folder: Path, pixel_folder: Path, prompt: str, seed: int, repeats: int, batch: int) -> dict:
    import torch
    from diffusers import ZImagePipeline

    from .. import L2PPipeline
    from ..latents import destandardise_latents
    from ..sampling import read_sampling
    from .measure import timed

    pipes = {"source": ZImagePipeline.from_pretrained(source_folder), "pixel": L2PPipeline.from_pretrained(pixel_folder)}
    settings = {name: read_sampling(folder) for name, folder in (("source", source_folder), ("pixel", pixel_folder))}
    for name, value in settings.items():
        if value is None:
            raise FileNotFoundError(f"the {name} folder has no sampling.json: which size and steps to compare is unknown")
    if settings["source"].size != settings["pixel"].size:
        raise ValueError(f"native sizes differ: source {settings['source'].size}, pixel {settings['pixel'].size}")

    def generation(name):
        pipes[name]([prompt] * batch, generator=[torch.Generator().manual_seed(seed + i) for i in range(batch)],
                    **settings[name].as_kwargs())

    latents = pipes["source"]([prompt] * batch, output_type="latent", generator=torch.Generator().manual_seed(seed),
                              **settings["source"].as_kwargs()).images
    vae = pipes["source"].vae

    def decode():
        with torch.no_grad():
            vae.decode(destandardise_latents(vae, latents))

    cpu = torch.device("cpu")
    for name in pipes:  # warm-up
        generation(name)
    seconds = {"source": [], "pixel": [], "source_vae_decode": []}
    for _ in range(repeats):
        for name in ("source", "pixel"):
            seconds[name].append(timed(lambda: generation(name), cpu))
        seconds["source_vae_decode"].append(timed(decode, cpu))
    return {"settings": {name: value.as_kwargs() for name, value in settings.items()}, "seconds": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO / "assets" / "tiny-source")
    parser.add_argument("--pixel", type=Path, default=REPO / "assets" / "tiny-l2p")
    parser.add_argument("--prompt", default="a red circle and a blue square")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1, help="images per generation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", default="tiny", help="names the output files")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    import torch

    from ..device import device_description

    torch.set_num_threads(args.threads)
    measured = measure(args.source, args.pixel, args.prompt, args.seed, args.repeats, args.batch)
    median = {name: statistics.median(values) for name, values in measured["seconds"].items()}
    ratio = median["pixel"] / median["source"]
    paired = statistics.median(p / s for p, s in zip(measured["seconds"]["pixel"], measured["seconds"]["source"]))
    result = {
        "device": "cpu", "device_description": device_description("cpu"), "threads": args.threads, "batch": args.batch, "prompt": args.prompt, **measured,
        "median_s": median, "pixel_over_source": ratio, "pixel_over_source_paired": paired, "target": TARGET_RATIO,
        "command": "python -m l2p.bench.generation " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    source, pixel = (measured["settings"][name] for name in ("source", "pixel"))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"generation-{args.scale}-cpu"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    decode_share = median["source_vae_decode"] / median["source"]
    stem.with_suffix(".md").write_text(
        f"# Whole generations, pixel model against its source ({args.scale}, CPU, {args.threads} thread(s))\n\n"
        f"Machine: {result['device_description']}.\n\n"
        f"`{result['command']}`: {args.repeats} generations of each, alternating, batch {args.batch}, prompt "
        f"{args.prompt!r}; each pipeline at its sampling.json: {source['width']}x{source['height']}, "
        f"{source['num_inference_steps']} / {pixel['num_inference_steps']} steps, guidance {source['guidance_scale']} "
        f"(Z-Image's convention) / {pixel['guidance_scale']} (L2P's), the same strength"
        + (f"; the pixel model's guidance starts at normalised time {pixel['cfg_start']:g} (its first steps run one "
           "forward, not two)" if pixel.get("cfg_start") else "") + ".\n\n"
        "| source (DiT steps + VAE decode), median | of it, VAE decode | pixel (DiT steps + Detailer Head), median "
        "| pixel / source | paired | target |\n|---|---|---|---|---|---|\n"
        f"| {median['source']:.3f} s | {median['source_vae_decode']:.3f} s ({decode_share:.0%}) | {median['pixel']:.3f} s "
        f"| {ratio:.2f}x | {paired:.2f}x | <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'not met'} |\n\n"
        "Paired: the median of each pixel generation over the source generation just before it.\n"
    )
    print(json.dumps({k: result[k] for k in ("median_s", "pixel_over_source", "pixel_over_source_paired")}, indent=1))


if __name__ == "__main__":
    main()
