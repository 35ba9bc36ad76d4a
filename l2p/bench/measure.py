"""Measuring one case, and estimating its memory before it runs.

For one pipeline at one size: the peak memory of a whole generation (weights included), text encoding time,
the time of one denoising step (median of timed calls after warm-ups) and its FLOPs (counted with
`torch.utils.flop_counter` on one real step, attention included), and the source's VAE decode. Before a case
runs, `analytic_peak_memory` says whether it would fit.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from ..device import memory_in_use, peak_memory, reset_peak_memory, synchronize, weight_bytes
from ..latents import destandardise_latents
from ..sizes import pixels_per_token, token_count
from .cases import PROMPT

CAPTION_TOKENS = 32  # real caption tokens the DiT sees (the prompt plus chat template), padded to 32
FLOPS_METHOD = "torch.utils.flop_counter, one real step (attention included)"


def timed(fn, device) -> float:
    """Seconds `fn()` takes on `device`, its queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


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
        synchronize(device)
        repeats = 4

        def products():
            for _ in range(repeats):
                torch.mm(a, b)

        for _ in range(3):
            best = max(best, 2 * n**3 * repeats / timed(products, device))
        if time.perf_counter() > deadline:
            break
    return best


# -- the "does not fit" guard -------------------------------------------------------------------------------------
def analytic_peak_memory(pipe, pipeline: str, width: int, height: int, efficient_attention: bool = True) -> dict:
    """Estimated peak bytes of one batch-1 generation: weights + the largest phase's activations.

    Activations: the DiT's per-block working set (residual, q/k/v, FFN hidden: S (6 dim + 3 ffn) values for
    S tokens, plus heads S^2 scores when attention is not memory-efficient), the Detailer Head's skips and
    outer-level working set (per tile when tiled), the VAE decoder's largest level (three tensors of its
    widest channel count at that resolution), the text encoder's hidden states, and the pipeline's
    full-resolution float32 buffers (latents, prediction, x0, output image).
    """
    transformer = pipe.transformer
    weights = weight_bytes(*(getattr(pipe, name, None) for name in ("text_encoder", "transformer", "vae")))
    item = next(transformer.parameters()).element_size()
    pixels = width * height
    dim, heads = transformer.config.dim, transformer.config.n_heads
    ffn = transformer.layers[0].feed_forward.w1.out_features
    tokens = token_count(width, height, pixels_per_token(pipe))
    if pipeline == "source":
        factor = pipe.vae_scale_factor
        latent_elems = transformer.config.in_channels * pixels // factor**2
        buffers = 6 * latent_elems * 4 + 3 * pixels * (item + 8)  # latents etc.; decoded image and its float copies
    else:
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


# -- FLOPs --------------------------------------------------------------------------------------------------------
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


# -- one case -----------------------------------------------------------------------------------------------------
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
    record["pixels_per_token"] = pixels_per_token(pipe)
    if pipeline == "source":
        record["patch_size"] = transformer.config.all_patch_size[0]
    else:
        record["patch_size"] = transformer.config.patch_size
        record["detailer_channels"] = list(transformer.config.detailer_channels)
        record["detailer_tile"] = transformer.local_decoder.tile_size
    record["tokens"] = token_count(width, height, record["pixels_per_token"])

    with torch.inference_mode():
        # 1. A whole generation: peak memory (weights included) and wall time.
        record["memory_before_generation_bytes"] = int(memory_in_use(device))
        reset_peak_memory(device)
        record["generation_steps"] = generation_steps
        record["generation_s"] = timed(
            lambda: pipe(PROMPT, height=height, width=width, num_inference_steps=generation_steps, guidance_scale=1.0,
                         output_type="pt"),
            device,
        )
        record["peak_memory_bytes"] = int(peak_memory(device))

        # 2. Text encoding (one prompt, no negative).
        encode = lambda: pipe.encode_prompt(PROMPT, device=device, do_classifier_free_guidance=False)  # noqa: E731
        prompt_embeds, _ = encode()
        record["text_encode_s"] = statistics.median(timed(encode, device) for _ in range(max(1, timed_steps)))
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
        times = [timed(step, device) for _ in range(max(1, timed_steps))]
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
            latents = destandardise_latents(vae, latents)
            decode = lambda: vae.decode(latents, return_dict=False)  # noqa: E731
            if flops:
                record["vae_decode_flops"] = count_flops(decode)
            else:
                decode()
            record["vae_decode_s"] = statistics.median(timed(decode, device) for _ in range(max(1, timed_steps)))
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
