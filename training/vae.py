"""Train the tiny source model's VAE on toy renders (toy scale only; at full scale the VAE is Z-Image's).

A FLUX-style 16-channel `AutoencoderKL` with factor 8, trained on random crops (it is fully convolutional,
and crops cut the cost of a step by the crop's area ratio), with reconstruction loss plus a small KL term.
Its latents are then standardised: `shift_factor` and `scaling_factor` are the mean and 1/std of
latents of full renders, as `ZImagePipeline` expects.

    python -m training.vae --config training/configs/toy/vae.yaml
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from .config import parse_command_line
from .files import atomic_directory
from .precision import resolve_mixed_precision
from .toy_data import object_weights, toy_batch


@dataclass
class VaeConfig:
    output_dir: str = "runs/toy/vae"
    seed: int = 0
    steps: int = 1500
    batch_size: int = 8
    resolution: int = 256
    crop: int = 128
    lr: float = 5e-4
    kl_weight: float = 1e-6
    block_out_channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    latent_channels: int = 16
    layers_per_block: int = 1
    # Self-attention in the mid block mixes the whole image; flat shapes need none, and without it the
    # decoder cannot smear background statistics across the canvas (the halos of the first toy VAE).
    mid_block_attention: bool = False
    # Extra loss weight on pixels that differ from the image's background colour: objects cover a few
    # percent of a render, yet their colours and edges are what the evaluator judges.
    object_weight: float = 0.0
    # Scale equivariance ("diffusability" regularisation): the latent, 2x average-pooled, must decode to the image
    # 2x average-pooled, at this weight. An unregularised toy VAE hides each object in a few latent cells of 5-7x
    # the background's norm with a high-frequency pattern, which a small DiT learns slowly; this asks for latents
    # whose coarse content is the image's coarse content.
    equivariance_weight: float = 0.0
    eval_images: int = 64
    log_every: int = 50
    init: str | None = None  # continue from a trained VAE folder instead of a fresh one
    # "bf16": matmuls and convolutions under CPU autocast (weights and the loss stay fp32); measured 1.6x faster
    # a step on the 2-core CPU with AMX at 128 px (docs/results.md); "auto": bf16 only on such a CPU.
    mixed_precision: str = "no"
    threads: int = 0  # 0: torch's default


def build_vae(config: VaeConfig) -> AutoencoderKL:
    levels = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=config.latent_channels,
        layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.block_out_channels),
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=min(32, min(config.block_out_channels)),
        mid_block_add_attention=config.mid_block_attention,
    )


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    if size >= images.shape[-1]:
        return images
    top, left = torch.randint(0, images.shape[-1] - size + 1, (2, len(images)), generator=generator)
    return torch.stack([image[:, y : y + size, x : x + size] for image, y, x in zip(images, top, left)])


def weighted_error(reconstruction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-pixel squared plus a tenth of absolute error, weighted (the absolute term keeps edges crisp)."""
    error = reconstruction.float() - target
    return (weights * (error.square() + 0.1 * error.abs())).mean()


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB on [0, 1] pixels (inputs are in [-1, 1])."""
    mse = ((reconstruction.clamp(-1, 1) - target) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


HELD_OUT_SEED_OFFSET = 7919  # a run with seed s reports on the renders of seed s + this, which it never trains on


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstructions of [-1, 1] images through the posterior modes, and those latents (in chunks of 8)."""
    reconstructions, latents = [], []
    for chunk in images.split(8):
        latent = vae.encode(chunk).latent_dist.mode()
        latents.append(latent)
        reconstructions.append(vae.decode(latent).sample)
    return torch.cat(reconstructions), torch.cat(latents)


def evaluate(vae: AutoencoderKL, config: VaeConfig) -> tuple[float, torch.Tensor]:
    """Mean reconstruction PSNR on held-out full renders, and their latents (for the standardisation)."""
    images, _, _ = toy_batch(0, config.eval_images, config.resolution, seed=config.seed + HELD_OUT_SEED_OFFSET)
    reconstructions, latents = reconstruct(vae, images)
    return psnr(reconstructions, images).mean().item(), latents


def train(config: VaeConfig) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    vae = (AutoencoderKL.from_pretrained(config.init) if config.init else build_vae(config)).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)
    # Warm up, then cosine to a tenth: the last steps polish edges, where PSNR is won or lost.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / config.steps, 1.0)))),
    )
    crops = torch.Generator().manual_seed(config.seed)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    log_path = output / "log.csv"
    bf16 = resolve_mixed_precision(config.mixed_precision, "cpu") == "bf16"
    started = time.time()
    with open(log_path, "w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["step", "loss", "rec_psnr", "seconds"])
        for step in range(config.steps):
            images, _, _ = toy_batch(step, config.batch_size, config.resolution, seed=config.seed)
            images = random_crops(images, config.crop, crops)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                posterior = vae.encode(images).latent_dist
                reconstruction = vae.decode(posterior.sample(generator=crops)).sample
            weights = object_weights(images, config.object_weight)
            rec = weighted_error(reconstruction, images, weights)
            loss = rec + config.kl_weight * posterior.kl().float().mean()
            if config.equivariance_weight:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    coarse = vae.decode(F.avg_pool2d(posterior.sample(generator=crops), 2)).sample
                small = F.avg_pool2d(images, 2)
                loss = loss + config.equivariance_weight * weighted_error(coarse, small, F.max_pool2d(weights, 2))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % config.log_every == 0 or step == config.steps - 1:
                value = psnr(reconstruction.detach(), images).mean().item()
                writer.writerow([step, f"{loss.item():.6f}", f"{value:.2f}", f"{time.time() - started:.1f}"])
                log.flush()
                print(f"vae step {step}: loss {loss.item():.5f}, train psnr {value:.2f} dB", flush=True)

    vae.eval()
    score, latents = evaluate(vae, config)
    vae.register_to_config(shift_factor=latents.mean().item(), scaling_factor=1.0 / latents.std().item())
    with atomic_directory(output / "vae") as folder:
        vae.save_pretrained(folder)
    summary = {"psnr_db": score, "seconds": time.time() - started, "steps": config.steps}
    print(f"vae: reconstruction PSNR {score:.2f} dB on {config.eval_images} held-out {config.resolution}px renders")
    return summary


def main(argv=None):
    _, config = parse_command_line(VaeConfig, __doc__, argv)
    train(config)


if __name__ == "__main__":
    main()
