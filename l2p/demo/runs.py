"""The runs behind the Generate and Compare buttons, for a planned request: the pipeline calls, their progress
(paced), stopping within a step (between DiT blocks and Detailer Head levels), and (Compare) each stage timed
and measured. Compare at the HR model's native size (`Plan.three_way`) runs the native HR model third.

Each run is `run(models, plan, request, emit, cancel, interval)`: it calls `emit` with progress as it goes and
returns its result; `l2p.demo.worker.stream` runs it on a worker thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable

import torch
from PIL import Image

from ..device import measure, weight_bytes
from ..latents import destandardise_latents
from ..rope import rope_scaling
from ..sampling import zimage_guidance
from .analysis import matching_crops, radial_power_spectrum
from .errors import Cancelled
from .metadata import tag
from .plan import seeds_of
from .results import CompareResult, GenerateResult, Preview, SourceDone

PREVIEW_SIDE = 512  # live previews are downscaled to this long side
# Progress reaches the page at most this often. Every update costs the server an image encode, a message and
# Python time that competes with the denoising loop, and the page a download; at toy speeds (~0.1 s a step)
# per-step updates made the app 40% slower than the bare pipeline (python -m l2p.bench.app_overhead).
PREVIEW_INTERVAL_S = 1.0
# Generate runs estimated under this many seconds send their progress without x0 previews: the image itself follows
# within seconds, and the previews were most of the serving's cost of a 3-s run at the toy's 128 px (2-3 of them,
# ~0.2 s; python -m l2p.bench.app_overhead).
PREVIEW_MIN_RUN_S = 5.0
CROP_SIDE = 128


class ProgressPacer:
    """Says when a run's progress is worth sending: at most once per `interval` seconds, never for the last
    step (the result follows at once), and for the first step only if it took an interval (large sizes)."""

    def __init__(self, total: int, interval: float = PREVIEW_INTERVAL_S):
        self.total, self.interval = total, interval
        self.last = time.perf_counter()

    def due(self, step: int) -> bool:
        now = time.perf_counter()
        if step >= self.total or now - self.last < self.interval:
            return False
        self.last = now
        return True


def x0_preview(x0: torch.Tensor, side: int = PREVIEW_SIDE, processor=None) -> Image.Image:
    """The first image of an x0 batch in [-1, 1] as a PIL image, downscaled to `side` on its long side.

    `processor` is the pipeline's image processor (`L2PPipeline.image_processor`), which makes the PIL image."""
    if processor is None:
        from diffusers.image_processor import VaeImageProcessor

        processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)
    image = x0[:1].float()
    height, width = image.shape[-2:]
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = torch.nn.functional.interpolate(image, size=size, mode="area")
    return processor.postprocess(image, output_type="pil")[0]


def step_callback(pipeline: str, total: int, interval: float, emit: Callable, cancel: threading.Event,
                  preview: Callable | None = None, index: int = 1, count: int = 1):
    """A pipeline's `callback_on_step_end`: stop at the end of a step once cancelled, and send paced progress
    (with `preview(x0)` as its image when given) for image `index` of the run's `count`."""
    pacer = ProgressPacer(total, interval)

    def on_step(pipe, step, timestep, tensors):
        if cancel.is_set():
            pipe._interrupt = True
        if pacer.due(step + 1):
            emit(Preview(pipeline, step + 1, total, preview(tensors["x0"]) if preview else None, index, count))
        return {}

    return on_step


@contextlib.contextmanager
def stop_points(transformer, cancel: threading.Event):
    """Raise Cancelled before the next refiner or DiT block, or Detailer Head level, once `cancel` is set, so a stop
    lands within a fraction of a step (a 2K step on a CPU is ~90 s) instead of at its end."""

    def check(module, args):
        if cancel.is_set():
            raise Cancelled()

    blocks = [*transformer.noise_refiner, *transformer.context_refiner, *transformer.layers]
    head = getattr(transformer, "local_decoder", None)  # the pixel model's; the latent DiT has none
    if head is not None:
        blocks += list(head.children())
    handles = [block.register_forward_pre_hook(check) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _or_scheduler(shift: float | None, pipe) -> float:
    """The shift a run used: its own, else the pipeline scheduler's."""
    return float(pipe.scheduler.config.shift) if shift is None else shift


def _noise(seed: int) -> torch.Generator:
    """The same seed gives the same noise in both pipelines and on every device: it is drawn on the CPU."""
    return torch.Generator("cpu").manual_seed(seed)


def _tag_pixel(image: Image.Image, models, plan, request, seed: int, pipeline: str = "pixel") -> Image.Image:
    """A pixel-model image (the 1x model's, or with `pipeline` "hr" the HR model's, run at its own scheduler's
    shift) with the settings that make it again (`l2p.demo.metadata`)."""
    rope = plan.rope[pipeline]
    hr = pipeline == "hr"
    return tag(image, prompt=request.prompt, negative_prompt=request.negative_prompt, steps=request.steps,
               guidance=request.guidance, seed=seed, width=plan.width, height=plan.height,
               model=models.hr_name if hr else models.pixel_name, rope=rope,
               shift=_or_scheduler(None, models.hr) if hr else _or_scheduler(request.shift, models.pixel),
               cfg_start=models.hr_cfg_start if hr else models.pixel_cfg_start,
               dype=(request.dype_lambda_s, request.dype_lambda_t) if rope == "dype" else None)


def generate_run(models, plan, request, emit: Callable, cancel: threading.Event, interval: float,
                 previews: bool = True) -> GenerateResult:
    """Text to image with the pixel model, its progress with previews of its x0 estimate (without them when not
    `previews`): `request.num_images` images one after another, on seeds seed, seed + 1, ... (each the image a
    one-image run on its seed makes)."""
    pixel = models.pixel
    width, height = plan.width, plan.height
    preview = (lambda x0: x0_preview(x0, processor=pixel.image_processor)) if previews else None
    seeds = seeds_of(request.seed, request.num_images)
    images = []
    start = time.perf_counter()
    for index, seed in enumerate(seeds, start=1):
        with stop_points(pixel.transformer, cancel):
            image = pixel(
                request.prompt, negative_prompt=request.negative_prompt or None, height=height, width=width,
                num_inference_steps=request.steps, guidance_scale=request.guidance, generator=_noise(seed),
                rope_scaling=request.rope_setting(plan.rope["pixel"]), shift=request.shift,
                cfg_start=models.pixel_cfg_start,
                callback_on_step_end=step_callback("pixel", request.steps, interval, emit, cancel, preview, index,
                                                   len(seeds)),
                callback_on_step_end_tensor_inputs=["x0"],
            ).images[0]
        if cancel.is_set():
            raise Cancelled()
        images.append(_tag_pixel(image, models, plan, request, seed))
    return GenerateResult(images, seeds, width, height, plan.native["pixel"], plan.rope["pixel"],
                          time.perf_counter() - start, plan.estimate)


def compare_run(models, plan, request, emit: Callable, cancel: threading.Event, interval: float) -> CompareResult:
    """The latent source, then the pixel model, on the same prompt and seed, each stage timed and measured; at the
    HR model's native size (`plan.three_way`) the native HR model third, with the pixel model's steps and guidance
    and its own scheduler's shift (the one it was tuned at; the request's shift is the 1x model's)."""
    source, pixel, device = models.source, models.pixel, models.device
    hr = models.hr if plan.three_way else None
    width, height = plan.width, plan.height
    stages = []

    def encode(pipe, owner, cfg):
        with measure(owner, "text encoding", device) as cost:
            embeds = pipe.encode_prompt(request.prompt, device=device, do_classifier_free_guidance=cfg,
                                        negative_prompt=request.negative_prompt or None)
        stages.append(cost)
        return embeds

    pixel_cfg, source_cfg = request.guidance > 1.0, request.source_guidance > 1.0
    if models.shares_text_encoder:
        source_embeds = pixel_embeds = encode(source, "shared", pixel_cfg or source_cfg)
    else:
        source_embeds = encode(source, "source", source_cfg)
        pixel_embeds = encode(pixel, "pixel", pixel_cfg)
    if hr is not None:
        # Its own text encoder, or the pixel pipeline's (then the pixel model's embeddings, encoded once).
        hr_embeds = pixel_embeds if models.hr_shares_text_encoder else encode(hr, "hr", pixel_cfg)

    # The latent source: denoise to latents, then the VAE decode, timed apart.
    with measure("source", "denoising", device) as cost, stop_points(source.transformer, cancel):
        with rope_scaling(source.transformer, plan.rope["source"], trained_grid=pixel.transformer.config.trained_grid):
            latents = source(
                prompt_embeds=source_embeds[0], negative_prompt_embeds=source_embeds[1] or None, height=height,
                width=width, num_inference_steps=request.source_steps,
                guidance_scale=zimage_guidance(request.source_guidance), generator=_noise(request.seed),
                output_type="latent",
                callback_on_step_end=step_callback("source", request.source_steps, interval, emit, cancel),
            ).images
    stages.append(cost)
    if cancel.is_set():
        raise Cancelled()
    vae = source.vae
    with measure("source", "VAE decode", device) as cost:  # as ZImagePipeline decodes
        latents = destandardise_latents(vae, latents.to(vae.dtype))
        decoded = vae.decode(latents, return_dict=False)[0]
        source_image = source.image_processor.postprocess(decoded, output_type="pil")[0]
    stages.append(cost)
    del latents, decoded
    emit(SourceDone(source_image, request.seed))

    with measure("pixel", "denoising", device) as cost, stop_points(pixel.transformer, cancel):
        # The prompt goes along with its embeddings only because Z-Image's encode_prompt (which L2PPipeline
        # reuses) needs a prompt list to pair negative embeddings with; nothing is re-encoded.
        pixel_image = pixel(
            request.prompt, prompt_embeds=pixel_embeds[0], negative_prompt_embeds=pixel_embeds[1] or None,
            height=height, width=width, num_inference_steps=request.steps, guidance_scale=request.guidance,
            generator=_noise(request.seed), rope_scaling=request.rope_setting(plan.rope["pixel"]), shift=request.shift,
            cfg_start=models.pixel_cfg_start,
            callback_on_step_end=step_callback("pixel", request.steps, interval, emit, cancel),
        ).images[0]
    stages.append(cost)
    if cancel.is_set():
        raise Cancelled()

    hr_image = None
    if hr is not None:
        with measure("hr", "denoising", device) as cost, stop_points(hr.transformer, cancel):
            hr_image = hr(
                request.prompt, prompt_embeds=hr_embeds[0], negative_prompt_embeds=hr_embeds[1] or None,
                height=height, width=width, num_inference_steps=request.steps, guidance_scale=request.guidance,
                generator=_noise(request.seed), rope_scaling=request.rope_setting(plan.rope["hr"]),
                cfg_start=models.hr_cfg_start,
                callback_on_step_end=step_callback("hr", request.steps, interval, emit, cancel),
            ).images[0]
        stages.append(cost)
        if cancel.is_set():
            raise Cancelled()
        _tag_pixel(hr_image, models, plan, request, request.seed, "hr")

    tag(source_image, prompt=request.prompt, negative_prompt=request.negative_prompt, steps=request.source_steps,
        guidance=zimage_guidance(request.source_guidance), seed=request.seed, width=width, height=height, model=models.source_name,
        rope=plan.rope["source"])
    _tag_pixel(pixel_image, models, plan, request, request.seed)
    images = {"source": source_image, "pixel": pixel_image}
    weights = {"source": weight_bytes(source.text_encoder, source.transformer, source.vae),
               "pixel": weight_bytes(pixel.text_encoder, pixel.transformer)}
    steps = {"source": request.source_steps, "pixel": request.steps}
    if hr is not None:
        images["hr"] = hr_image
        weights["hr"] = weight_bytes(hr.text_encoder, hr.transformer)
        steps["hr"] = request.steps
    box, factor, crops = matching_crops(list(images.values()), size=min(CROP_SIDE, width // 2, height // 2))
    return CompareResult(
        source_image, pixel_image, request.seed, width, height, stages, weights=weights,
        shares_text_encoder=models.shares_text_encoder, steps=steps,
        rope=dict(plan.rope), native=dict(plan.native), crop_box=box, crop_factor=factor,
        crops=dict(zip(images, crops)), spectra={name: radial_power_spectrum(image) for name, image in images.items()},
        estimates={name: plan.estimates[name] for name in images},
        hr_image=hr_image, hr_shares_text_encoder=models.hr_shares_text_encoder if hr is not None else False,
    )
