"""Assemble a ZImagePipeline folder from a component config: the tiny source model before its DiT is trained.

The tokenizer is built here from the toy world's vocabulary (with a Qwen-style chat template, so
`ZImagePipeline`'s prompt encoding runs unchanged), the Qwen3 text encoder comes pre-trained on the grammar
from `training.text_encoder` and stays frozen from here on, the VAE comes from `training.vae`, and the DiT is
initialised fresh.

    python -m training.components --config training/configs/toy/components.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import Qwen3Model

from l2p.sampling import SamplingSettings, write_sampling
from l2p.tokenizer import build_word_tokenizer
from l2p.toyworld import VOCABULARY

from .config import ConfigError, parse_command_line
from .files import atomic_directory


@dataclass
class ComponentsConfig:
    output_dir: str = "runs/toy/source-init"
    vae: str = "runs/toy/vae/vae"
    text_encoder: str = "runs/toy/text-encoder/text_encoder"
    seed: int = 0
    transformer: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)
    # How the finished source is meant to run (written as sampling.json; guidance in Z-Image's convention).
    sampling: dict = field(default_factory=dict)


def build(config: ComponentsConfig) -> Path:
    if not (Path(config.vae) / "config.json").is_file():
        raise ConfigError(f"vae: {config.vae} is not a trained VAE folder; run training.vae first")
    if not (Path(config.text_encoder) / "config.json").is_file():
        raise ConfigError(f"text_encoder: {config.text_encoder} is not a trained text encoder; run training.text_encoder first")
    tokenizer = build_word_tokenizer(VOCABULARY)
    torch.manual_seed(config.seed)
    text_encoder = Qwen3Model.from_pretrained(config.text_encoder).eval()
    if text_encoder.config.vocab_size != len(tokenizer):
        raise ConfigError(f"text_encoder: {config.text_encoder} has {text_encoder.config.vocab_size} tokens, the toy tokenizer {len(tokenizer)}")
    transformer = ZImageTransformer2DModel(**config.transformer)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**config.scheduler),
        vae=AutoencoderKL.from_pretrained(config.vae),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    sampling = SamplingSettings(**config.sampling)  # checked before anything is written
    with atomic_directory(config.output_dir) as staging:
        pipe.save_pretrained(staging)
        write_sampling(staging, sampling)
    return Path(config.output_dir)


def main(argv=None):
    _, config = parse_command_line(ComponentsConfig, __doc__, argv)
    print(build(config))


if __name__ == "__main__":
    main()
