"""Evaluate a pipeline folder: toy-world GenEval-style scores, or full-scale benchmark image sets.

    python -m training.evaluate toy assets/tiny-source --prompts 300 --out docs/eval/tiny-source
    python -m training.evaluate toy-curve runs/toy/source --base runs/toy/source-init --prompts 100 --out docs/eval/curve
    python -m training.evaluate vae assets/tiny-source/vae --out docs/eval/vae   # reconstruction PSNR + pictures
    python -m training.evaluate denoise assets/tiny-l2p --out docs/eval/denoise  # one-step denoising PSNR per sigma
    python -m training.evaluate probe assets/tiny-l2p --out docs/eval/probe  # what each block's tokens know (linear probes)
    python -m training.evaluate binding assets/tiny-l2p --out docs/eval/binding  # do the prompt's colour words move the objects?
    python -m training.evaluate token-noise assets/tiny-l2p --out docs/eval/noise  # how much of block 0's tokens is the noise?
    python -m training.evaluate geneval PIPELINE --out outputs/geneval   # GenEval's folder layout
    python -m training.evaluate dpg PIPELINE --out outputs/dpg           # DPG-Bench's 2x2 grids

The pipeline folder may hold a `ZImagePipeline` (the latent source) or an `L2PPipeline` (the pixel model);
both get the same prompts and the same seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers import ZImagePipeline
from diffusers.utils import make_image_grid
from PIL import Image

from l2p import L2PPipeline
from l2p.latents import destandardise_latents, standardise_latents
from l2p.quantization import WEIGHT_ONLY, dit_quantization
from l2p.rope import STRATEGIES
from l2p.sampling import RELEASE_SAMPLING, SamplingSettings, read_sampling, zimage_guidance
from l2p.sharpness import mean_edge_width
from l2p.toyworld import partial_credit, sample_prompts, score

from .files import atomic_file
from .toy_data import object_weights, toy_batch
from .checkpoints import checkpoint_step, checkpoints, load_trained
from .flow import noised, predict
from .vae import HELD_OUT_SEED_OFFSET, psnr, reconstruct

# Evaluation prompts and seeds start here: training draws its toy renders from other seed streams
# (`ToyCorpus`, `toy_batch`) and the transfer's prompts from seed 1 (`training.toy_assets`).
HELD_OUT_SEED = 900_000
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def load_pipeline(folder: str | Path, quantize: str | None = None):
    """The pipeline class a folder declares, in float32 (the tiny models run on CPUs); `quantize` ("int8",
    "fp8"): the DiT's weights only, through torchao (`l2p.quantization`)."""
    index = json.loads((Path(folder) / "model_index.json").read_text())
    cls = {"ZImagePipeline": ZImagePipeline, "L2PPipeline": L2PPipeline}.get(index["_class_name"])
    if cls is None:
        raise ValueError(f"{folder} holds a {index['_class_name']}, not a ZImagePipeline or L2PPipeline")
    options = {} if quantize is None else {"quantization_config": dit_quantization(quantize)}
    pipe = cls.from_pretrained(folder, dtype=torch.float32, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def guidance_for(pipe, guidance: float) -> float:
    """The same guidance strength for both families: `guidance` in L2P's convention, in the pipeline's own."""
    return guidance if isinstance(pipe, L2PPipeline) else zimage_guidance(guidance)


def run_settings(folder, pipe, steps: int | None = None, guidance: float | None = None, size: int | None = None,
                 height: int | None = None, width: int | None = None, cfg_start: float | None = None) -> SamplingSettings:
    """How to run a folder's pipeline: its `sampling.json`, with any of steps, guidance (in L2P's convention,
    so that both families get the same strength), a square size or a height and width, or an L2P pipeline's
    guidance interval start (`cfg_start`) given here instead."""
    own = read_sampling(folder)
    if own is None:  # a released model from the Hub: the L2P release's settings, the same strength for Z-Image
        r = RELEASE_SAMPLING
        own = SamplingSettings(r.height, r.width, r.num_inference_steps, guidance_for(pipe, r.guidance_scale))
    cfg_start = own.cfg_start if cfg_start is None else cfg_start
    if cfg_start and not isinstance(pipe, L2PPipeline):
        raise ValueError(f"cfg_start applies to L2P pipelines; {folder} holds a {type(pipe).__name__}")
    return SamplingSettings(
        height=height or size or own.height,
        width=width or size or own.width,
        num_inference_steps=steps or own.num_inference_steps,
        guidance_scale=own.guidance_scale if guidance is None else guidance_for(pipe, guidance),
        cfg_start=cfg_start,
    )


def generate(pipe, prompts: list[str], seeds: list[int], settings: SamplingSettings, batch_size: int = 8, **options):
    """`options`: further pipeline arguments (an L2P pipeline's `rope_scaling`)."""
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(s) for s in seeds[start : start + batch_size]]
        images += pipe(chunk, generator=generators, **settings.as_kwargs(), **options).images
    return images


def grid(images: list[Image.Image], columns: int = 8) -> Image.Image:
    """A contact sheet, `columns` wide; a short last row is filled with white."""
    rows = -(-len(images) // columns)
    blank = Image.new("RGB", images[0].size, "white")
    return make_image_grid(list(images) + [blank] * (rows * columns - len(images)), rows=rows, cols=columns)


def measure(images: list[Image.Image], prompts: list[str]) -> dict[str, float]:
    """The toy scores, the partial credit a weak model already earns (right background, right object count),
    and the border sharpness of the same images (l2p.sharpness: what a VAE blurs and a pixel model need not)."""
    return {**score(images, prompts), **partial_credit(images, prompts), "edge_width_px": mean_edge_width(images)}


def evaluate_toy(folder, n_prompts: int = 300, seed: int = HELD_OUT_SEED, steps: int | None = None, guidance: float | None = None,
                 size: int | None = None, out: str | Path | None = None, quantize: str | None = None,
                 rope: str | None = None, shift: float | None = None, cfg_start: float | None = None) -> dict:
    """Toy GenEval: one image per prompt, prompt i with seed `seed + i`, scored by the toy evaluator; the size,
    steps and guidance are the folder's `sampling.json` unless given; `quantize`: see `load_pipeline`; `rope`: a
    pixel model's RoPE strategy past its trained grid (l2p.rope: pi, ntk, yarn, dype; None: plain positions);
    `shift`: a pixel model's sampling shift for this evaluation (None: its scheduler's, the release's 3);
    `cfg_start`: a pixel model's guidance interval start (None: its sampling.json's)."""
    pipe = load_pipeline(folder, quantize)
    if rope is not None and not isinstance(pipe, L2PPipeline):
        raise ValueError(f"--rope applies to L2P pipelines; {folder} holds a {type(pipe).__name__}")
    settings = run_settings(folder, pipe, steps, guidance, size, cfg_start=cfg_start)
    pairs = sample_prompts(n_prompts, seed=seed)
    prompts = [prompt for _, prompt in pairs]
    started = time.time()
    options = {"rope_scaling": rope} if rope is not None else {}
    options.update(shift_option(folder, pipe, shift))
    images = generate(pipe, prompts, [seed + i for i in range(len(prompts))], settings, **options)
    result = measure(images, prompts)
    result.update(pipeline=str(folder), prompts=len(prompts), seed=seed, steps=settings.num_inference_steps,
                  size=[settings.width, settings.height], guidance=settings.guidance_scale, cfg_start=settings.cfg_start,
                  seconds=round(time.time() - started, 1),
                  quantize=quantize, rope=rope, shift=shift)
    if out is not None:
        out = Path(out)
        with atomic_file(out / "scores.json", "w") as stream:
            json.dump(result, stream, indent=1)
        with atomic_file(out / "samples.png") as stream:
            grid(images[:48]).save(stream, format="PNG")
    return result


def shift_option(folder, pipe, shift: float | None) -> dict:
    """The pipeline argument for a sampling shift other than the scheduler's: only L2P's pipeline takes one per call."""
    if shift is None:
        return {}
    if not isinstance(pipe, L2PPipeline):
        raise ValueError(f"--shift applies to L2P pipelines; {folder} holds a {type(pipe).__name__}")
    return {"shift": shift}


def evaluate_checkpoints(run, base, n_prompts: int = 100, seed: int = HELD_OUT_SEED, steps: int | None = None,
                         guidance: float | None = None, out: str | Path | None = None, every: int = 1,
                         shift: float | None = None, cfg_start: float | None = None) -> list[dict]:
    """Toy score against training step: the `base` pipeline with each checkpoint's trained tensors in turn.

    `base` holds everything a checkpoint does not: for the latent source its components folder (every DiT
    tensor is trained), for a transfer the merged pipeline (the frozen middle blocks are the source's)."""
    pipe = load_pipeline(base)
    settings = run_settings(base, pipe, steps, guidance, cfg_start=cfg_start)
    options = shift_option(base, pipe, shift)
    chosen = [folder for folder in checkpoints(run) if checkpoint_step(folder) % every == 0]
    if not chosen:
        raise FileNotFoundError(f"no checkpoint-* folders (at multiples of {every} steps) in {run}")
    pairs = sample_prompts(n_prompts, seed=seed)
    prompts = [prompt for _, prompt in pairs]
    seeds = [seed + i for i in range(len(prompts))]
    rows = []
    for folder in chosen:
        load_trained(pipe.transformer, folder)
        result = measure(generate(pipe, prompts, seeds, settings, **options), prompts)
        rows.append({"step": checkpoint_step(folder), **result})
        print(json.dumps(rows[-1]), flush=True)
    if out is not None:
        with atomic_file(Path(out) / "curve.json", "w") as stream:
            json.dump({"run": str(run), "base": str(base), "prompts": n_prompts, "seed": seed, **asdict(settings), "shift": shift,
                       "curve": rows}, stream, indent=1)
    return rows


def evaluate_vae(folder, n_images: int = 64, resolution: int | None = None, seed: int = 1 + HELD_OUT_SEED_OFFSET,
                 out: str | Path | None = None) -> dict:
    """Reconstruction PSNR of a VAE folder on toy renders (by default the held-out set that
    training/configs/toy/vae.yaml, seed 1, reports on), the mean edge width of the renders and of their
    reconstructions (what the VAE alone does to borders: the floor for any latent model's sharpness), and a sheet
    of the first four: renders over reconstructions. The renders are `resolution` px square, by default the
    native size in the `sampling.json` of the pipeline folder holding the VAE."""
    from diffusers import AutoencoderKL
    from diffusers.image_processor import VaeImageProcessor

    if resolution is None:
        settings = read_sampling(Path(folder).parent)
        if settings is None:
            raise ValueError(f"no sampling.json beside {folder} says the native size: pass --size")
        resolution = settings.width

    vae = AutoencoderKL.from_pretrained(folder).eval()
    images, _, _ = toy_batch(0, n_images, resolution, seed=seed)
    reconstructions, _ = reconstruct(vae, images)
    scores = psnr(reconstructions, images)
    processor = VaeImageProcessor()
    renders, rebuilt = (processor.postprocess(batch.clamp(-1, 1), output_type="pil") for batch in (images, reconstructions))
    result = {"vae": str(folder), "images": n_images, "resolution": resolution, "seed": seed,
              "psnr_db": scores.mean().item(), "psnr_db_min": scores.min().item(),
              "edge_width_px_renders": mean_edge_width(renders), "edge_width_px_reconstructions": mean_edge_width(rebuilt)}
    if out is not None:
        shown = min(4, n_images)
        pictures = renders[:shown] + rebuilt[:shown]
        with atomic_file(Path(out) / "reconstruction.png") as stream:
            grid(pictures, columns=shown).save(stream, format="PNG")
        result["shown_psnr_db"] = [round(v, 2) for v in scores[:shown].tolist()]
        with atomic_file(Path(out) / "scores.json", "w") as stream:
            json.dump(result, stream, indent=1)
    return result


# Noise levels the one-step denoising diagnostic reports: 0.136 is the last nonzero sigma of a 20-step
# sampling run at shift 3 (its error is what stays in the image as grain), 0.95 is where composition is decided.
DENOISE_SIGMAS = (0.05, 0.136, 0.3, 0.5, 0.8, 0.95)


def masked_psnr(estimate: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR in dB on [0, 1] pixels over the masked pixels of all images together."""
    error = ((estimate.clamp(-1, 1) - target) / 2).square().mean(1, keepdim=True)
    return 10 * torch.log10(mask.sum() / (error * mask).sum().clamp_min(1e-12)).item()


def objects_mean_colour(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C) each image's mean colour over its object pixels (`mask`: (B, 1, H, W) booleans)."""
    return (images * mask).sum((2, 3)) / mask.sum((2, 3)).clamp_min(1)


def object_colour_error(estimate: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute difference (in [-1, 1] units, per channel) between each image's mean colour over its
    objects in the estimate and in the render: whether the named colours come out, whatever the shapes."""
    return (objects_mean_colour(estimate.clamp(-1, 1), mask) - objects_mean_colour(target, mask)).abs().mean().item()


def caption_features(pipe, prompts: list[str]) -> list[torch.Tensor]:
    """The prompts' text features as the DiT takes them, in float32, without a guidance pair. The pipeline gets a
    copy of the list: Z-Image's `encode_prompt` writes its chat template into the list it is given."""
    features, _ = pipe.encode_prompt(list(prompts), device="cpu", do_classifier_free_guidance=False)
    return [f.float() for f in features]


def in_model_space(pipe, images: torch.Tensor) -> torch.Tensor:
    """Renders as the pipeline's DiT denoises them: pixels, or a latent source's standardised VAE latents."""
    vae = getattr(pipe, "vae", None)
    return images if vae is None else standardise_latents(vae, vae.encode(images).latent_dist.mode())


def to_pixels(pipe, x: torch.Tensor) -> torch.Tensor:
    """The inverse of `in_model_space`: a latent source's latents decoded through its VAE; pixels as they are."""
    vae = getattr(pipe, "vae", None)
    return x if vae is None else vae.decode(destandardise_latents(vae, x)).sample


def one_step_estimate(pipe, x_t: torch.Tensor, sigma: float, captions) -> torch.Tensor:
    """x0_hat = x_t + sigma * the DiT's prediction (x0 - noise, `training.flow`), in the model's own space."""
    t = torch.full((len(x_t),), 1.0 - sigma)
    return x_t + sigma * predict(pipe.transformer, x_t, t, captions, latent=getattr(pipe, "vae", None) is not None)


def evaluate_denoising(folder, checkpoint=None, n_images: int = 32, sigmas=DENOISE_SIGMAS, seed: int = HELD_OUT_SEED,
                       size: int | None = None, out: str | Path | None = None) -> dict:
    """One-step denoising against noise level, what a sampling run is made of, on held-out toy renders.

    For each sigma: x_t = (1 - sigma) x0 + sigma noise; the DiT's prediction (x0 - noise, `training.flow`) gives
    x0_hat = x_t + sigma * prediction, scored as PSNR against the render beside the PSNR of x_t itself (doing
    nothing), as PSNR over the objects alone (off the background: where the toy's content is), and as the
    error of the objects' mean colour. Low sigmas say whether a model removes the last of the noise (a pixel
    model that cannot leaves grain), high sigmas whether it knows what to draw. A latent source is noised and scored through its VAE
    (encode, noise the standardised latent, decode x0_hat), so its numbers include the VAE's floor; a pixel
    model is noised in pixels. `checkpoint`: a checkpoint-* folder of a run laid over the folder's DiT."""
    pipe = load_pipeline(folder)
    if checkpoint is not None:
        load_trained(pipe.transformer, checkpoint)
    resolution = size or run_settings(folder, pipe).width
    images, prompts, _ = toy_batch(0, n_images, resolution, seed=seed)
    objects = object_weights(images, 1.0) > 1  # (B, 1, H, W): off the background colour
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        captions = caption_features(pipe, prompts)
        clean = in_model_space(pipe, images)
        for sigma in sigmas:
            noise = torch.randn(clean.shape, generator=generator)
            x_t = noised(clean, noise, torch.full((n_images,), sigma))
            estimate, noisy = to_pixels(pipe, one_step_estimate(pipe, x_t, sigma, captions)), to_pixels(pipe, x_t)
            rows.append({"sigma": sigma, "psnr_db": psnr(estimate, images).mean().item(),
                         "psnr_db_noisy": psnr(noisy, images).mean().item(),
                         "psnr_db_objects": masked_psnr(estimate, images, objects),
                         "object_colour_error": object_colour_error(estimate, images, objects)})
    result = {"pipeline": str(folder), "checkpoint": None if checkpoint is None else str(checkpoint),
              "space": "pixels" if getattr(pipe, "vae", None) is None else "latents (scored after the VAE decode)",
              "images": n_images, "resolution": resolution, "seed": seed, "levels": rows}
    if out is not None:
        with atomic_file(Path(out) / "denoising.json", "w") as stream:
            json.dump(result, stream, indent=1)
    return result


def evaluate_geneval(folder, out, samples: int = 4, steps: int | None = None, guidance: float | None = None, size: int | None = None):
    """Images for GenEval's 553 prompts in its layout: <out>/<index:05d>/samples/<n:05d>.png + metadata.jsonl."""
    pipe = load_pipeline(folder)
    settings = run_settings(folder, pipe, steps, guidance, size)
    lines = (SHARED_DATA / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    for index, line in enumerate(lines):
        target = Path(out) / f"{index:05d}"
        if (target / "samples" / f"{samples - 1:05d}.png").exists():
            continue  # resumable
        metadata = json.loads(line)
        images = generate(pipe, [metadata["prompt"]] * samples, list(range(samples)), settings)
        for n, image in enumerate(images):
            with atomic_file(target / "samples" / f"{n:05d}.png") as stream:
                image.save(stream, format="PNG")
        with atomic_file(target / "metadata.jsonl", "w") as stream:
            stream.write(line + "\n")


def evaluate_dpg(folder, out, steps: int | None = None, guidance: float | None = None, size: int | None = None):
    """Images for DPG-Bench's prompts: one 2x2 grid of four seeds per item, <out>/<item_id>.png."""
    pipe = load_pipeline(folder)
    settings = run_settings(folder, pipe, steps, guidance, size)
    for line in (SHARED_DATA / "dpg_bench" / "prompts.jsonl").read_text().splitlines():
        record = json.loads(line)
        target = Path(out) / f"{record['item_id']}.png"
        if target.exists():
            continue
        images = generate(pipe, [record["prompt"]] * 4, [0, 1, 2, 3], settings)
        with atomic_file(target) as stream:
            grid(images, columns=2).save(stream, format="PNG")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["toy", "toy-curve", "vae", "denoise", "probe", "binding", "token-noise", "geneval",
                                                      "dpg"])
    parser.add_argument("pipeline", help="a ZImagePipeline or L2PPipeline folder (toy-curve: a training run folder; "
                                         "vae: an AutoencoderKL folder)")
    parser.add_argument("--base", help="toy-curve: the pipeline folder the run's checkpoints are loaded into")
    parser.add_argument("--checkpoint", help="denoise, probe, binding, token-noise: a checkpoint-* folder of a run laid over the pipeline's DiT")
    parser.add_argument("--sigma", type=float, default=0.5, help="probe: the noise level of the probed renders")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompts", type=int, default=300, help="toy: number of prompts")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                        help=f"toy: prompt i is drawn and sampled with seed + i (default {HELD_OUT_SEED}, never used in training)")
    parser.add_argument("--steps", type=int, default=None, help="default: the folder's sampling.json (30 without one)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="in L2P's convention (1 = off); default: the folder's sampling.json (2.0 without one)")
    parser.add_argument("--size", type=int, default=None, help="a square side; default: the folder's sampling.json")
    parser.add_argument("--shift", type=float, default=None,
                        help="toy, toy-curve: a pixel model's sampling shift (default: its scheduler's, the release's 3)")
    parser.add_argument("--cfg-start", type=float, default=None,
                        help="toy, toy-curve: a pixel model's guidance interval start, normalised time in [0, 1] "
                             "(default: its sampling.json's, else 0: guided at every step)")
    parser.add_argument("--every", type=int, default=1, help="toy-curve: only checkpoints at multiples of this step")
    parser.add_argument("--rope", choices=[s for s in STRATEGIES if s], default=None,
                        help="toy: a pixel model's RoPE strategy past its trained grid (default: plain positions)")
    parser.add_argument("--quantize", choices=sorted(WEIGHT_ONLY), default=None,
                        help="toy: the DiT's weights only, through torchao (pip install torchao)")
    args = parser.parse_args(argv)
    if args.benchmark == "toy":
        result = evaluate_toy(args.pipeline, args.prompts, args.seed, args.steps, args.guidance, args.size, args.out,
                              args.quantize, args.rope, args.shift, args.cfg_start)
        print(json.dumps(result, indent=1))
    elif args.benchmark == "toy-curve":
        if not args.base:
            parser.error("toy-curve needs --base, the pipeline folder the checkpoints belong to")
        evaluate_checkpoints(args.pipeline, args.base, args.prompts, args.seed, args.steps, args.guidance, args.out,
                             args.every, args.shift, args.cfg_start)
    elif args.benchmark == "vae":
        print(json.dumps(evaluate_vae(args.pipeline, resolution=args.size, out=args.out), indent=1))
    elif args.benchmark == "denoise":
        result = evaluate_denoising(args.pipeline, args.checkpoint, size=args.size, seed=args.seed, out=args.out)
        for level in result["levels"]:
            print(f"sigma {level['sigma']:.3f}: x0_hat {level['psnr_db']:5.1f} dB (x_t {level['psnr_db_noisy']:5.1f}), "
                  f"objects {level['psnr_db_objects']:5.1f} dB, object colour error {level['object_colour_error']:.3f}")
    elif args.benchmark == "probe":
        from .token_probes import evaluate_token_probes

        result = evaluate_token_probes(args.pipeline, args.checkpoint, args.sigma, out=args.out)
        for name, scores in result["blocks"].items():
            print(f"{name:>8}: all {scores['all']:.3f}, objects {scores['objects']:.3f} (colour {scores['object_colour']:.3f}, "
                  f"found {scores['objects_found']:.3f})")
    elif args.benchmark == "binding":
        from .prompt_binding import evaluate_prompt_binding

        result = evaluate_prompt_binding(args.pipeline, args.checkpoint, size=args.size, seed=args.seed, out=args.out)
        for level in result["levels"]:
            print(f"sigma {level['sigma']:.2f}: object colour error {level['object_colour_error']:.3f} "
                  f"(colours swapped {level['object_colour_error_swapped']:.3f}, gain {level['colour_word_gain']:+.3f} "
                  f"+- {level['colour_word_gain_se']:.3f}), "
                  f"colour-word shift {level['colour_word_shift']:.3f}")
    elif args.benchmark == "token-noise":
        from .token_noise import evaluate_token_noise

        result = evaluate_token_noise(args.pipeline, args.checkpoint, size=args.size, out=args.out)
        for level in result["levels"]:
            print(f"sigma {level['sigma']:.2f}: noise share of block {result['block']}'s tokens {level['noise_share']:.3f}")
    elif args.benchmark == "geneval":
        evaluate_geneval(args.pipeline, args.out, steps=args.steps, guidance=args.guidance, size=args.size)
    else:
        evaluate_dpg(args.pipeline, args.out, steps=args.steps, guidance=args.guidance, size=args.size)


if __name__ == "__main__":
    main()
