"""Tiny components, built in code, for tests: the same classes as full scale at toy widths."""

import torch
from diffusers import ZImagePipeline, ZImageTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler
from transformers import Qwen3Config, Qwen3Model

from l2p import L2PPipeline, L2PTransformer2DModel
from l2p.tokenizer import build_word_tokenizer

WORDS = "a an and on of left right above below background one two three four circle circles square squares triangle triangles red green blue yellow purple orange white black gray".split()
TEXT_DIM = 32
# Z-Image's shape at toy width: head dim 32 = sum(axes_dims).
DIT = dict(dim=64, n_layers=4, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=TEXT_DIM, axes_dims=[8, 12, 12])


def tokenizer():
    return build_word_tokenizer(WORDS)


def text_encoder(seed=0):
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer()), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
    )
    return Qwen3Model(config).eval()


def source_transformer(seed=0):
    torch.manual_seed(seed)
    return ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, **DIT).eval()


def pixel_transformer(seed=0, patch_size=16, trained_grid=16, **extra):
    torch.manual_seed(seed)
    return L2PTransformer2DModel(patch_size=patch_size, detailer_channels=(8, 8, 16, 16), trained_grid=trained_grid, **DIT, **extra).eval()


def pixel_pipeline(seed=0):
    return L2PPipeline(
        scheduler=L2PPipeline.default_scheduler(), text_encoder=text_encoder(seed), tokenizer=tokenizer(),
        transformer=pixel_transformer(seed),
    )


def vae(seed=0):
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), scaling_factor=0.5, shift_factor=0.1,
    ).eval()


def source_pipeline(seed=0):
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae(seed), text_encoder=text_encoder(seed),
        tokenizer=tokenizer(), transformer=source_transformer(seed),
    )
