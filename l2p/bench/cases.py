"""What the benchmark measures: the pipelines ("pixel", "pixel_hr", "source"), the sizes, and the models behind them.

A case is one pipeline at one size. `spec` says where the models come from: {"scale": "tiny", "source": folder,
"pixel": folder, optionally "pixel_hr": folder} (pipeline folders, e.g. the embedded tiny models; without
"pixel_hr" the HR case grows its head from the pixel model's, untrained outer levels, which costs the same) or {"scale": "full", "overrides": {"dit",
"pixel", "vae", "text_encoder": config overrides}} (the released sizes with random weights: speed and memory do
not depend on weight values). Both take {"hr_rule": {"min_side", "base_patch"}} to move the high-resolution
patch rule (tests use it at tiny sizes).
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
from pathlib import Path

import torch

from ..sizes import native_side, pixels_per_token, token_count

PIPELINES = ("pixel", "pixel_hr", "source")
DEFAULT_SIZES = ("native", "1024", "2048", "4096", "8192")
# Long image side at which the high-resolution patch takes over from 16 (the release's HR models: 4K and up).
HR_MIN_SIDE = 4096
HR_BASE_PATCH = 64
# Words the tiny models' tokenizers know; the prompt is padded to max_sequence_length tokens by Z-Image's
# encoder anyway, so text encoding cost does not depend on it.
PROMPT = "a red circle and a blue square on a white background"


# -- the high-resolution variant ----------------------------------------------------------------------------
def hr_patch_size(width: int, height: int, min_side: int = HR_MIN_SIDE, base_patch: int = HR_BASE_PATCH) -> int | None:
    """The high-resolution model's patch for an image, or None below 4K (where the 16-px model is the one).

    The release keeps the DiT grid at 64 tokens per side: patch 64 at 4K, 128 at 8K. Here the patch doubles
    from 64 until the long side fits in 64 tokens, so the patch stays a power of two (as the Detailer Head's
    pooling needs). `min_side` and `base_patch` move the rule (tests use it at tiny sizes).
    """
    longest = max(width, height)
    if longest < min_side:
        return None
    return base_patch * 2 ** max(0, math.ceil(math.log2(longest / min_side)))


def hr_detailer_channels(channels, patch_size: int, hr_patch: int) -> list[int]:
    """The high-resolution head for `hr_patch` (`l2p.high_resolution.high_resolution_channels`): the release's 4K
    head has two extra outer levels of 16 and 32 channels before (64, 128, 256, 512); 8K one more (8 here; the
    release does not say)."""
    from ..high_resolution import high_resolution_channels

    return high_resolution_channels(channels, hr_patch // patch_size)


def pixel_folder_geometry(folder) -> tuple[int, int]:
    """(native side, patch) of an L2PPipeline folder, from its transformer config (nothing is loaded)."""
    from ..transformer_l2p import L2PTransformer2DModel

    transformer = Path(folder) / "transformer"
    if not (transformer / "config.json").is_file():
        raise SystemExit(f"{folder}: no transformer/config.json (an L2PPipeline folder is expected)")
    config = L2PTransformer2DModel.load_config(transformer)
    return native_side(config["patch_size"], config["trained_grid"]), config["patch_size"]


def spec_hr_rule(spec: dict) -> tuple[int, int]:
    """(min_side, base_patch) of the high-resolution patch rule (`hr_patch_size`) for this run."""
    rule = spec.get("hr_rule") or {}
    return rule.get("min_side", HR_MIN_SIDE), rule.get("base_patch", HR_BASE_PATCH)


def spec_hr_patch(spec: dict, width: int, height: int) -> int | None:
    return hr_patch_size(width, height, *spec_hr_rule(spec))


# -- sizes and cases ------------------------------------------------------------------------------------------
def parse_size(text: str, native: int) -> tuple[int, int]:
    if text == "native":
        return native, native
    match = re.fullmatch(r"(\d+)(?:[xX](\d+))?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must be N, WxH or 'native', got {text!r}")
    width = int(match.group(1))
    return width, int(match.group(2) or width)


def plan_cases(
    sizes: list[tuple[int, int]], pixel_patch: int, source_pixels_per_token: int, hr_rule=(HR_MIN_SIDE, HR_BASE_PATCH),
    hr_folder_patch: int | None = None,
) -> list[tuple[str, int, int]]:
    """(pipeline, width, height) for every size: source and pixel where the size is valid, pixel_hr from 4K.

    `hr_folder_patch`: the patch of a trained HR folder (`--pixel-hr`); it serves only the sizes where the rule
    asks for that patch (a long side of exactly 512 px for the toy's 512-px folder), so pixel_hr is measured only there.
    """
    cases = []
    for width, height in sizes:
        for pipeline in ("source", "pixel", "pixel_hr"):
            if pipeline == "pixel_hr":
                patch = hr_patch_size(width, height, *hr_rule)
                if patch is None or width % patch or height % patch or hr_folder_patch not in (None, patch):
                    continue
            elif pipeline == "pixel" and (width % pixel_patch or height % pixel_patch):
                continue
            elif pipeline == "source" and (width % source_pixels_per_token or height % source_pixels_per_token):
                continue
            cases.append((pipeline, width, height))
    return cases


def case_tokens(pipe, width: int, height: int) -> int:
    """Image tokens the pipeline's DiT sees at this size."""
    return token_count(width, height, pixels_per_token(pipe))


# -- full-scale models (random weights) -------------------------------------------------------------------------
def class_defaults(model_class) -> dict:
    """A model class's default config (its `__init__` defaults): for diffusers' Z-Image DiT and the L2P DiT,
    the released full size."""
    parameters = inspect.signature(model_class.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def l2p_transformer_config(**overrides) -> dict:
    """The L2P 1K release (`L2PTransformer2DModel`'s defaults: Z-Image's DiT, patch 16, the (64, 128, 256, 512)
    Detailer Head), with overrides."""
    from ..transformer_l2p import L2PTransformer2DModel

    return {**class_defaults(L2PTransformer2DModel), **overrides}


def flux_vae_config(**overrides) -> dict:
    """The 16-channel FLUX-style AutoencoderKL Z-Image uses (factor 8): Z-Image-Turbo's vae/config.json."""
    config = dict(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
        latent_channels=16, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True, force_upcast=True,
    )
    config.update(overrides)
    return config


def qwen3_4b_config(**overrides) -> dict:
    """Qwen3-4B, Z-Image's text encoder (hidden 2560): Z-Image-Turbo's text_encoder/config.json."""
    config = dict(
        vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True,
    )
    config.update(overrides)
    return config


# -- building the pipelines -------------------------------------------------------------------------------------
def quiet_loading() -> None:
    """No progress bars or casting chatter from diffusers/transformers while loading and generating."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def tiny_spec_paths(spec: dict) -> tuple[Path, Path]:
    source, pixel = Path(spec["source"]), Path(spec["pixel"])
    missing = [str(path) for path in (source, pixel) if not (path / "model_index.json").is_file()]
    if missing:
        raise SystemExit(
            "tiny model folder(s) not found: " + ", ".join(missing) + ". The embedded tiny models are built by "
            "the training package; until they exist pass --source and --pixel (a ZImagePipeline and an "
            "L2PPipeline saved with save_pretrained), or use --scale full."
        )
    return source, pixel


def _full_text_encoder(overrides: dict, device, dtype):
    from transformers import Qwen3Config, Qwen3Model

    from ..tokenizer import build_word_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        text_encoder = Qwen3Model(Qwen3Config(**qwen3_4b_config(**overrides.get("text_encoder", {})))).eval()
    return text_encoder.to(dtype), build_word_tokenizer(PROMPT.split())


def _full_pixel_config(spec: dict, text_encoder_hidden: int) -> dict:
    overrides = spec.get("overrides", {})
    return l2p_transformer_config(cap_feat_dim=text_encoder_hidden, **overrides.get("dit", {}), **overrides.get("pixel", {}))


def build_pipeline(spec: dict, pipeline: str, width: int, height: int, device, dtype, shared: dict | None = None):
    """The pipeline object measured for `pipeline` ("pixel", "pixel_hr", "source") at a size.

    `spec`: see the module docstring. `shared` caches the text encoder between calls.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    from ..high_resolution import grow_for_high_resolution
    from ..pipeline_l2p import L2PPipeline
    from ..transformer_l2p import L2PTransformer2DModel

    shared = {} if shared is None else shared
    if spec["scale"] == "tiny":
        source_path, pixel_path = tiny_spec_paths(spec)
        if pipeline == "source":
            pipe = ZImagePipeline.from_pretrained(source_path, dtype=dtype)
        elif pipeline == "pixel_hr" and spec.get("pixel_hr"):  # plan_cases keeps it to the sizes it serves
            pipe = L2PPipeline.from_pretrained(spec["pixel_hr"], dtype=dtype)
        else:
            pipe = L2PPipeline.from_pretrained(pixel_path, dtype=dtype)
            if pipeline == "pixel_hr":
                base = pipe.transformer
                hr_patch = spec_hr_patch(spec, width, height)
                torch.manual_seed(0)
                pipe.transformer = grow_for_high_resolution(base, hr_patch // base.config.patch_size).eval()
                del base
        return pipe if torch.device(device).type == "cpu" else pipe.to(device)

    overrides = spec.get("overrides", {})
    if "text_encoder" not in shared:
        shared["text_encoder"] = _full_text_encoder(overrides, device, dtype)
    text_encoder, tokenizer = shared["text_encoder"]
    hidden = text_encoder.config.hidden_size
    torch.manual_seed(0)
    if pipeline == "source":
        vae_config = flux_vae_config(**overrides.get("vae", {}))
        dit = {**class_defaults(ZImageTransformer2DModel), "cap_feat_dim": hidden, **overrides.get("dit", {})}
        with torch.device(device):
            vae = AutoencoderKL(**vae_config).eval()
            transformer = ZImageTransformer2DModel(**{**dit, "in_channels": vae_config["latent_channels"]}).eval()
        return ZImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae.to(dtype), text_encoder=text_encoder,
            tokenizer=tokenizer, transformer=transformer.to(dtype),
        )
    config = _full_pixel_config(spec, hidden)
    if pipeline == "pixel_hr":
        hr_patch = spec_hr_patch(spec, width, height)
        config["detailer_channels"] = hr_detailer_channels(config["detailer_channels"], config["patch_size"], hr_patch)
        config["patch_size"] = hr_patch
    with torch.device(device):
        transformer = L2PTransformer2DModel(**config).eval()
    return L2PPipeline(L2PPipeline.default_scheduler(), text_encoder, tokenizer, transformer.to(dtype))


def configure(pipe, pipeline: str, attention: str | None, detailer_tile: int | None) -> None:
    """The attention backend and the Detailer Head's tiling a run asked for."""
    if attention and attention != "native":
        pipe.transformer.set_attention_backend(attention)
        pipe.transformer._l2p_attention_backend = attention
    if pipeline != "source" and detailer_tile:
        decoder = pipe.transformer.local_decoder
        decoder.enable_tiling(-(-detailer_tile // decoder.downsampling) * decoder.downsampling)


def native_size(spec: dict) -> int:
    """The pixel model's trained size (256 for the tiny model, 1024 at full size), from its config."""
    if spec["scale"] == "tiny":
        return pixel_folder_geometry(tiny_spec_paths(spec)[1])[0]
    config = l2p_transformer_config(**spec.get("overrides", {}).get("pixel", {}))
    return native_side(config["patch_size"], config["trained_grid"])


def describe_spec(spec: dict) -> dict:
    if spec["scale"] == "tiny":
        described = {"source": str(spec["source"]), "pixel": str(spec["pixel"])}
        described["pixel_hr"] = str(spec["pixel_hr"]) if spec.get("pixel_hr") else "grown from pixel (untrained outer head levels)"
        return described
    return {
        "source": "ZImageTransformer2DModel(default config) + AutoencoderKL(FLUX-style, 16 ch), random weights",
        "pixel": "L2PTransformer2DModel(default config), random weights",
        "pixel_hr": "the same DiT at the high-resolution patch, head with extra outer levels",
        "text_encoder": "Qwen3-4B config, random weights",
        "overrides": spec.get("overrides", {}),
    }
