"""Flow-matching training under `accelerate`: the L2P transfer, and (at toy scale) its latent source.

    accelerate launch --config_file training/configs/accelerate/cpu.yaml -m training.train \\
        --config training/configs/toy/transfer.yaml [--resume] [field.sub=value ...]

`model.kind: pixel` builds `L2PTransformer2DModel.from_source(...)` from the source pipeline's DiT (or from
scratch, for the comparison run), freezes it with `freeze_for_transfer`, and trains on the synthetic corpus.
`model.kind: latent` trains a Z-Image DiT on VAE latents: the toy world's tiny source model.

Checkpoints (every `checkpoint_every` steps, written atomically; layout in `training.checkpoints`) hold
accelerate's own state (model, optimizer, RNG: valid under DDP, FSDP and DeepSpeed) beside the trained tensors
as safetensors; batches, noise and timesteps are pure functions of (seed, rank, step), so `--resume`
continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers import ZImagePipeline, ZImageTransformer2DModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from l2p import L2PPipeline, L2PTransformer2DModel, freeze_for_transfer
from l2p.device import cpu_has_bf16_units
from l2p.high_resolution import grow_for_high_resolution, growth_channels
from l2p.latents import destandardise_latents, standardise_latents
from l2p.sizes import pixels_per_token
from l2p.toyworld import layout_prompt
from l2p.transfer import PARTS, POLICIES
from l2p.transformer_l2p import PREDICTION_TYPES, dit_noise_level

from . import checkpoints
from .alignment import ALIGN_NOISE, ALIGN_TARGETS, SourceAlignment, noise_map, teacher_noise
from .checkpoints import latest_checkpoint
from .config import ConfigError, parse_command_line, to_dict
from .data import DatasetCorpus, ToyCorpus, step_rng
from .files import atomic_file
from .flow import flow_matching_loss, noised, predict, sigma_grid
from .initialization import adaln_zero_init
from .precision import MIXED_PRECISIONS, resolve_mixed_precision
from .semantic import SemanticProbe, token_labels
from .toy_data import border_weights, object_weights, to_tensor


@dataclass
class ModelConfig:
    kind: str = "pixel"  # "pixel" (the L2P model) or "latent" (a Z-Image DiT on VAE latents)
    source: str = "assets/tiny-source"  # ZImagePipeline folder or hub id: text encoder, tokenizer, VAE, DiT
    # pixel: "source" (the transfer), "scratch" (same architecture, random init, all trained) or "pixel" (a
    # high-resolution variant grown from the pixel model in `base`: patch_size a power-of-two multiple of its patch,
    # detailer_channels its head's widths after one outer level per doubling; l2p.high_resolution).
    # latent: "scratch" (a fresh DiT of the source folder's architecture: the toy source) or "source" (the source
    # folder's own DiT trained further: the toy source's annealing stage).
    init: str = "source"
    base: str | None = None  # init: pixel: an L2PPipeline folder or hub id whose DiT and head the variant grows from
    patch_size: int = 16
    detailer_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    trained_grid: int = 64
    n_shallow: int = 5
    # pixel: what the Detailer Head predicts, "velocity" (the release), "sample" (x0) or "blend" (x0 - sigma * noise;
    # L2PTransformer2DModel), for a transfer and an HR variant alike (an HR run sets it on the grown model)
    prediction_type: str = "velocity"
    freeze_policy: str = "release"
    # init: source or pixel: parts outside the blocks (l2p.transfer.PARTS) frozen on top of the policy, for ablations
    also_frozen: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False
    # The frozen text encoder's dtype: "bfloat16" halves its memory (8 GB instead of 16 for Z-Image's Qwen3-4B).
    text_encoder_dtype: str = "float32"


@dataclass
class DataConfig:
    # "imagefolder": a local metadata.jsonl folder (training.synthesize's corpus); "dataset": any corpus `datasets`
    # loads (a Hub id such as the release's, parquet shards); "toy": endless toy renders.
    kind: str = "imagefolder"
    path: str | None = None
    split: str = "train"
    image_column: str = "image"
    caption_column: str = "prompt"
    seed_column: str = "seed"
    resolution: int = 1024  # toy: render size; imagefolder: pixel budget = resolution ** 2
    pool_size: int = 0  # toy: reuse this many items (0 = always fresh)
    caption_dropout: float = 0.1  # the empty prompt instead, so classifier-free guidance works


@dataclass
class OptimConfig:
    lr: float = 5e-5
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    # "constant" after warm-up (the release's recipe) or "cosine" down to a tenth at max_steps: short runs,
    # like the toy source's, end better when the last steps take small ones.
    schedule: str = "constant"
    # The last `decay_steps` steps of the run take the rate linearly down to zero from what the schedule gives
    # (warm-up, stable, decay): a constant-rate run resumed with a higher max_steps and this set ends with small
    # steps, yet shares every earlier step with the run it continues. 0: no decay.
    decay_steps: int = 0
    batch_size: int = 1  # per process and forward pass
    # Micro-batches of `batch_size` a step: a process's step sees batch_size x gradient_accumulation_steps items.
    gradient_accumulation_steps: int = 1
    grad_clip: float = 1.0
    # The transfer's new modules (the RGB patch embedder and the Detailer Head) start from nothing while every
    # other trained tensor is the source's: this multiplies their rate (1: the release's single rate).
    new_module_lr_scale: float = 1.0
    # The rate of the transfer's warm start (its first flow.align_steps steps) in place of lr, so that the transfer
    # proper after it can take the release's own small rate; 0: lr throughout.
    warm_start_lr: float = 0.0


@dataclass
class FlowConfig:
    grid_steps: int = 500
    shift: float = 3.0
    # Extra loss weight where the clean image differs from its background (toy images only: the shipped transfer
    # keeps the release's plain MSE; docs/results.md measures the transfer with it). Objects are a few percent of
    # a toy render's pixels but all that its prompt says beyond the background, so unweighted, the text's gradient
    # is a few percent of the loss's.
    object_weight: float = 0.0
    # With object_weight: the weighting is on for the first object_weight_steps steps only, the plain MSE after them
    # (part of the transfer's warm start, with align_steps); 0 = on throughout.
    object_weight_steps: int = 0
    # Pixel models on toy images: extra loss weight on a ring around every object's border (`border_weights`), on
    # top of any object weighting and throughout the run. The HR head drew borders 10-15 px wide from renders whose
    # own are 1 px; the ring is a few percent of the pixels, so unweighted it is a few percent of the loss.
    border_weight: float = 0.0
    # Toy source only: weight of the semantic-alignment loss (training.semantic), a linear probe on the image
    # tokens leaving block `semantic_block` that must name what the clean image holds at each token; 0 = off.
    semantic_weight: float = 0.0
    semantic_block: int = 1
    # Pixel transfer only: weight of the token alignment (training.alignment), an MSE pulling the tokens the pixel
    # model hands its frozen middle blocks toward the source DiT's on the same image's latent; 0 = off (the paper).
    align_weight: float = 0.0
    # With align_weight: the alignment is on for the first align_steps steps only, the paper's plain loss alone
    # after them (a warm start of the new pixel front, as the release converts weights before its recipe); 0 = on
    # throughout.
    align_steps: int = 0
    # What the tokens are pulled toward: "source", the source DiT's on the image's VAE latent (shrunk to its token
    # grid first for an HR model), or, for an HR model (model.init: pixel), "base": the 1x pixel model it grows
    # from, on the image shrunk to that model's native side and noised in pixels, i.e. the tokens its copied
    # blocks and inner head levels were trained with, not the source's, from which the 1x model has drifted.
    align_to: str = "source"
    # The teacher's noise (training.alignment): "independent" of the pixel model's, or "shared", derived from it.
    align_noise: str = "independent"
    # The warm start's end made gradual: over this many steps after align_steps (and after object_weight_steps) the
    # alignment and the object weighting fall linearly to nothing, and the rate from optim.warm_start_lr to optim.lr.
    # 0: they end at once. The toy transfer's score dropped where they ended at once (docs/results.md).
    warm_start_fade: int = 0
    # With the source as the alignment's teacher: weight of a second warm-start term (on the alignment's steps and
    # fade), the pixel model's clean estimate x_t + sigma * output pulled toward the source's own for the same noisy
    # image, decoded by the source's VAE. At high noise the source's estimate is what the prompt says (its latent
    # x_t shows little yet), where the data's x0 is one image of the many the model might draw; an x0 error is the
    # velocity error times sigma, so low noise, where the VAE's blur would be taught, is left to the plain loss.
    # 0 = off.
    teach_weight: float = 0.0


@dataclass
class TrainConfig:
    output_dir: str = "runs/transfer"
    seed: int = 0
    max_steps: int = 1000
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    # "bf16": autocast on GPUs and on CPUs alike (weights, optimizer and loss stay fp32); "auto": bf16 where the
    # hardware multiplies it, else fp32 (training.precision). The run records what it resolved to.
    mixed_precision: str = "no"
    # An exponential moving average of the trained weights (diffusers' EMAModel, with its (1+n)/(10+n) warm-up);
    # 0 turns it off. When on, checkpoints also hold `ema.safetensors`, and samples, merge and evaluation use it.
    ema_decay: float = 0.0
    checkpoint_every: int = 500
    log_every: int = 10
    sample_every: int = 0  # 0: only at the end
    sample_prompts: list[str] = field(default_factory=lambda: ["a red circle", "two blue squares"])
    sample_steps: int = 20
    # Pixel runs: where guidance starts (L2PPipeline's cfg_start) in the run's samples and in the sampling.json of the
    # folder training.merge writes from it; 0 guides every step.
    sample_cfg_start: float = 0.0
    threads: int = 0
    # accelerate's tracker for loss, LR, throughput and the sample grids (under output_dir/logs); "none" = off.
    log_with: str = "tensorboard"


TRACKERS = ("tensorboard", "wandb", "none")


# The pixel model's modules that `L2PTransformer2DModel.from_source` does not copy from the source.
NEW_MODULES = ("all_x_embedder.", "local_decoder.")


def warm_start_share(step: int, end: int, fade: int) -> float:
    """How much of a warm-start term (the alignment, the object weighting, the warm-start rate) is on at `step`: all
    of it before `end` (or throughout, when `end` is 0), then falling linearly over `fade` steps, none after."""
    if not end or step < end:
        return 1.0
    return max(0.0, 1.0 - (step - end + 1) / (fade + 1))


def learning_rate(optim: OptimConfig, step: int, max_steps: int, warm_start_steps: int = 0, fade_steps: int = 0) -> float:
    """The rate for a step: a pure function of the step, so a resumed run follows the same curve."""
    base = optim.lr
    if optim.warm_start_lr and warm_start_steps:
        base += (optim.warm_start_lr - optim.lr) * warm_start_share(step, warm_start_steps, fade_steps)
    rate = base * min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else base
    if optim.schedule == "cosine":
        rate *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max_steps, 1.0)))
    if optim.decay_steps:
        rate *= min(1.0, (max_steps - step) / optim.decay_steps)
    return rate


def is_hub_id(source: str) -> bool:
    """Whether `model.source` names a Hub repository ("owner/name") rather than a local folder."""
    return not (source.startswith((".", "/", "~")) or source.count("/") != 1 or Path(source).exists())


def validate(config: TrainConfig) -> None:
    """Everything that can be checked before work starts, with the field's name in the message."""
    m, d = config.model, config.data
    if m.kind not in ("pixel", "latent"):
        raise ConfigError(f"model.kind must be 'pixel' or 'latent', got {m.kind!r}")
    if m.init not in ("source", "scratch", "pixel"):
        raise ConfigError(f"model.init must be 'source', 'scratch' or 'pixel', got {m.init!r}")
    if m.init == "pixel":
        validate_growth(m)
    if m.freeze_policy not in POLICIES:
        raise ConfigError(f"model.freeze_policy must be one of {list(POLICIES)}, got {m.freeze_policy!r}")
    if not 0 <= config.sample_cfg_start <= 1:
        raise ConfigError(f"sample_cfg_start must be a normalised time in [0, 1], got {config.sample_cfg_start!r}")
    if config.sample_cfg_start and m.kind != "pixel":
        raise ConfigError("sample_cfg_start applies to pixel runs (model.kind: pixel): ZImagePipeline has no guidance interval")
    if m.also_frozen and not (m.kind == "pixel" and m.init in ("source", "pixel")):
        raise ConfigError("model.also_frozen applies to the transfer and the HR growth (model.kind: pixel, "
                          "model.init: source or pixel)")
    if unknown := sorted(set(m.also_frozen) - set(PARTS)):
        raise ConfigError(f"model.also_frozen: {unknown} are not among the model's parts outside its blocks {list(PARTS)}")
    if config.flow.align_weight and not (m.kind == "pixel" and m.init in ("source", "pixel") and m.n_shallow >= 1):
        raise ConfigError("flow.align_weight needs model.kind: pixel, model.init: source or pixel and model.n_shallow >= 1 "
                          "(the source's DiT gives the tokens its frozen middle blocks expect after the retrained front blocks)")
    if config.flow.teach_weight < 0 or (config.flow.teach_weight and not (config.flow.align_weight and config.flow.align_to == "source")):
        raise ConfigError(f"flow.teach_weight must be 0 or > 0 with the source as the alignment's teacher "
                          f"(flow.align_weight > 0, flow.align_to: source), got {config.flow.teach_weight}")
    if config.flow.align_to not in ALIGN_TARGETS:
        raise ConfigError(f"flow.align_to must be one of {list(ALIGN_TARGETS)}, got {config.flow.align_to!r}")
    if config.flow.align_noise not in ALIGN_NOISE:
        raise ConfigError(f"flow.align_noise must be one of {list(ALIGN_NOISE)}, got {config.flow.align_noise!r}")
    if config.flow.align_weight and config.flow.align_to == "base" and m.init != "pixel":
        raise ConfigError("flow.align_to: base needs model.init: pixel (an HR model grown from the 1x pixel model in model.base)")
    for weight, steps, term in (("align_weight", "align_steps", "alignment"), ("object_weight", "object_weight_steps", "weighting")):
        w, n = getattr(config.flow, weight), getattr(config.flow, steps)
        if n < 0 or (n and not w):
            raise ConfigError(f"flow.{steps} must be 0 ({term} throughout) or a positive number of steps with "
                              f"flow.{weight} > 0, got {n} with {weight} {w}")
    fade, ends = config.flow.warm_start_fade, config.flow.align_steps or config.flow.object_weight_steps
    if fade < 0 or (fade and not ends):
        raise ConfigError(f"flow.warm_start_fade must be 0 or a number of steps after a warm start that ends "
                          f"(flow.align_steps or flow.object_weight_steps > 0), got {config.flow.warm_start_fade}")
    if m.prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"model.prediction_type must be one of {list(PREDICTION_TYPES)}, got {m.prediction_type!r}")
    source = Path(m.source)
    if not is_hub_id(m.source) and not (source / "model_index.json").is_file():
        raise ConfigError(f"model.source: {m.source} is not a ZImagePipeline folder (no model_index.json)")
    if m.kind == "pixel" and (source / "transformer" / "config.json").is_file():
        depth = json.loads((source / "transformer" / "config.json").read_text()).get("n_layers", 30)
        if 2 * m.n_shallow > depth:
            raise ConfigError(f"model.n_shallow={m.n_shallow} is too large for the source's {depth} blocks (at most {depth // 2})")
    if m.text_encoder_dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"model.text_encoder_dtype must be 'float32', 'bfloat16' or 'float16', got {m.text_encoder_dtype!r}")
    if d.kind not in ("imagefolder", "dataset", "toy"):
        raise ConfigError(f"data.kind must be 'imagefolder', 'dataset' or 'toy', got {d.kind!r}")
    if d.kind == "dataset" and not d.path:
        raise ConfigError("data.path: name the dataset (a Hub id or a folder `datasets.load_dataset` reads)")
    if d.kind == "imagefolder" and not (d.path and (Path(d.path) / "metadata.jsonl").is_file()):
        raise ConfigError(f"data.path: corpus {d.path!r} is missing (no metadata.jsonl); run training.synthesize first")
    if config.optim.schedule not in ("constant", "cosine"):
        raise ConfigError(f"optim.schedule must be 'constant' or 'cosine', got {config.optim.schedule!r}")
    if not 0 <= config.optim.decay_steps <= config.max_steps:
        raise ConfigError(f"optim.decay_steps must be between 0 and max_steps ({config.max_steps}), got {config.optim.decay_steps}")
    if config.optim.warm_start_lr < 0 or (config.optim.warm_start_lr and not config.flow.align_steps):
        raise ConfigError(f"optim.warm_start_lr must be 0 (optim.lr throughout) or a positive rate for a warm start "
                          f"(flow.align_steps > 0), got {config.optim.warm_start_lr} with align_steps {config.flow.align_steps}")
    if not config.optim.new_module_lr_scale > 0:
        raise ConfigError(f"optim.new_module_lr_scale must be positive, got {config.optim.new_module_lr_scale!r}")
    if config.mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(f"mixed_precision must be one of {', '.join(map(repr, MIXED_PRECISIONS))}, got {config.mixed_precision!r}")
    if config.flow.semantic_weight and (m.kind != "latent" or d.kind != "toy"):
        raise ConfigError("flow.semantic_weight needs model.kind: latent and data.kind: toy (it reads the renders' layouts)")
    if config.flow.object_weight < 0 or config.flow.semantic_weight < 0:
        raise ConfigError("flow.object_weight and flow.semantic_weight must be >= 0")
    if config.flow.border_weight < 0:
        raise ConfigError("flow.border_weight must be >= 0")
    if config.flow.border_weight and config.model.kind != "pixel":
        raise ConfigError("flow.border_weight weights a pixel model's loss (model.kind: pixel); a latent has no borders to find")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if config.max_steps < 1 or config.optim.batch_size < 1 or config.optim.gradient_accumulation_steps < 1:
        raise ConfigError("max_steps, optim.batch_size and optim.gradient_accumulation_steps must be positive")
    if config.checkpoint_every < 1 or config.log_every < 1:
        raise ConfigError(f"checkpoint_every and log_every must be positive, got {config.checkpoint_every} and {config.log_every}")
    if config.log_with not in TRACKERS:
        raise ConfigError(f"log_with must be one of {list(TRACKERS)}, got {config.log_with!r}")
    if config.log_with == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log_with: wandb is not installed (pip install wandb), or use log_with=tensorboard")


def validate_growth(m: ModelConfig) -> None:
    """init: pixel: the base folder exists and the asked patch and head widths are a growth of its own."""
    if m.kind != "pixel" or not m.base:
        raise ConfigError("model.init: pixel needs model.kind: pixel and model.base (the L2PPipeline folder to grow from)")
    config_file = Path(m.base) / "transformer" / "config.json"
    if is_hub_id(m.base):
        return  # checked when the base is fetched
    if not config_file.is_file():
        raise ConfigError(f"model.base: {m.base} is not an L2PPipeline folder (no transformer/config.json)")
    base = json.loads(config_file.read_text())
    factor, remainder = divmod(m.patch_size, base["patch_size"])
    if remainder:
        raise ConfigError(f"model.patch_size={m.patch_size} must be a power-of-two multiple (>= 2x) of the base's {base['patch_size']}")
    try:
        growth_channels(base["detailer_channels"], factor, m.detailer_channels)
    except ValueError as error:
        raise ConfigError(f"model.patch_size / model.detailer_channels against the base's patch {base['patch_size']}: {error}") from None


def pixel_base(m: ModelConfig) -> L2PTransformer2DModel:
    """The 1x pixel model in `m.base` that an HR variant (init: pixel) grows from."""
    return L2PTransformer2DModel.from_pretrained(m.base, subfolder="transformer", torch_dtype=torch.float32)


def initial_pixel_model(m: ModelConfig, source_transformer, base: L2PTransformer2DModel | None = None) -> L2PTransformer2DModel:
    """The pixel model as a run builds it before training (and `training.merge` rebuilds it under a checkpoint):
    from the source's DiT for the transfer and scratch (whose weights the caller then replaces), or grown from
    the pixel model in `m.base` (init: pixel; `base`: that model when the caller has loaded it already)."""
    if m.init == "pixel":
        base = base if base is not None else pixel_base(m)
        # What the head predicts is the run's choice, as `training.checkpoints.load_trained` sets it on a merge.
        return grow_for_high_resolution(base, m.patch_size // base.config.patch_size, m.detailer_channels,
                                        prediction_type=m.prediction_type)
    return L2PTransformer2DModel.from_source(
        source_transformer, patch_size=m.patch_size, detailer_channels=m.detailer_channels,
        trained_grid=m.trained_grid, n_shallow=retrained_blocks(m.init, m.n_shallow, source_transformer),
        prediction_type=m.prediction_type,
    )


def retrained_blocks(init: str, n_shallow: int, source_transformer) -> int:
    """The pixel model's `n_shallow` config: blocks at each end not the source's own (all of them from scratch)."""
    return n_shallow if init == "source" else len(source_transformer.layers)


class Trainer:
    def __init__(self, config: TrainConfig, accelerator: Accelerator):
        self.config, self.accelerator = config, accelerator
        m = config.model
        # The frozen text encoder loads straight in its own dtype; everything else trains or feeds training in fp32.
        self.source = ZImagePipeline.from_pretrained(
            m.source, dtype={"text_encoder": getattr(torch, m.text_encoder_dtype), "default": torch.float32})
        for module in (self.source.text_encoder, self.source.vae, self.source.transformer):
            module.requires_grad_(False).eval()
        torch.manual_seed(config.seed)  # the fresh embedder and head start the same in every process
        if m.kind == "latent":
            # The toy source: a DiT of the architecture the source folder declares, fresh or the folder's own.
            self.model = ZImageTransformer2DModel.from_config(self.source.transformer.config)
            if m.init == "scratch":
                adaln_zero_init(self.model)
            else:
                self.model.load_state_dict(self.source.transformer.state_dict())
            self.trainable = sum(p.numel() for p in self.model.parameters())
        else:
            # An HR variant's 1x base, loaded once: it is grown from and, with flow.align_to: base, the teacher.
            base = pixel_base(m) if m.init == "pixel" else None
            self.model = initial_pixel_model(m, self.source.transformer, base)
            if m.init == "scratch":
                # The baseline the transfer is measured against: the same architecture, random weights, and all
                # of them trained (frozen random blocks would handicap it). Its checkpoints then hold every
                # tensor, so a checkpoint alone rebuilds the model.
                fresh = adaln_zero_init(L2PTransformer2DModel.from_config(self.model.config))
                self.model.load_state_dict(fresh.state_dict())  # every parameter still requires grad
                self.trainable = sum(p.numel() for p in self.model.parameters())
            else:
                self.trainable = freeze_for_transfer(self.model, m.n_shallow, m.freeze_policy, m.also_frozen)
        self.alignment = None
        # The model's pixels per token over the teacher's: 1 for the 1x transfer, 4 for an HR model with 4x the patch.
        self.alignment_shrink = 1
        if config.flow.align_weight and config.flow.align_to == "base":  # the 1x model stays, frozen, as the teacher
            self.alignment = SourceAlignment(self.model, base, m.n_shallow - 1, latent=False).to(accelerator.device)
            self.alignment_shrink = m.patch_size // base.config.patch_size
        elif config.flow.align_weight:  # the source DiT stays, frozen, to give the tokens the middle blocks expect
            self.alignment = SourceAlignment(self.model, self.source.transformer, m.n_shallow - 1).to(accelerator.device)
            self.alignment_shrink = m.patch_size // pixels_per_token(self.source)
        if config.flow.teach_weight and self.alignment_shrink != 1:
            raise ConfigError("flow.teach_weight needs the pixel model on the source's own token grid (an HR model's "
                              "token is wider than the source's, whose decoded estimate would be smaller than its image)")
        # The teacher runs at the noise level the model's DiT works at: an HR model grown from a 1x one sees its
        # patch averaged, so less noisy than the pixels (L2PTransformer2DModel's noise_pooling).
        self.noise_pooling = self.model.config.noise_pooling if m.kind == "pixel" else 1
        # The source DiT's weights now live in the model (copied or, for the latent kind, only its config used):
        # dropping it frees a whole DiT of host memory per process (about 25 GB in fp32 at full scale).
        self.source.transformer = None
        if m.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.names = [name for name, p in self.model.named_parameters() if p.requires_grad]
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = config.optim
        new_modules = m.kind == "pixel" and m.init in ("source", "pixel") and o.new_module_lr_scale != 1.0
        groups = [{"params": params, "lr_scale": 1.0}]
        if new_modules:
            is_new = [name.startswith(NEW_MODULES) for name in self.names]
            groups = [{"params": [p for p, new in zip(params, is_new) if not new], "lr_scale": 1.0},
                      {"params": [p for p, new in zip(params, is_new) if new], "lr_scale": o.new_module_lr_scale}]
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        self.ema = EMAModel(params, decay=config.ema_decay) if config.ema_decay else None
        self.probe = None
        if config.flow.semantic_weight:
            self.probe = SemanticProbe(accelerator.unwrap_model(self.model), config.flow.semantic_block).to(accelerator.device)
            self.optimizer.add_param_group({"params": list(self.probe.parameters())})
        self.source.text_encoder.to(accelerator.device)
        self.source.vae.to(accelerator.device)
        self.sigmas = sigma_grid(config.flow.grid_steps, config.flow.shift)
        d = config.data
        if d.kind == "toy":
            self.corpus = ToyCorpus(d.resolution, seed=config.seed, pool_size=d.pool_size)
        else:
            self.corpus = DatasetCorpus(d.path, d.resolution**2, self.multiple, seed=config.seed, split=d.split,
                                        image_column=d.image_column, caption_column=d.caption_column, seed_column=d.seed_column)
        self.text_cache: dict[str, torch.Tensor] = {}
        self.latent_cache: dict[str, torch.Tensor] = {}
        self.step = 0
        # With flow.align_noise: shared and the source as the teacher, how each VAE cell's pixel noise becomes its
        # latent noise, fitted once to the VAE on the corpus's first items.
        self.noise_map = None
        if self.alignment is not None and self.alignment.latent and config.flow.align_noise == "shared":
            items = self.corpus.batch(0, 0, 64)
            self.noise_map = noise_map(self.teacher_pixels(items), self.encoded(items)[0])

    @property
    def multiple(self) -> int:
        m = self.config.model
        return m.patch_size if m.kind == "pixel" else 16

    # -- inputs -----------------------------------------------------------------------------------------
    def caption_features(self, prompts: list[str]) -> list[torch.Tensor]:
        missing = sorted({p for p in prompts if p not in self.text_cache})
        if missing:
            with torch.no_grad():
                # A copy: Z-Image's encoder rewrites list items in place with the chat template.
                features, _ = self.source.encode_prompt(list(missing), device=self.accelerator.device, do_classifier_free_guidance=False)
            self.text_cache.update({p: f.float() for p, f in zip(missing, features)})
        return [self.text_cache[p] for p in prompts]

    def clean_inputs(self, items) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x0 for a batch (pixels in [-1, 1], or standardised VAE latents, cached per item) and, when
        `flow.object_weight` is set, per-position loss weights at x0's resolution (see `object_weights`)."""
        device = self.accelerator.device
        flow = self.config.flow
        weight = flow.object_weight * warm_start_share(self.step, flow.object_weight_steps, flow.warm_start_fade)
        if self.config.model.kind == "pixel":
            pixels = torch.stack([to_tensor(item.load()) for item in items]).to(device)
            weights = object_weights(pixels, weight) if weight else None
            if flow.border_weight:
                ring = border_weights(pixels, flow.border_weight)
                weights = ring if weights is None else weights + ring - 1.0
            return pixels, weights
        latents, coverage = self.encoded(items)
        return latents, 1.0 + weight * coverage if weight else None

    def teacher_pixels(self, items) -> torch.Tensor:
        """The items' renders as the alignment's teacher sees them (and the source's VAE encodes them)."""
        pixels = torch.stack([to_tensor(item.load()) for item in items]).to(self.accelerator.device)
        if self.alignment_shrink > 1:
            # An HR model's token sees a patch this many times wider than the source's: the source's tokens for it
            # are those of the render shrunk to its token grid, area-averaged as the grown HR embedder first reads
            # its patch (l2p.high_resolution).
            pixels = F.avg_pool2d(pixels, self.alignment_shrink)
        return pixels

    def encoded(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        """The items' standardised VAE latents and each latent cell's object coverage (the off-background share of
        the pixels it encodes), cached per item."""
        vae = self.source.vae
        missing = [item for item in items if item.key not in self.latent_cache]
        if missing:
            with torch.no_grad():
                pixels = self.teacher_pixels(missing)
                latents = standardise_latents(vae, vae.encode(pixels).latent_dist.mode())
                coverage = F.adaptive_avg_pool2d(object_weights(pixels, 1.0) - 1.0, latents.shape[-2:])
            self.latent_cache.update({item.key: (z, c) for item, z, c in zip(missing, latents, coverage)})
        return (torch.stack([self.latent_cache[item.key][0] for item in items]),
                torch.stack([self.latent_cache[item.key][1] for item in items]))

    @torch.no_grad()
    def decoded(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents as the source's VAE draws them, in the pixels' [-1, 1]."""
        vae = self.source.vae
        with self.accelerator.autocast():  # bf16 where the run is: twice as fast a decode on a CPU with bf16 units
            return vae.decode(destandardise_latents(vae, latents.to(vae.dtype))).sample.float().clamp(-1, 1)

    def token_labels(self, items, latent_size) -> torch.Tensor:
        """What each image token's cell holds (training.semantic), from the toy items' exact layouts."""
        patch = self.accelerator.unwrap_model(self.model).config.all_patch_size[0]  # the latent DiT: the source's config
        grid = [side // patch for side in latent_size]
        return torch.stack([token_labels(layout_prompt(item.prompt, item.seed), *grid) for item in items])

    # -- one step ---------------------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimizer step over `batch_size x gradient_accumulation_steps` items a process, drawn, captioned
        and noised as one batch, then run forward and backward in micro-batches of `batch_size`: accumulating
        changes the peak memory, not which items, noise or timesteps a step sees."""
        c, rank = self.config, self.accelerator.process_index
        micro, chunks = c.optim.batch_size, c.optim.gradient_accumulation_steps
        items = self.corpus.batch(self.step, rank, micro * chunks)
        generator = torch.Generator().manual_seed(int(step_rng(c.seed, rank, self.step).integers(2**62)))
        prompts = [
            "" if torch.rand((), generator=generator) < c.data.caption_dropout else item.prompt for item in items
        ]
        captions = self.caption_features(prompts)
        x0, weights = self.clean_inputs(items)
        # Noise per sample from the sample's own seed, as the release does; the timestep from the step's stream.
        noise = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(item.seed + self.step)) for item in items])
        sigma = self.sigmas[torch.randint(len(self.sigmas), (len(items),), generator=generator)]
        noise, sigma = noise.to(x0.device), sigma.to(x0.device)
        align_share = warm_start_share(self.step, c.flow.align_steps, c.flow.warm_start_fade)
        if self.alignment is not None and not align_share:
            # The warm start is over: the source DiT, its hooks and the latents cached for it are dead weight now
            # (a whole DiT of host memory per process at full scale).
            self.alignment.remove()
            self.alignment = None
            self.latent_cache.clear()
        aligning = self.alignment is not None
        teaching = aligning and c.flow.teach_weight > 0
        if aligning:  # the same images, as the teacher sees them (VAE latents or shrunk pixels), at the same sigmas
            teacher_x0 = self.encoded(items)[0] if self.alignment.latent else F.avg_pool2d(x0, self.alignment_shrink)
            if c.flow.align_noise == "shared":  # a function of the pixel model's noise (training.alignment)
                noise_seen = teacher_noise(noise, self.alignment_shrink, self.noise_map)
            else:
                noise_seen = torch.randn(teacher_x0.shape, generator=generator).to(x0.device)
            teacher_sigma = dit_noise_level(sigma, self.noise_pooling)[0]
            teacher_x_t = noised(teacher_x0, noise_seen, teacher_sigma)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(chunks):
            part = slice(k * micro, (k + 1) * micro)
            # Gradients are exchanged between processes once a step, on the last micro-batch.
            sync = contextlib.nullcontext() if k == chunks - 1 else self.accelerator.no_sync(self.model)
            with sync:
                if teaching:  # the source's clean estimate x_t + sigma * output, drawn by its VAE
                    targets, output = self.alignment.targets(teacher_x_t[part], 1 - teacher_sigma[part], captions[part], whole=True)
                    teacher_estimate = self.decoded(teacher_x_t[part] + teacher_sigma[part].view(-1, 1, 1, 1) * output)
                elif aligning:
                    targets = self.alignment.targets(teacher_x_t[part], 1 - teacher_sigma[part], captions[part])
                x_t = noised(x0[part], noise[part], sigma[part])
                with self.accelerator.autocast():
                    prediction = predict(self.model, x_t, 1 - sigma[part], captions[part], latent=self.config.model.kind != "pixel")
                loss = flow_matching_loss(prediction, x0[part], noise[part], None if weights is None else weights[part])
                if aligning:
                    loss = loss + c.flow.align_weight * align_share * self.alignment.loss(targets)
                if teaching:
                    estimate = x_t.float() + sigma[part].view(-1, 1, 1, 1) * prediction.float()
                    loss = loss + c.flow.teach_weight * align_share * F.mse_loss(estimate, teacher_estimate)
                if self.probe is not None:
                    loss = loss + c.flow.semantic_weight * self.probe.loss(self.token_labels(items[part], x0.shape[-2:]))
                self.accelerator.backward(loss / chunks)
            total += loss.detach() / chunks
        if c.optim.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), c.optim.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(c.optim, self.step, c.max_steps, c.flow.align_steps, c.flow.warm_start_fade) * group.get("lr_scale", 1.0)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.step(self.trainable_parameters())
        self.step += 1
        return self.accelerator.reduce(total, reduction="mean").item()

    # -- checkpoints (layout and writing: training.checkpoints) ---------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        params = dict(self.accelerator.unwrap_model(self.model).named_parameters())
        return [params[name] for name in self.names]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        # Gathered whole from every process (a no-op copy unless the model is sharded); every process calls it.
        state = self.accelerator.get_state_dict(self.model)
        return {name: state[name].detach().cpu().contiguous() for name in self.names} if state else {}

    def save_checkpoint(self) -> Path:
        meta = {"step": self.step, "config": to_dict(self.config)}
        ema = probe = None
        if self.ema is not None:
            ema = {name: p.detach().cpu().contiguous() for name, p in zip(self.names, self.ema.shadow_params)}
            meta["ema_step"] = self.ema.optimization_step
        if self.probe is not None:
            probe = {k: v.detach().cpu().contiguous() for k, v in self.probe.state_dict().items()}
        trained = self.trainable_state()
        return checkpoints.save(self.accelerator, checkpoints.folder_for(self.config.output_dir, self.step), meta, trained, ema, probe)

    def load_checkpoint(self, folder: Path) -> None:
        meta = checkpoints.restore(self.accelerator, folder)
        self.step = meta["step"]
        if self.ema is not None:
            if not (folder / checkpoints.EMA_FILE).is_file():
                raise ValueError(f"{folder} has no {checkpoints.EMA_FILE}, but ema_decay is set: it was written without EMA")
            shadow = load_file(str(folder / checkpoints.EMA_FILE))
            self.ema.shadow_params = [shadow[name].to(p.device) for name, p in zip(self.names, self.trainable_parameters())]
            self.ema.optimization_step = meta["ema_step"]
        if self.probe is not None:
            self.probe.load_state_dict(load_file(str(folder / checkpoints.PROBE_FILE)))

    # -- samples ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_grid(self) -> Path:
        """x0 samples of the current weights on fixed prompts and seeds, one PNG row per prompt."""
        from diffusers.utils import make_image_grid

        model = self.accelerator.unwrap_model(self.model).eval()
        if self.ema is not None:  # sample what the run will deliver: the averaged weights
            self.ema.store(self.trainable_parameters())
            self.ema.copy_to(self.trainable_parameters())
        source = self.source
        m = self.config.model
        size = model.native_side if m.kind == "pixel" else self.config.data.resolution
        if self.config.model.kind == "pixel":
            pipe = L2PPipeline(L2PPipeline.default_scheduler(), source.text_encoder, source.tokenizer, model)
            kwargs = {"guidance_scale": 2.0, "cfg_start": self.config.sample_cfg_start}
        else:
            pipe = ZImagePipeline(source.scheduler, source.vae, source.text_encoder, source.tokenizer, model)
            kwargs = {"guidance_scale": 1.0}
        pipe.set_progress_bar_config(disable=True)
        images = [
            pipe(prompt, height=size, width=size, num_inference_steps=self.config.sample_steps,
                 generator=torch.Generator().manual_seed(0), **kwargs).images[0]
            for prompt in self.config.sample_prompts
        ]
        model.train()
        if self.ema is not None:
            self.ema.restore(self.trainable_parameters())
        grid = make_image_grid(images, rows=1, cols=len(images))
        path = Path(self.config.output_dir) / "samples" / f"step-{self.step:07d}.png"
        with atomic_file(path) as stream:
            grid.save(stream, format="PNG")
        return path


class CsvLog:
    """Loss log, written by the main process only; a resumed run appends to it."""

    def __init__(self, path: Path, append: bool, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled and not (append and path.exists()):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("step,loss,seconds\n")

    def write(self, **row) -> None:
        if self.enabled:
            with open(self.path, "a", newline="") as stream:
                csv.writer(stream).writerow(row.values())


def tracker_config(config: TrainConfig) -> dict:
    """The run's config as the flat scalars trackers take ("optim.lr": 5e-05; lists as text)."""
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat[prefix[:-1]] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", to_dict(config))
    return flat


def log_samples(accelerator: Accelerator, step: int, path: Path) -> None:
    """The sample grid, as the trackers' validation images."""
    import numpy as np
    from PIL import Image

    grid = np.asarray(Image.open(path).convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": grid[None]}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({"samples": [Image.fromarray(grid)]}, step=step)


def check_sharding(accelerator: Accelerator) -> None:
    """Refuse to run unsharded when the launch config asked for FSDP or DeepSpeed: accelerate (1.16) sets up
    neither without an accelerator device and would silently fall back to plain data parallel on the CPU."""
    for variable, kind in (("ACCELERATE_USE_FSDP", DistributedType.FSDP), ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)):
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type != kind:
            raise RuntimeError(
                f"the accelerate config asks for {kind.value} but accelerate set up {accelerator.distributed_type.value} "
                f"on {accelerator.device}: {kind.value} needs a GPU (or another accelerator device) here; "
                "use training/configs/accelerate/cpu.yaml on a CPU"
            )


def run(config: TrainConfig, resume: bool = False) -> Path:
    """Train to `max_steps`; returns the final checkpoint folder."""
    validate(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    output = Path(config.output_dir)
    config.mixed_precision = resolve_mixed_precision(config.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu")
    # On a machine without CUDA, processes started by `accelerate launch` talk over gloo on the CPU.
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available(),
        log_with=None if config.log_with == "none" else config.log_with, project_dir=str(output / "logs"),
    )
    check_sharding(accelerator)
    if accelerator.device.type == "cpu" and config.mixed_precision == "bf16" and not cpu_has_bf16_units():
        accelerator.print("notice: bf16 autocast on a CPU without bf16 units (no amx_bf16/avx512_bf16) is emulated and "
                          "about 15x slower than fp32 here; consider mixed_precision='\"no\"'")
    trainer = Trainer(config, accelerator)
    if resume and (found := latest_checkpoint(output)):
        trainer.load_checkpoint(found)
        accelerator.print(f"resumed from {found} at step {trainer.step}")
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        accelerator.print(f"{config.model.kind} model: {trainer.trainable:,} trainable parameters")
    accelerator.init_trackers("train", config=tracker_config(config))
    log = CsvLog(output / "log.csv", append=resume, enabled=accelerator.is_main_process)
    started = last_time = time.time()
    last_step = trainer.step
    items_per_step = config.optim.batch_size * config.optim.gradient_accumulation_steps * accelerator.num_processes
    while trainer.step < config.max_steps:
        loss = trainer.train_step()
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {trainer.step}; lower optim.lr")
        if trainer.step % config.log_every == 0 or trainer.step == config.max_steps:
            now = time.time()
            steps_per_s = (trainer.step - last_step) / max(now - last_time, 1e-9)
            last_time, last_step = now, trainer.step
            log.write(step=trainer.step, loss=f"{loss:.6f}", seconds=f"{now - started:.1f}")
            rate = learning_rate(config.optim, trainer.step - 1, config.max_steps, config.flow.align_steps,
                                 config.flow.warm_start_fade)
            accelerator.log({"loss": loss, "lr": rate,
                             "steps_per_s": steps_per_s, "samples_per_s": steps_per_s * items_per_step}, step=trainer.step)
            accelerator.print(f"step {trainer.step}: loss {loss:.5f}", flush=True)
        if trainer.step % config.checkpoint_every == 0 or trainer.step == config.max_steps:
            trainer.save_checkpoint()
        if config.sample_every and trainer.step % config.sample_every == 0 and accelerator.is_main_process:
            log_samples(accelerator, trainer.step, trainer.sample_grid())
    if accelerator.is_main_process:
        log_samples(accelerator, trainer.step, trainer.sample_grid())
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and, in accelerate 1.16, the process group
    return latest_checkpoint(output)


def main(argv=None):
    arguments, config = parse_command_line(
        TrainConfig, __doc__, argv,
        [(("--resume",), {"action": "store_true", "help": "continue from the latest checkpoint in output_dir"})],
    )
    run(config, resume=arguments.resume)


if __name__ == "__main__":
    main()
