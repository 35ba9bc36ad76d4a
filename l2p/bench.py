"""`python -m l2p.bench`: latent versus pixel cost per step, VAE decode, text encoding and peak memory.

For each image size (the model's native size, 1K, 2K, 4K, 8K and any size on the command line) one run
measures, side by side:

- "pixel": the L2P model at its own patch (16), one denoising step (one DiT + Detailer Head forward, batch 1,
  no CFG): median of `--steps` timed calls after `--warmup` untimed ones;
- "pixel_hr": the same DiT with the high-resolution patch (64 at 4K, 128 at 8K; see `l2p.costs.hr_patch_size`)
  and a Detailer Head with the release's extra outer levels, where that patch applies;
- "source": the latent Z-Image DiT, one step, and the VAE decode of its latents;
- for every pipeline: text encoding time, FLOPs per step (counted with `torch.utils.flop_counter` on one real
  step, attention included) and the achieved rate as a fraction of this device's measured matmul peak, and the
  peak memory of a whole `--generation-steps` generation (text encoding, steps, decode), weights included:
  CUDA: `torch.cuda.max_memory_allocated`, reset per case; CPU: peak RSS of a fresh subprocess per case.

Before a case runs, an analytic estimate of its peak memory (parameters + activations) is compared with the
device's memory (CUDA: total; CPU: available RAM); a case that would not fit is recorded as "does not fit"
with the estimate instead of being run. On CPU a case whose predicted run time exceeds `--time-budget` is
skipped and listed as such (the prediction comes from the sizes already measured).

Two scales: `--scale tiny` loads the embedded tiny models (`--source`, `--pixel` folders) and runs on the CPU;
`--scale full` builds the default Z-Image and L2P configs with random weights (speed and memory do not depend
on weight values), the 16-channel FLUX-style VAE and a Qwen3-4B text encoder, in bf16 on a GPU.

Output, under `--out` (docs/benchmarks): `<scale>-<device>.json` (records, one per size and pipeline, plus the
device, versions and command), `.md` (the table) and `.png` (the plot). `l2p.costs.CostModel.from_benchmarks`
fits the app's time and memory estimates to the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .costs import HR_BASE_PATCH, HR_MIN_SIDE, PIPELINES, CostModel, hr_patch_size, token_count

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks"
DEFAULT_TINY_SOURCE = REPO_ROOT / "assets" / "tiny-source"
DEFAULT_TINY_PIXEL = REPO_ROOT / "assets" / "tiny-l2p"
DEFAULT_SIZES = ("native", "1024", "2048", "4096", "8192")
# Words the tiny models' tokenizers know; the prompt is padded to max_sequence_length tokens by Z-Image's
# encoder anyway, so text encoding cost does not depend on it.
PROMPT = "a red circle left of a blue square on a white background"
CAPTION_TOKENS = 32  # real caption tokens the DiT sees (the prompt plus chat template), padded to 32
RESULT_MARKER = "L2P_BENCH_RESULT "
FLOPS_METHOD = "torch.utils.flop_counter, one real step (attention included)"


# =========================================================================================================
# Full-scale configs (random weights). Every builder takes overrides so tests run the same path at tiny dims.
# =========================================================================================================
def zimage_transformer_config(**overrides) -> dict:
    """Z-Image's (Turbo) DiT: diffusers' defaults, latent patch 2, 16 latent channels."""
    config = dict(
        all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
        n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0,
        t_scale=1000.0, axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512],
    )
    config.update(overrides)
    return config


def l2p_transformer_config(**overrides) -> dict:
    """The L2P 1K release: the same DiT, patch 16, the (64, 128, 256, 512) Detailer Head."""
    config = dict(
        patch_size=16, in_channels=3, dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30, n_kv_heads=30,
        norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0, t_scale=1000.0, axes_dims=[32, 48, 48],
        axes_lens=[1024, 512, 512], detailer_channels=[64, 128, 256, 512], trained_grid=64,
    )
    config.update(overrides)
    return config


def flux_vae_config(**overrides) -> dict:
    """The 16-channel FLUX-style AutoencoderKL Z-Image uses (factor 8)."""
    config = dict(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
        latent_channels=16, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True, force_upcast=True,
    )
    config.update(overrides)
    return config


def qwen3_4b_config(**overrides) -> dict:
    """Qwen3-4B, Z-Image's text encoder (hidden 2560)."""
    config = dict(
        vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True,
    )
    config.update(overrides)
    return config


def hr_detailer_channels(channels, patch_size: int, hr_patch: int) -> list[int]:
    """The high-resolution head: the base head with one outer level per doubling of the patch, each half as wide.

    The release's 4K head has two extra full-/half-resolution levels of 16 and 32 channels before the usual
    (64, 128, 256, 512); 8K has one more outer level (8 channels here; the release does not say).
    """
    extra = int(round(math.log2(hr_patch / patch_size)))
    first = channels[0]
    return [max(2, first >> k) for k in range(extra, 0, -1)] + list(channels)


# =========================================================================================================
# Building the pipelines
# =========================================================================================================
def spec_hr_rule(spec: dict) -> tuple[int, int]:
    """(min_side, base_patch) of the high-resolution patch rule (`l2p.costs.hr_patch_size`) for this run."""
    rule = spec.get("hr_rule") or {}
    return rule.get("min_side", HR_MIN_SIDE), rule.get("base_patch", HR_BASE_PATCH)


def spec_hr_patch(spec: dict, width: int, height: int) -> int | None:
    return hr_patch_size(width, height, *spec_hr_rule(spec))


def quiet_loading() -> None:
    """No progress bars or casting chatter from diffusers/transformers while loading and generating."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _tiny_spec_paths(spec: dict) -> tuple[Path, Path]:
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

    from .tokenizer import build_word_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        text_encoder = Qwen3Model(Qwen3Config(**qwen3_4b_config(**overrides.get("text_encoder", {})))).eval()
    return text_encoder.to(dtype), build_word_tokenizer(PROMPT.split())


def _full_dit_overrides(overrides: dict, text_encoder_hidden: int) -> dict:
    return {"cap_feat_dim": text_encoder_hidden, **overrides.get("dit", {})}


def build_pipeline(spec: dict, pipeline: str, width: int, height: int, device, dtype, shared: dict | None = None):
    """The pipeline object measured for `pipeline` ("pixel", "pixel_hr", "source") at a size.

    spec: {"scale": "tiny", "source": folder, "pixel": folder} or {"scale": "full", "overrides": {"dit",
    "pixel", "vae", "text_encoder": config overrides}}. `shared` caches the text encoder between calls.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    from .pipeline_l2p import L2PPipeline
    from .transformer_l2p import L2PTransformer2DModel

    shared = {} if shared is None else shared
    if spec["scale"] == "tiny":
        source_path, pixel_path = _tiny_spec_paths(spec)
        if pipeline == "source":
            pipe = ZImagePipeline.from_pretrained(source_path, dtype=dtype)
        else:
            pipe = L2PPipeline.from_pretrained(pixel_path, dtype=dtype)
            if pipeline == "pixel_hr":
                base = pipe.transformer
                hr_patch = spec_hr_patch(spec, width, height)
                torch.manual_seed(0)
                pipe.transformer = L2PTransformer2DModel.from_source(
                    base, patch_size=hr_patch, trained_grid=base.config.trained_grid,
                    detailer_channels=hr_detailer_channels(base.config.detailer_channels, base.config.patch_size, hr_patch),
                ).eval()
                del base
        return pipe if torch.device(device).type == "cpu" else pipe.to(device)

    overrides = spec.get("overrides", {})
    if "text_encoder" not in shared:
        shared["text_encoder"] = _full_text_encoder(overrides, device, dtype)
    text_encoder, tokenizer = shared["text_encoder"]
    dit = _full_dit_overrides(overrides, text_encoder.config.hidden_size)
    torch.manual_seed(0)
    if pipeline == "source":
        vae_config = flux_vae_config(**overrides.get("vae", {}))
        with torch.device(device):
            vae = AutoencoderKL(**vae_config).eval()
            transformer = ZImageTransformer2DModel(
                **zimage_transformer_config(in_channels=vae_config["latent_channels"], **dit)
            ).eval()
        return ZImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae.to(dtype), text_encoder=text_encoder,
            tokenizer=tokenizer, transformer=transformer.to(dtype),
        )
    config = l2p_transformer_config(**dit, **overrides.get("pixel", {}))
    if pipeline == "pixel_hr":
        hr_patch = spec_hr_patch(spec, width, height)
        config["detailer_channels"] = hr_detailer_channels(config["detailer_channels"], config["patch_size"], hr_patch)
        config["patch_size"] = hr_patch
    with torch.device(device):
        transformer = L2PTransformer2DModel(**config).eval()
    return L2PPipeline(L2PPipeline.default_scheduler(), text_encoder, tokenizer, transformer.to(dtype))


def native_size(spec: dict) -> int:
    """The pixel model's trained size: trained grid x patch (256 for the tiny model, 1024 at full size)."""
    if spec["scale"] == "tiny":
        _, pixel_path = _tiny_spec_paths(spec)
        with open(pixel_path / "transformer" / "config.json") as handle:
            config = json.load(handle)
    else:
        config = l2p_transformer_config(**spec.get("overrides", {}).get("pixel", {}))
    return config["trained_grid"] * config["patch_size"]


# =========================================================================================================
# Device facts
# =========================================================================================================
def device_name(device: str | torch.device | None = None) -> str:
    """A short slug for file names: "cpu" or the GPU's name (e.g. "nvidia-h100-80gb-hbm3")."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        return "cuda"
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return device.type


def device_description(device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA (not available on this machine)"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


def device_memory_bytes(device: str | torch.device | None = None) -> int | None:
    """The memory a case may use: a GPU's total memory, or the RAM available now on a CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _rss_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_memory(device) -> None:
    """Start a new peak: CUDA's max-allocated counter, or the process' RSS high-water mark (Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS


def peak_memory(device) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    peak = _rss_status("VmHWM")
    if peak is None:  # not Linux: the lifetime peak (kilobytes on Linux, bytes on macOS)
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return peak


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device, dtype, seconds: float = 2.0) -> float:
    """The device's achievable matmul rate (FLOP/s) for `dtype`: the best of square matmuls of a few sizes."""
    device = torch.device(device)
    sizes = (2048, 4096, 8192) if device.type == "cuda" else (256, 512, 1024)
    best = 0.0
    deadline = time.perf_counter() + seconds
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        _sync(device)
        for _ in range(3):
            start = time.perf_counter()
            repeats = 4
            for _ in range(repeats):
                torch.mm(a, b)
            _sync(device)
            elapsed = time.perf_counter() - start
            best = max(best, 2 * n**3 * repeats / elapsed)
        if time.perf_counter() > deadline:
            break
    return best


# =========================================================================================================
# Analytic memory estimate (the "does not fit" guard)
# =========================================================================================================
def _param_bytes(module) -> int:
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def analytic_peak_memory(pipe, pipeline: str, width: int, height: int, efficient_attention: bool = True) -> dict:
    """Estimated peak bytes of one batch-1 generation: weights + the largest phase's activations.

    Activations: the DiT's per-block working set (residual, q/k/v, FFN hidden: S (6 dim + 3 ffn) values for
    S tokens, plus heads S^2 scores when attention is not memory-efficient), the Detailer Head's skips and
    outer-level working set (per tile when tiled), the VAE decoder's largest level (three tensors of its
    widest channel count at that resolution), the text encoder's hidden states, and the pipeline's
    full-resolution float32 buffers (latents, prediction, x0, output image).
    """
    transformer = pipe.transformer
    weights = sum(_param_bytes(getattr(pipe, name, None)) for name in ("text_encoder", "transformer", "vae"))
    item = next(transformer.parameters()).element_size()
    pixels = width * height
    dim, heads = transformer.config.dim, transformer.config.n_heads
    ffn = transformer.layers[0].feed_forward.w1.out_features
    if pipeline == "source":
        factor = pipe.vae_scale_factor
        patch = transformer.config.all_patch_size[0]
        tokens = token_count(width, height, factor * patch)
        latent_elems = transformer.config.in_channels * pixels // factor**2
        buffers = 6 * latent_elems * 4 + 3 * pixels * (item + 8)  # latents etc.; decoded image and its float copies
    else:
        tokens = token_count(width, height, transformer.config.patch_size)
        buffers = 6 * 3 * pixels * 4 + 2 * 3 * pixels * item  # float32 latents, prediction, x0, step output
    sequence = tokens + CAPTION_TOKENS
    dit = sequence * (6 * dim + 3 * ffn) * item
    if not efficient_attention:
        dit += 2 * heads * sequence**2 * item
    head = 0
    if pipeline != "source":
        decoder = transformer.local_decoder
        channels = [getattr(decoder, f"enc{level}")[0].out_channels for level in range(1, decoder.num_levels + 1)]
        area = pixels
        if decoder.tile_size:
            side = decoder.tile_size + 2 * decoder.tile_halo
            area = min(pixels, side * side)
        skips = sum(c * area / 4**level for level, c in enumerate(channels))
        head = (skips + 4 * channels[0] * area + 2 * 3 * area) * item + dim * pixels / decoder.downsampling**2 * item
    vae = 0
    if pipeline == "source":
        out_channels = list(pipe.vae.config.block_out_channels)[::-1]  # decoder: deepest first
        widest = 0
        for level, channels in enumerate(out_channels):
            scale = 2 ** (len(out_channels) - 1 - level)
            incoming = out_channels[level - 1] if level else channels  # upsampled from the level below
            widest = max(widest, 3 * max(incoming, channels) * pixels / scale**2)
        vae = widest * next(pipe.vae.parameters()).element_size()
    text = 0
    if getattr(pipe, "text_encoder", None) is not None:
        config = pipe.text_encoder.config
        text_item = next(pipe.text_encoder.parameters()).element_size()
        text = 512 * (config.hidden_size * (config.num_hidden_layers + 8) + 3 * config.intermediate_size) * text_item
    activations = max(dit + head, vae, text)
    return {"estimated_peak_memory_bytes": int(weights + activations + buffers), "weights_bytes": int(weights)}


# =========================================================================================================
# Measuring one case in this process
# =========================================================================================================
def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn) -> int:
    """FLOPs of one call of `fn`, counted by `torch.utils.flop_counter` (with CPU's fused attention added)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    custom = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        if hasattr(aten, name):
            custom[getattr(aten, name)] = _sdpa_cpu_flop
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _native_attention(transformer):
    """Count FLOPs with PyTorch's SDPA (external kernels are invisible to the counter; the FLOPs are the same)."""
    backend = getattr(transformer, "_l2p_attention_backend", None)
    if backend in (None, "native"):
        yield
        return
    transformer.set_attention_backend("native")
    try:
        yield
    finally:
        transformer.set_attention_backend(backend)


def _step_inputs(pipe, pipeline: str, width: int, height: int, prompt_embeds, device):
    transformer = pipe.transformer
    dtype = transformer.dtype
    t = torch.full((1,), 0.5, device=device, dtype=torch.float32)
    if pipeline == "source":
        factor = pipe.vae_scale_factor
        latents = torch.randn(transformer.config.in_channels, 1, height // factor, width // factor, device=device, dtype=dtype)
        return lambda: transformer([latents], t, prompt_embeds, return_dict=False)
    image = torch.randn(1, transformer.config.in_channels, height, width, device=device, dtype=dtype)
    return lambda: transformer(image, t, prompt_embeds, return_dict=False)


def measure_case(
    pipe,
    pipeline: str,
    width: int,
    height: int,
    device,
    timed_steps: int = 3,
    warmup_steps: int = 1,
    generation_steps: int = 2,
    matmul_peak: float | None = None,
    flops: bool = True,
) -> dict:
    """Measure one (size, pipeline) case with `pipe` already on `device`; returns the record's measured fields.

    Order: the whole generation first (its peak memory, from a fresh peak), then text encoding, the step
    (the first warm-up counts FLOPs), the VAE decode (source).
    """
    device = torch.device(device)
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    record: dict = {"pipeline": pipeline, "width": width, "height": height}
    if pipeline == "source":
        record["patch_size"] = transformer.config.all_patch_size[0]
        record["pixels_per_token"] = pipe.vae_scale_factor * record["patch_size"]
    else:
        record["patch_size"] = record["pixels_per_token"] = transformer.config.patch_size
        record["detailer_channels"] = list(transformer.config.detailer_channels)
        record["detailer_tile"] = transformer.local_decoder.tile_size
    record["tokens"] = token_count(width, height, record["pixels_per_token"])

    with torch.inference_mode():
        # 1. A whole generation: peak memory (weights included) and wall time.
        record["memory_before_generation_bytes"] = int(
            torch.cuda.memory_allocated(device) if device.type == "cuda" else (_rss_status("VmRSS") or 0)
        )
        reset_peak_memory(device)
        record["generation_steps"] = generation_steps
        record["generation_s"] = _timed(
            lambda: pipe(PROMPT, height=height, width=width, num_inference_steps=generation_steps, guidance_scale=1.0,
                         output_type="pt"),
            device,
        )
        record["peak_memory_bytes"] = int(peak_memory(device))

        # 2. Text encoding (one prompt, no negative).
        encode = lambda: pipe.encode_prompt(PROMPT, device=device, do_classifier_free_guidance=False)  # noqa: E731
        prompt_embeds, _ = encode()
        record["text_encode_s"] = statistics.median(_timed(encode, device) for _ in range(max(1, timed_steps)))
        prompt_embeds = [embeds.to(transformer.dtype) for embeds in prompt_embeds]

        # 3. One denoising step: the first warm-up counts FLOPs, then the timed calls.
        step = _step_inputs(pipe, pipeline, width, height, prompt_embeds, device)
        record["flops_per_step"] = None
        if flops:
            with _native_attention(transformer):
                record["flops_per_step"] = count_flops(step)
            record["flops_method"] = FLOPS_METHOD
        for _ in range(max(0, warmup_steps - 1 if flops else warmup_steps)):
            step()
        times = [_timed(step, device) for _ in range(max(1, timed_steps))]
        record["step_s"] = statistics.median(times)
        record["step_times_s"] = times
        if matmul_peak and flops:
            record["achieved_fraction_of_peak"] = record["flops_per_step"] / record["step_s"] / matmul_peak

        # 4. The VAE decode of the source's latents (as ZImagePipeline does it).
        record["vae_decode_s"] = None
        if pipeline == "source":
            vae = pipe.vae
            factor = pipe.vae_scale_factor
            latents = torch.randn(1, vae.config.latent_channels, height // factor, width // factor, device=device, dtype=vae.dtype)
            latents = latents / vae.config.scaling_factor + vae.config.shift_factor
            decode = lambda: vae.decode(latents, return_dict=False)  # noqa: E731
            if flops:
                record["vae_decode_flops"] = count_flops(decode)
            else:
                decode()
            record["vae_decode_s"] = statistics.median(_timed(decode, device) for _ in range(max(1, timed_steps)))
    record["status"] = "ok"
    return record


def measure_in_process(
    pipes: dict, sizes, timed_steps: int = 1, warmup_steps: int = 1, generation_steps: int = 1, flops: bool = False
) -> list[dict]:
    """Measure already-built pipelines (name -> pipeline) at `sizes` in this process (used by `CostModel.calibrate`).

    Sizes are ints (square) or (width, height). Peak memory is reset per case (CPU: the RSS high-water mark), so
    every pipeline resident in this process counts in every case, as it does in an app that holds them all.
    FLOPs are not counted unless asked (counting costs an extra step).
    """
    records = []
    for size in sizes:
        width, height = (size, size) if isinstance(size, int) else size
        for name, pipe in pipes.items():
            device = pipe._execution_device
            records.append(
                measure_case(pipe, name, width, height, device, timed_steps=timed_steps, warmup_steps=warmup_steps,
                             generation_steps=generation_steps, flops=flops)
            )
    return records


# =========================================================================================================
# The run: cases, the memory guard, subprocesses on CPU, budgets
# =========================================================================================================
def parse_size(text: str, native: int) -> tuple[int, int]:
    if text == "native":
        return native, native
    match = re.fullmatch(r"(\d+)(?:[xX](\d+))?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must be N, WxH or 'native', got {text!r}")
    width = int(match.group(1))
    return width, int(match.group(2) or width)


def plan_cases(
    sizes: list[tuple[int, int]], pixel_patch: int, source_pixels_per_token: int, hr_rule=(HR_MIN_SIDE, HR_BASE_PATCH)
) -> list[tuple[str, int, int]]:
    """(pipeline, width, height) for every size: source and pixel where the size is valid, pixel_hr from 4K."""
    cases = []
    for width, height in sizes:
        for pipeline in ("source", "pixel", "pixel_hr"):
            if pipeline == "pixel_hr":
                patch = hr_patch_size(width, height, *hr_rule)
                if patch is None or width % patch or height % patch:
                    continue
            elif pipeline == "pixel" and (width % pixel_patch or height % pixel_patch):
                continue
            elif pipeline == "source" and (width % source_pixels_per_token or height % source_pixels_per_token):
                continue
            cases.append((pipeline, width, height))
    return cases


def _predict_case_seconds(
    records: list[dict], pipeline: str, width: int, height: int, steps_per_case: int, hr_rule
) -> float | None:
    """Predicted wall time of a case from the records measured so far (None without any)."""
    done = [r for r in records if r["pipeline"] == pipeline and r.get("status") == "ok"]
    if not done:
        return None
    if len(done) == 1:  # one size: scale linearly with tokens or pixels, whichever grows more
        r = done[0]
        patch = hr_patch_size(width, height, *hr_rule) if pipeline == "pixel_hr" else r["pixels_per_token"]
        growth = max(token_count(width, height, patch) / r["tokens"], width * height / (r["width"] * r["height"]))
        return (r["step_s"] * steps_per_case + (r.get("vae_decode_s") or 0) * 3 + r["text_encode_s"] * 3) * growth
    model = CostModel.from_records(done, hr_rule=hr_rule)
    estimate = model.estimate(pipeline, width, height, steps_per_case, cfg=False)
    return estimate.seconds


def _run_worker_subprocess(case: dict, threads: int, timeout: float | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    command = [sys.executable, "-m", "l2p.bench", "--worker", json.dumps(case)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"worker timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    if done.returncode in (-9, 137):
        return {"status": "does not fit", "note": "the worker was killed (out of memory)"}
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"status": "error", "note": f"worker exited with {done.returncode}: " + " | ".join(tail)}


def _worker_main(case_json: str) -> None:
    """Entry of the CPU subprocess: build one pipeline, measure one case, print the record."""
    case = json.loads(case_json)
    torch.set_num_threads(case["threads"])
    quiet_loading()
    dtype = getattr(torch, case["dtype"])
    pipe = build_pipeline(case["spec"], case["pipeline"], case["width"], case["height"], case["device"], dtype)
    _configure(pipe, case["pipeline"], case.get("attention"), case.get("detailer_tile"))
    record = measure_case(
        pipe, case["pipeline"], case["width"], case["height"], case["device"], timed_steps=case["timed_steps"],
        warmup_steps=case["warmup_steps"], generation_steps=case["generation_steps"], matmul_peak=case.get("matmul_peak"),
    )
    print(RESULT_MARKER + json.dumps(record), flush=True)


def _configure(pipe, pipeline: str, attention: str | None, detailer_tile: int | None) -> None:
    if attention and attention != "native":
        pipe.transformer.set_attention_backend(attention)
        pipe.transformer._l2p_attention_backend = attention
    if pipeline != "source" and detailer_tile:
        decoder = pipe.transformer.local_decoder
        decoder.enable_tiling(-(-detailer_tile // decoder.downsampling) * decoder.downsampling)


def run_benchmark(
    scale: str,
    spec: dict,
    sizes: list[tuple[int, int]],
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    timed_steps: int = 3,
    warmup_steps: int = 1,
    generation_steps: int = 2,
    time_budget: float | None = None,
    attention: str | None = None,
    detailer_tile: int | None = None,
    threads: int | None = None,
    command: str | None = None,
    isolate: bool = True,
    dry_run: bool = False,
    memory_limit: int | None = None,
    log=print,
) -> dict:
    """Measure every case and return {"meta": ..., "records": [...], "skipped": [...]}.

    The same function serves both scales: `spec` says where the models come from (see `build_pipeline`).
    On CUDA the cases run in this process (peak memory reset per case, one pipeline and the text encoder
    resident at a time); on CPU each case runs in a fresh subprocess (peak RSS), unless `isolate` is False, when
    CPU cases run in this process like CUDA ones (peak RSS reset per case; the process' other memory counts).
    """
    device = torch.device(device)
    quiet_loading()
    in_process = device.type == "cuda" or not isolate
    if dry_run:  # only the plan and the analytic estimates: nothing is measured or built for real
        isolate, in_process = False, False
    threads = threads or torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    if memory_limit is None and (device.type != "cuda" or torch.cuda.is_available()):
        memory_limit = device_memory_bytes(device)
    matmul_peak = 0.0 if dry_run else measure_matmul_peak(device, dtype)
    log(f"[bench] {device_description(device)}; matmul peak {matmul_peak / 1e9:.1f} GFLOP/s ({str(dtype).replace('torch.', '')})")

    # Analytic estimates need the models' structure: built on the meta device at full scale (no memory, no
    # time), loaded for real at tiny scale (small).
    structure_device = "meta" if spec["scale"] == "full" else "cpu"
    shared_structure: dict = {}
    probe = {name: build_pipeline(spec, name, 4096, 4096, structure_device, dtype, shared_structure) for name in ("source", "pixel")}
    pixel_patch = probe["pixel"].transformer.config.patch_size
    source_ppt = probe["source"].vae_scale_factor * probe["source"].transformer.config.all_patch_size[0]
    hr_rule = spec_hr_rule(spec)
    cases = plan_cases(sizes, pixel_patch, source_ppt, hr_rule)
    baseline_rss = _rss_status("VmRSS") if device.type == "cpu" else 0
    efficient = attention not in ("_native_math",)

    records: list[dict] = []
    skipped: list[dict] = []
    shared: dict = {}
    built: dict = {}
    steps_per_case = generation_steps + warmup_steps + timed_steps
    for pipeline, width, height in cases:
        base = {"scale": scale, "device": device_name(device), "width": width, "height": height, "pipeline": pipeline}
        structure = probe.get(pipeline) or build_pipeline(spec, pipeline, width, height, structure_device, dtype, shared_structure)
        if pipeline != "source":
            _configure(structure, pipeline, None, detailer_tile)
        estimate = analytic_peak_memory(structure, pipeline, width, height, efficient_attention=efficient)
        estimate["estimated_peak_memory_bytes"] += baseline_rss or 0
        label = f"{pipeline} {width}x{height}"
        if dry_run:
            fits = memory_limit is None or estimate["estimated_peak_memory_bytes"] <= memory_limit
            log(f"[bench] {label}: estimated peak {estimate['estimated_peak_memory_bytes'] / 2**30:.2f} GiB "
                f"(weights {estimate['weights_bytes'] / 2**30:.2f} GiB)" + ("" if fits else ": does not fit"))
            records.append(_unmeasured(base, estimate, "estimate only" if fits else "does not fit", "dry run: not measured"))
            continue
        if memory_limit is not None and estimate["estimated_peak_memory_bytes"] > memory_limit:
            log(f"[bench] {label}: does not fit (estimated {estimate['estimated_peak_memory_bytes'] / 2**30:.2f} GiB "
                f"> {memory_limit / 2**30:.2f} GiB)")
            records.append(_unmeasured(base, estimate, "does not fit", "analytic estimate above the device's memory"))
            continue
        if time_budget is not None:
            predicted = _predict_case_seconds(records, pipeline, width, height, steps_per_case, hr_rule)
            if predicted is not None and predicted > time_budget:
                log(f"[bench] {label}: skipped, predicted {predicted:.0f} s > budget {time_budget:.0f} s")
                skipped.append({**base, "reason": "time budget", "predicted_s": predicted, "time_budget_s": time_budget})
                continue
        log(f"[bench] {label}: measuring ...")
        if not in_process:
            case = {
                "spec": spec, "pipeline": pipeline, "width": width, "height": height, "device": "cpu",
                "dtype": str(dtype).replace("torch.", ""), "threads": threads, "timed_steps": timed_steps,
                "warmup_steps": warmup_steps, "generation_steps": generation_steps, "matmul_peak": matmul_peak,
                "attention": attention, "detailer_tile": detailer_tile,
            }
            predicted = _predict_case_seconds(records, pipeline, width, height, steps_per_case, hr_rule)
            timeout = None if time_budget is None else max(600.0, 4 * max(time_budget, predicted or 0))
            result = _run_worker_subprocess(case, threads, timeout)
        else:
            result = _measure_here(spec, pipeline, width, height, device, dtype, shared, built, attention, detailer_tile,
                                     timed_steps, warmup_steps, generation_steps, matmul_peak)
        if result.get("status") != "ok":
            log(f"[bench] {label}: {result.get('status')}: {result.get('note', '')}")
            records.append(_unmeasured(base, estimate, result.get("status", "error"), result.get("note", "")))
            continue
        record = {**base, **result, **estimate}
        records.append(record)
        log(f"[bench] {label}: step {record['step_s'] * 1e3:.1f} ms, peak {record['peak_memory_bytes'] / 2**20:.0f} MiB"
            + (f", VAE decode {record['vae_decode_s'] * 1e3:.1f} ms" if record.get("vae_decode_s") else ""))
    _release(built, device)
    shared.clear()

    meta = {
        "scale": scale,
        "device": device_name(device),
        "device_description": device_description(device),
        "memory_limit_bytes": memory_limit,
        "dtype": str(dtype).replace("torch.", ""),
        "attention": attention or "native",
        "detailer_tile": detailer_tile,
        "threads": threads if device.type == "cpu" else None,
        "matmul_peak_flops": matmul_peak,
        "flops_method": FLOPS_METHOD,
        "memory_method": "torch.cuda.max_memory_allocated, reset per case" if device.type == "cuda"
        else "peak RSS (VmHWM) of a fresh subprocess per case, process runtime included" if not in_process
        else "peak RSS (VmHWM) of this process, reset per case, process runtime included",
        "timed_steps": timed_steps,
        "warmup_steps": warmup_steps,
        "generation_steps": generation_steps,
        "time_budget_s": time_budget,
        "hr_rule": {"min_side": hr_rule[0], "base_patch": hr_rule[1]},
        "models": _describe_spec(spec),
        "versions": _versions(),
        "command": command or " ".join(shlex.quote(a) for a in ["python", "-m", "l2p.bench", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return {"meta": meta, "records": records, "skipped": skipped}


def _measure_here(spec, pipeline, width, height, device, dtype, shared, built, attention, detailer_tile,
                  timed_steps, warmup_steps, generation_steps, matmul_peak) -> dict:
    """One case in this process, keeping only the pipeline being measured (and the text encoder) resident."""
    key = (pipeline, spec_hr_patch(spec, width, height) if pipeline == "pixel_hr" else None)
    try:
        if key not in built:
            _release(built, device)
            pipe = build_pipeline(spec, pipeline, width, height, device, dtype, shared)
            _configure(pipe, pipeline, attention, detailer_tile)
            built[key] = pipe
        return measure_case(built[key], pipeline, width, height, device, timed_steps=timed_steps,
                            warmup_steps=warmup_steps, generation_steps=generation_steps, matmul_peak=matmul_peak)
    except torch.cuda.OutOfMemoryError as error:
        _release(built, device)
        return {"status": "does not fit", "note": f"out of memory at run time ({str(error).splitlines()[0]})"}


def _release(built: dict, device) -> None:
    """Drop the pipelines held for earlier cases (pipelines hold reference cycles: collect them too)."""
    built.clear()
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _unmeasured(base: dict, estimate: dict, status: str, note: str) -> dict:
    return {
        **base, "step_s": None, "text_encode_s": None, "vae_decode_s": None, "peak_memory_bytes": None,
        "flops_per_step": None, **estimate, "status": status, "note": note,
    }


def _describe_spec(spec: dict) -> dict:
    if spec["scale"] == "tiny":
        return {"source": str(spec["source"]), "pixel": str(spec["pixel"])}
    overrides = spec.get("overrides", {})
    return {
        "source": "ZImageTransformer2DModel(default config) + AutoencoderKL(FLUX-style, 16 ch), random weights",
        "pixel": "L2PTransformer2DModel(default config), random weights",
        "pixel_hr": "the same DiT at the high-resolution patch, head with extra outer levels",
        "text_encoder": "Qwen3-4B config, random weights",
        "overrides": overrides,
    }


def _versions() -> dict:
    import diffusers
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {
        "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "l2p_commit": commit,
    }
    if torch.cuda.is_available():
        versions["cuda"] = torch.version.cuda
    return versions


# =========================================================================================================
# Output: JSON, markdown, PNG
# =========================================================================================================
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


# =========================================================================================================
# CLI
# =========================================================================================================
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m l2p.bench",
        description="Latent (source Z-Image) versus pixel (L2P) cost per step, VAE decode, text encoding and peak memory.",
    )
    parser.add_argument("extra_sizes", nargs="*", metavar="SIZE", help="more sizes to measure: N or WxH")
    parser.add_argument("--scale", choices=("tiny", "full"), default="tiny",
                        help="tiny: the embedded models on CPU; full: default configs, random weights, bf16 on a GPU")
    parser.add_argument("--source", default=str(DEFAULT_TINY_SOURCE), help="tiny scale: a ZImagePipeline folder")
    parser.add_argument("--pixel", default=str(DEFAULT_TINY_PIXEL), help="tiny scale: an L2PPipeline folder")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES),
                        help="replace the default sizes (native 1024 2048 4096 8192); N, WxH or native")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda for full scale, cpu for tiny)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="default bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (the first counts FLOPs)")
    parser.add_argument("--generation-steps", type=int, default=2, help="steps of the whole generation for peak memory")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="skip a case whose predicted wall time exceeds this many seconds (default 300 on CPU, "
                             "120 on CUDA); the prediction is fitted to the smaller sizes already measured")
    parser.add_argument("--attention", default=None,
                        help="diffusers attention backend (transformer.set_attention_backend): native (PyTorch SDPA, "
                             "default), flash, _flash_3, sage, ...")
    parser.add_argument("--detailer-tile", type=int, default=None,
                        help="run the Detailer Head in tiles of this many pixels (rounded up to its pooling grid)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default docs/benchmarks)")
    parser.add_argument("--hr-min-side", type=int, default=HR_MIN_SIDE,
                        help="long side from which pixel_hr runs (default 4096: patch 64 at 4K, 128 at 8K)")
    parser.add_argument("--hr-patch", type=int, default=HR_BASE_PATCH, help="pixel_hr patch at --hr-min-side (default 64)")
    parser.add_argument("--overrides", default=None,
                        help="full scale: JSON of config overrides {dit, pixel, vae, text_encoder} (for testing)")
    parser.add_argument("--in-process", action="store_true",
                        help="CPU: measure every case in this process (peak RSS reset per case) instead of a fresh "
                             "subprocess per case; faster, but memory then includes everything this process holds")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the cases and their analytic memory estimates only (no measurement, no files); "
                             "full scale builds on the meta device, so this works without a GPU")
    parser.add_argument("--memory-limit-gib", type=float, default=None,
                        help="compare estimates with this much memory instead of the device's (e.g. 48 for a 48 GB card)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        _worker_main(args.worker)
        return {}
    device = args.device or ("cuda" if args.scale == "full" else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available() and not args.dry_run:
        parser.error("--device cuda but no CUDA device is available (full scale needs a GPU; tests run it on CPU with --overrides)")
    dtype = getattr(torch, args.dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32"))
    if args.scale == "tiny":
        spec = {"scale": "tiny", "source": str(Path(args.source).resolve()), "pixel": str(Path(args.pixel).resolve())}
        _tiny_spec_paths(spec)
    else:
        spec = {"scale": "full", "overrides": json.loads(args.overrides) if args.overrides else {}}
    spec["hr_rule"] = {"min_side": args.hr_min_side, "base_patch": args.hr_patch}
    native = native_size(spec)
    sizes = []
    for text in list(args.sizes) + list(args.extra_sizes):
        size = parse_size(text, native)
        if size not in sizes:
            sizes.append(size)
    time_budget = args.time_budget if args.time_budget is not None else (300.0 if torch.device(device).type == "cpu" else 120.0)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "l2p.bench", *(argv if argv is not None else sys.argv[1:])])
    result = run_benchmark(
        args.scale, spec, sizes, device=device, dtype=dtype, timed_steps=args.steps, warmup_steps=args.warmup,
        generation_steps=args.generation_steps, time_budget=time_budget, attention=args.attention,
        detailer_tile=args.detailer_tile, threads=args.threads, command=command, isolate=not args.in_process,
        dry_run=args.dry_run,
        memory_limit=None if args.memory_limit_gib is None else int(args.memory_limit_gib * 2**30),
    )
    if args.dry_run:
        return result
    paths = write_outputs(result, Path(args.out))
    print(markdown_table(result))
    print("[bench] wrote " + ", ".join(str(p) for p in paths.values()))
    return result


if __name__ == "__main__":
    main()
