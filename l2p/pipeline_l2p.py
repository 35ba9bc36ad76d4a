"""`L2PPipeline`: text to image in pixel space with Z-Image's text encoder and no VAE."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from typing import Callable

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ZImagePipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import ZImageLoraLoaderMixin
from diffusers.models.attention_dispatch import attention_backend
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .checkpoint import RELEASE_REPO_ID, SOURCE_REPO_ID
from .hub import MODEL_CARD_FILE, model_card
from .lora import adapted_module, split_by_source_blocks
from .rope import resolve_scaling, rope_scaling as apply_rope_scaling
from .sizes import check_image_size
from .transformer_l2p import L2PTransformer2DModel

OUTPUT_TYPES = ("pil", "np", "pt")
# What `joint_attention_kwargs` may hold: the LoRA weight (as Z-Image) and an attention backend for this call.
JOINT_ATTENTION_KEYS = ("scale", "attention_backend")
# The package whose classes saved folders name (`["l2p", "L2PTransformer2DModel"]` in model_index.json).
PACKAGE = __name__.split(".")[0]


class L2PPipeline(DiffusionPipeline, ZImageLoraLoaderMixin):
    """Pixel-space flow matching: noise (B, 3, H, W) -> L2P DiT + Detailer Head -> Euler steps -> image.

    Components: `transformer` (`L2PTransformer2DModel`), `text_encoder` and `tokenizer` (Z-Image's Qwen3, or
    any model that `ZImagePipeline` can encode prompts with), `scheduler` (`FlowMatchEulerDiscreteScheduler`,
    shift 3 as the release).

    LoRAs of the latent Z-Image load with `load_lora_weights` (diffusers' format); see there which of their
    adapters apply. `unload_lora_weights`, `fuse_lora`, `set_adapters` are diffusers' own.
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

    def register_modules(self, **modules):
        super().register_modules(**modules)
        # diffusers records a class from outside its known libraries by its module path
        # ("l2p.transformer_l2p"); a saved folder should depend on the package, not on its file layout.
        for name, module in modules.items():
            if module is not None and type(module).__module__.split(".")[0] == PACKAGE:
                self.register_to_config(**{name: (PACKAGE, type(module).__name__)})

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
        return cls(cls.default_scheduler(), *cls.text_encoder_from(text_encoder_source, torch_dtype), transformer)

    @staticmethod
    def text_encoder_from(source: str, torch_dtype: torch.dtype | None = None):
        """(text encoder, tokenizer) of a Z-Image pipeline folder or Hub id (its `text_encoder/` and `tokenizer/`)."""
        text_encoder = AutoModel.from_pretrained(source, subfolder="text_encoder", dtype=torch_dtype or torch.float32).eval()
        return text_encoder, AutoTokenizer.from_pretrained(source, subfolder="tokenizer")

    # -- LoRA ---------------------------------------------------------------------------------------------
    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None, hotswap=False, **kwargs):
        """Load a LoRA of the latent Z-Image (diffusers' format, or the formats diffusers converts) onto the
        pixel model's source blocks (`transformer.source_blocks`), where its weights are the latent model's.

        Adapters for any other module (the retrained shallow blocks, refiners, embedders) are not applied:
        they are named in a `UserWarning` and returned, sorted. Raises ValueError when none would apply.
        Loading options (`weight_name`, `subfolder`, `local_files_only`, ...) are diffusers' own.
        """
        low_cpu_mem_usage = kwargs.pop("low_cpu_mem_usage", None)
        if isinstance(pretrained_model_name_or_path_or_dict, dict):
            pretrained_model_name_or_path_or_dict = dict(pretrained_model_name_or_path_or_dict)
        state_dict, metadata = self.lora_state_dict(pretrained_model_name_or_path_or_dict, return_lora_metadata=True, **kwargs)
        if not all("lora" in key for key in state_dict):
            raise ValueError("not a LoRA checkpoint: expected keys with lora_A / lora_B (diffusers' LoRA format)")
        blocks = self.transformer.source_blocks
        kept, skipped = split_by_source_blocks(state_dict, blocks)
        if not blocks:
            raise ValueError("this pixel model has no source blocks (all its blocks were trained for pixels, "
                             "config n_shallow): a latent model's LoRA applies nowhere in it")
        if not kept:
            raise ValueError(
                f"none of this LoRA's {len(skipped)} adapted modules is in the pixel model's source blocks "
                f"(layers {blocks.start}-{blocks.stop - 1}); nothing of it applies to the pixel model"
            )
        if skipped:
            warnings.warn(
                f"LoRA adapters on {len(skipped)} modules retrained for pixels were skipped (they were trained "
                f"for the latent model's weights there): {', '.join(skipped)}",
                stacklevel=2,
            )
        targets = f"{self.transformer_name}.target_modules"
        if metadata and targets in metadata:
            # Only the modules kept: PEFT would otherwise wrap every module the config names, skipped ones too.
            metadata = {**metadata, targets: sorted({adapted_module(key) for key in kept})}
        options = {} if low_cpu_mem_usage is None else {"low_cpu_mem_usage": low_cpu_mem_usage}
        self.load_lora_into_transformer(
            kept, transformer=self.transformer, adapter_name=adapter_name, metadata=metadata, _pipeline=self,
            hotswap=hotswap, **options,
        )
        return skipped

    # -- Hub --------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, base_model: str | None = None, repo_id: str | None = None,
                        training: str | None = None, **kwargs):
        """diffusers' folder (model_index.json and one subfolder per component) plus a model card (README.md:
        what it is, how to load it from `repo_id` (default: the folder), `base_model` when given, `training`
        (markdown) when given) unless the folder already has one."""
        super().save_pretrained(save_directory, **kwargs)
        card = os.path.join(save_directory, MODEL_CARD_FILE)
        if not os.path.exists(card):
            model_card(self, repo_id or str(save_directory), base_model, training).save(card)

    def push_to_hub(self, repo_id: str, base_model: str | None = None, commit_message: str | None = None,
                    private: bool | None = None, token: str | None = None, create_pr: bool = False):
        """Save this pipeline with its model card and upload it to the Hub repository `repo_id` (created if
        missing); returns the commit URL. Loading it back needs the l2p package installed, never `trust_remote_code`."""
        from huggingface_hub import create_repo, upload_folder

        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, base_model=base_model, repo_id=repo_id)
            return upload_folder(
                repo_id=repo_id, folder_path=folder, token=token, create_pr=create_pr,
                commit_message=commit_message or "Upload L2PPipeline",
            )

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
        sigmas: list[float] | None = None,
        shift: float | None = None,
        cfg_normalization: float | bool = False,
        cfg_truncation: float = 1.0,
        cfg_start: float = 0.0,
        joint_attention_kwargs: dict | None = None,
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
            rope_scaling: positions past the trained grid (`l2p.rope`). None: plain positions, extended past
                the RoPE table; a strategy name ("pi", "ntk", "yarn", "dype"); or a dict of `l2p.RopeScaling`
                fields / a `RopeScaling` to set its parameters too: `trained_grid` (tokens per axis the
                model was trained at; default the transformer's), YaRN's `beta_fast` and `beta_slow` (the
                ramp between extrapolated and interpolated frequencies, in rotations over the trained grid;
                32 and 1), DyPE's `dype_lambda_s` and `dype_lambda_t` (scale and exponent of the
                time-dependent exponent k = lambda_s * sigma ** lambda_t; 2 and 2). E.g.
                `rope_scaling={"strategy": "dype", "dype_lambda_s": 1.5}`.
            num_images_per_prompt: images for each prompt (each from its own noise).
            latents: initial noise (B, 3, H, W) instead of drawing it.
            prompt_embeds, negative_prompt_embeds: caption features (lists of (L_i, dim)) instead of text.
            max_sequence_length: prompts are cut to this many tokens (Z-Image's 512).
            sigmas: the noise levels before the release's shift, from 1 down (default Z-Image's linear
                schedule `get_default_z_image_sigmas(num_inference_steps)`); their count sets the step count.
            shift: the scheduler's timestep shift for this call (the release samples with 3; the paper found 4
                best at 4K); None keeps the scheduler's.
            cfg_normalization: as Z-Image's: when > 0, each guided prediction's norm is capped at this many
                times the conditional prediction's (True = 1).
            cfg_truncation: as Z-Image's: guidance is switched off (conditional prediction only, one forward)
                at steps whose normalised time (1 - t/1000, 0 = noise, 1 = clean) exceeds it; 1 = never.
            cfg_start: guidance is switched off at steps whose normalised time is below it, the noisiest ones
                (a guidance interval, Kynkäänniemi et al. 2024); 0 = guided from the first step. The toy pixel
                model's sampling.json sets it: guided at its first steps it draws empty canvases (docs/results.md).
            joint_attention_kwargs: `scale` (the weight of loaded LoRAs, default 1) and `attention_backend`
                (a name from `diffusers.models.attention_dispatch.AttentionBackendName`, e.g. "native",
                "_native_math", "flash", used for this call).
        """
        self.check_inputs(prompt, prompt_embeds, negative_prompt, height, width, num_inference_steps, output_type)
        if not 0 <= cfg_start <= 1:
            raise ValueError(f"cfg_start must be a normalised time in [0, 1], got {cfg_start!r}")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback tensor inputs {sorted(unknown)} are not among {self._callback_tensor_inputs}")
        attention = dict(joint_attention_kwargs or {})
        unknown = set(attention) - set(JOINT_ATTENTION_KEYS)
        if unknown:
            raise ValueError(f"joint_attention_kwargs keys {sorted(unknown)} are not among {list(JOINT_ATTENTION_KEYS)}")
        backend = attention.pop("attention_backend", None)
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

        # A shift for this call only: the pipeline's own scheduler keeps its configuration.
        scheduler = self.scheduler
        if shift is not None:
            if not shift > 0:
                raise ValueError(f"shift must be a positive number, got {shift!r}")
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config, shift=float(shift))
        if sigmas is None:
            sigmas = get_default_z_image_sigmas(num_inference_steps)
        elif not (len(sigmas) > 0 and all(0 < s <= 1 for s in sigmas) and list(sigmas) == sorted(sigmas, reverse=True)):
            raise ValueError(f"sigmas must be noise levels in (0, 1], from the highest down; got {list(sigmas)!r}")
        timesteps, num_inference_steps = retrieve_timesteps(scheduler, None, device, sigmas=list(sigmas))
        scheduler.set_begin_index(0)
        sigmas = scheduler.sigmas.to(device)
        model_dtype = self.transformer.dtype

        contexts = contextlib.ExitStack()
        if rope_scaling is not None:
            scaling = resolve_scaling(rope_scaling, self.transformer.config.trained_grid)
            contexts.enter_context(apply_rope_scaling(self.transformer, scaling))
        if backend is not None:
            contexts.enter_context(attention_backend(backend))

        x0 = latents
        with contexts, self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                # The DiT's clock runs the other way: 0 = pure noise, 1 = clean.
                model_t = ((1000 - t) / 1000).expand(batch)
                guided = do_cfg and cfg_start <= float(model_t[0]) <= cfg_truncation
                model_input = latents.to(model_dtype)
                captions = prompt_embeds
                if guided:
                    model_input = torch.cat([model_input, model_input])
                    model_t = torch.cat([model_t, model_t])
                    captions = prompt_embeds + negative_prompt_embeds
                prediction = self.transformer(
                    model_input, model_t, captions, return_dict=False, joint_attention_kwargs=attention
                )[0].float()
                if guided:
                    positive, negative = prediction.chunk(2)
                    prediction = negative + guidance_scale * (positive - negative)
                    if cfg_normalization and float(cfg_normalization) > 0:
                        prediction = cap_norm(prediction, positive, float(cfg_normalization))
                # prediction = x0 - noise, and x_t = (1 - sigma) x0 + sigma noise, so x0 = x_t + sigma * prediction;
                # clamped to the image range, as it is shown as a preview.
                x0 = (latents + sigmas[i] * prediction).clamp(-1, 1)
                latents = scheduler.step(-prediction, t, latents, return_dict=False)[0]

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


def cap_norm(guided: torch.Tensor, positive: torch.Tensor, factor: float) -> torch.Tensor:
    """Z-Image's CFG normalisation: scale each image's guided prediction down to at most `factor` times the
    norm of its conditional prediction."""
    dims = tuple(range(1, guided.dim()))
    limit = factor * torch.linalg.vector_norm(positive, dim=dims, keepdim=True)
    norm = torch.linalg.vector_norm(guided, dim=dims, keepdim=True)
    return torch.where(norm > limit, guided * (limit / norm), guided)
