"""`L2PPipeline`: text to image in pixel space with Z-Image's text encoder and no VAE."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ZImagePipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .checkpoint import RELEASE_REPO_ID, SOURCE_REPO_ID
from .rope import resolve_scaling, rope_scaling as apply_rope_scaling
from .sizes import check_image_size
from .transformer_l2p import L2PTransformer2DModel

OUTPUT_TYPES = ("pil", "np", "pt")


class L2PPipeline(DiffusionPipeline):
    """Pixel-space flow matching: noise (B, 3, H, W) -> L2P DiT + Detailer Head -> Euler steps -> image.

    Components: `transformer` (`L2PTransformer2DModel`), `text_encoder` and `tokenizer` (Z-Image's Qwen3, or
    any model that `ZImagePipeline` can encode prompts with), `scheduler` (`FlowMatchEulerDiscreteScheduler`,
    shift 3 as the release).
    """

    model_cpu_offload_seq = "text_encoder->transformer"
    _callback_tensor_inputs = ["latents", "x0", "prompt_embeds"]

    # Prompt encoding is Z-Image's own code path (chat template, hidden_states[-2], masking), reused as is.
    encode_prompt = ZImagePipeline.encode_prompt
    _encode_prompt = ZImagePipeline._encode_prompt

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        transformer: L2PTransformer2DModel,
    ):
        super().__init__()
        self.register_modules(scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)
        # Only its [-1, 1] -> PIL/np/pt conversion is used; there is no VAE to scale for.
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    @staticmethod
    def default_scheduler() -> FlowMatchEulerDiscreteScheduler:
        """The release's sampler: flow-matching Euler with a fixed shift of 3."""
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)

    @classmethod
    def from_release(
        cls,
        checkpoint: str = RELEASE_REPO_ID,
        filename: str | None = None,
        text_encoder_source: str = SOURCE_REPO_ID,
        config: dict | str | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> "L2PPipeline":
        """Assemble the released model: a single-file checkpoint plus Z-Image's text encoder and tokenizer.

        `checkpoint` is a Hub id, a folder or a file (see `L2PTransformer2DModel.from_single_file`);
        `text_encoder_source` is a Z-Image pipeline folder or Hub id with `text_encoder/` and `tokenizer/`.
        """
        transformer = L2PTransformer2DModel.from_single_file(checkpoint, filename, torch_dtype=torch_dtype, config=config)
        text_encoder = AutoModel.from_pretrained(
            text_encoder_source, subfolder="text_encoder", dtype=torch_dtype or torch.float32
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(text_encoder_source, subfolder="tokenizer")
        return cls(cls.default_scheduler(), text_encoder, tokenizer, transformer)

    @property
    def patch_size(self) -> int:
        return self.transformer.config.patch_size

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def check_inputs(self, prompt, prompt_embeds, negative_prompt, height, width, num_inference_steps, output_type):
        check_image_size(height, width, self.patch_size)
        if prompt is None and prompt_embeds is None:
            raise ValueError("pass a prompt (or prompt_embeds)")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if prompts is not None and not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompt must be a string or a list of strings, got {prompt!r}")
        if negative_prompt is not None and not isinstance(negative_prompt, str) and prompts is not None:
            if len(negative_prompt) != len(prompts):
                raise ValueError(f"got {len(negative_prompt)} negative prompts for {len(prompts)} prompts")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int = 1024,
        width: int = 1024,
        num_inference_steps: int = 30,
        guidance_scale: float = 2.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        rope_scaling=None,
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        prompt_embeds: list[torch.Tensor] | None = None,
        negative_prompt_embeds: list[torch.Tensor] | None = None,
        max_sequence_length: int = 512,
        return_dict: bool = True,
    ):
        """Generate images.

        Args:
            prompt, negative_prompt: text (or lists of text, one per image).
            height, width: pixels; multiples of the patch size (ValueError with the nearest valid sizes).
            num_inference_steps: Euler steps (release default 30).
            guidance_scale: classifier-free guidance neg + s (pos - neg); off when <= 1 (one forward per step).
            generator: seeds the initial noise, drawn in float32 at (B, 3, H, W).
            output_type: "pil", "np" (B, H, W, 3) in [0, 1] or "pt" (B, 3, H, W) in [0, 1].
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict`, called after each step;
                `callback_on_step_end_tensor_inputs` picks from "latents" (the noisy image after the step),
                "x0" (this step's clean estimate, (B, 3, H, W) in [-1, 1], free to compute) and
                "prompt_embeds". Setting `pipe._interrupt = True` stops the loop (the current x0 is returned).
            rope_scaling: None (plain positions, extended past the RoPE table), a strategy name ("pi", "ntk",
                "yarn", "dype"), a dict of `l2p.RopeScaling` fields or a `RopeScaling`; the trained grid
                defaults to the transformer's `trained_grid`.
            latents: initial noise (B, 3, H, W) instead of drawing it.
        """
        self.check_inputs(prompt, prompt_embeds, negative_prompt, height, width, num_inference_steps, output_type)
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback tensor inputs {sorted(unknown)} are not among {self._callback_tensor_inputs}")
        device = self._execution_device
        self._interrupt = False
        do_cfg = guidance_scale > 1.0

        if isinstance(prompt, list):
            prompt = list(prompt)  # Z-Image's encoder rewrites list items in place with the chat template
        if isinstance(negative_prompt, list):
            negative_prompt = list(negative_prompt)
        if prompt_embeds is not None and prompt is None:
            if do_cfg and negative_prompt_embeds is None:
                raise ValueError("with prompt_embeds and no prompt, guidance_scale > 1 needs negative_prompt_embeds too")
            negative_prompt_embeds = negative_prompt_embeds if do_cfg else []
        else:
            prompt_embeds, negative_prompt_embeds = self.encode_prompt(
                prompt=prompt,
                device=device,
                do_classifier_free_guidance=do_cfg,
                negative_prompt=negative_prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                max_sequence_length=max_sequence_length,
            )
        repeat = num_images_per_prompt
        prompt_embeds = [embeds for embeds in prompt_embeds for _ in range(repeat)]
        negative_prompt_embeds = [embeds for embeds in negative_prompt_embeds for _ in range(repeat)]
        batch = len(prompt_embeds)

        shape = (batch, self.transformer.config.in_channels, height, width)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=torch.float32)

        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device, sigmas=get_default_z_image_sigmas(num_inference_steps)
        )
        self.scheduler.set_begin_index(0)
        sigmas = self.scheduler.sigmas.to(device)
        model_dtype = self.transformer.dtype

        scaling_context = contextlib.nullcontext()
        if rope_scaling is not None:
            scaling = resolve_scaling(rope_scaling, self.transformer.config.trained_grid)
            scaling_context = apply_rope_scaling(self.transformer, scaling)

        x0 = latents
        with scaling_context, self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                # The DiT's clock runs the other way: 0 = pure noise, 1 = clean.
                model_t = ((1000 - t) / 1000).expand(batch)
                model_input = latents.to(model_dtype)
                captions = prompt_embeds
                if do_cfg:
                    model_input = torch.cat([model_input, model_input])
                    model_t = torch.cat([model_t, model_t])
                    captions = prompt_embeds + negative_prompt_embeds
                prediction = self.transformer(model_input, model_t, captions, return_dict=False)[0].float()
                if do_cfg:
                    positive, negative = prediction.chunk(2)
                    prediction = negative + guidance_scale * (positive - negative)
                # prediction = x0 - noise, and x_t = (1 - sigma) x0 + sigma noise, so x0 = x_t + sigma * prediction;
                # clamped to the image range, as it is shown as a preview.
                x0 = (latents + sigmas[i] * prediction).clamp(-1, 1)
                latents = self.scheduler.step(-prediction, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    available = {"latents": latents, "x0": x0, "prompt_embeds": prompt_embeds}
                    outputs = callback_on_step_end(
                        self, i, t, {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    ) or {}
                    latents = outputs.pop("latents", latents)
                    prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                progress_bar.update()

        # After the last step sigma is 0 and latents == x0; after an interrupt, x0 is the best estimate.
        image = latents if not self.interrupt else x0
        image = self.image_processor.postprocess(image.clamp(-1, 1), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
