"""Assemble a ZImagePipeline folder from a component config: the tiny source model before its DiT is trained.

The tokenizer is built here from the toy world's vocabulary (with a Qwen-style chat template, so
`ZImagePipeline`'s prompt encoding runs unchanged), the Qwen3 text encoder is freshly initialised from a
seed and stays frozen, the VAE comes from `training.vae`, and the DiT is initialised fresh.

    python -m training.components --config training/configs/toy/components.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import Qwen3Config, Qwen3Model

from l2p.tokenizer import build_word_tokenizer
from l2p.toyworld import VOCABULARY

from .config import ConfigError, parse_command_line
from .files import atomic_directory


@dataclass
class ComponentsConfig:
    output_dir: str = "runs/toy/source-init"
    vae: str = "runs/toy/vae/vae"
    seed: int = 0
    text_encoder: dict = field(default_factory=dict)
    transformer: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)


def build(config: ComponentsConfig) -> Path:
    if not (Path(config.vae) / "config.json").is_file():
        raise ConfigError(f"vae: {config.vae} is not a trained VAE folder; run training.vae first")
    tokenizer = build_word_tokenizer(VOCABULARY)
    torch.manual_seed(config.seed)
    text_encoder = Qwen3Model(Qwen3Config(vocab_size=len(tokenizer), **config.text_encoder)).eval()
    transformer = ZImageTransformer2DModel(**config.transformer)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**config.scheduler),
        vae=AutoencoderKL.from_pretrained(config.vae),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    with atomic_directory(config.output_dir) as staging:
        pipe.save_pretrained(staging)
    return Path(config.output_dir)


def main(argv=None):
    _, config = parse_command_line(ComponentsConfig, __doc__, argv)
    print(build(config))


if __name__ == "__main__":
    main()
