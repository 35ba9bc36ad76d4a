"""`L2PTransformer2DModel`: Z-Image's DiT fed with RGB patches and finished by the Detailer Head.

Built by subclassing diffusers' `ZImageTransformer2DModel`, so its blocks, refiners, embedders, padding,
attention dispatch and gradient checkpointing are diffusers' own. What changes (reference section 3):
- the patch embedder reads RGB: `all_x_embedder["{p}-1"]` = Linear(3 p^2 -> dim), p from the config;
- there is no final layer and no unpatchify: the real (unpadded) image tokens out of the last block become
  a (dim, H/p, W/p) feature map for the Detailer Head (`local_decoder`), which predicts every pixel;
- RoPE is computed on the fly (`l2p.rope.RotaryPositions`), so grids past Z-Image's table work.

Conventions as in the release: pixels in [-1, 1]; t in [0, 1] with 1 = clean; the output is x0 - noise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import ModelMixin, ZImageTransformer2DModel  # noqa: F401 (see below)
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.utils import apply_lora_scale

from .checkpoint import check_state_dict, read_state_dict, resolve_checkpoint_file
from .detailer_head import DetailerHead
from .rope import RotaryPositions
from .sizes import check_image_size, native_side

# `DiffusionPipeline.from_pretrained` finds how to load a component defined outside diffusers by looking
# up its base classes (`ModelMixin`) in the component's library (`l2p`, which re-exports it from here; folders
# saved before the package existed name this module instead).
__all__ = ["L2PTransformer2DModel", "ModelMixin"]

# Config entries the pixel model shares with its latent source; everything else is pixel-specific.
SOURCE_CONFIG_KEYS = (
    "dim",
    "n_layers",
    "n_refiner_layers",
    "n_heads",
    "n_kv_heads",
    "norm_eps",
    "qk_norm",
    "cap_feat_dim",
    "rope_theta",
    "t_scale",
    "axes_dims",
    "axes_lens",
)


# What the Detailer Head's output means under each prediction_type (the model always returns x0 - noise).
PREDICTION_TYPES = {"velocity": "x0 - noise, the velocity", "sample": "x0",
                    "blend": "x0 - sigma * noise (the velocity at sigma 1, x0 at 0)"}
# With prediction_type "sample", (x0 - x_t) / sigma divides by at least this: near sigma 0 an error in x0 would
# otherwise be amplified without bound (JiT clips the same denominator at 0.05).
SAMPLE_PREDICTION_MIN_SIGMA = 0.05


class L2PTransformer2DModel(ZImageTransformer2DModel):
    """The L2P pixel-space DiT. Defaults are the release's full 1K model (545 tensors, 6.17B parameters).

    Args beyond Z-Image's:
        patch_size: pixels per token side (16 for 1K; 64 at 4K and 128 at 8K in the high-resolution release).
        in_channels: image channels (3).
        detailer_channels: the Detailer Head's encoder widths, outermost first.
        trained_grid: tokens per axis the model was trained at (64 for the 1K release); the reference point
            for RoPE extrapolation.
        n_shallow: blocks at each end of `layers` that the transfer retrained (5 of 30 in the release); the
            ones between are the source's own weights, where the source's LoRAs apply (`source_blocks`).
            A model trained from scratch has none: n_shallow >= n_layers / 2.
        prediction_type: what the Detailer Head's output means. "velocity" (the release): it is the model's
            output, x0 - noise. "sample": it is the clean image x0, and the model returns (x0 - x_t) / sigma,
            the same x0 - noise (so the loss, the sampler and the pipeline are unchanged). JiT (Li & He 2025,
            "Back to Basics") found it the better choice where the network is narrower than a patch, as the toy's
            width-256 DiT is against a 16-px patch's 768 values; tried at toy scale, it removed the grain but
            blurred the objects away, so the embedded model keeps velocity (docs/results.md).
            "blend": it is x0 - sigma * noise, the velocity at sigma 1 and x0 at sigma 0, and the model returns
            ((output + x_t) / (2 - sigma) - x_t) / sigma, again x0 - noise. Since x0 - sigma * noise = (2 - sigma) x0
            - x_t, the head passes x_t through with a gain of -1 at every sigma, where velocity asks for -1/sigma
            (the toy head's grain at low noise) and x0 for a gain falling from 1 to 0 (docs/results.md, "Where the
            grain comes from").
        noise_pooling: k > 1 for a high-resolution variant grown k times from a 1x model (`l2p.high_resolution`),
            whose patch embedder starts as the 1x one reading the patch averaged k x k. Averaging keeps the image
            and divides independent pixel noise by k, so the DiT works at the 1x model's lower noise level
            sigma' = sigma / (k - (k - 1) sigma) (`dit_noise_level`): it is conditioned on sigma', and the
            embedder reads x_t scaled by (1 - sigma') / (1 - sigma), which makes the averaged patch exactly the 1x
            model's input at sigma'. The Detailer Head still sees x_t itself. 1: off (every 1x model).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        patch_size: int = 16,
        in_channels: int = 3,
        dim: int = 3840,
        n_layers: int = 30,
        n_refiner_layers: int = 2,
        n_heads: int = 30,
        n_kv_heads: int = 30,
        norm_eps: float = 1e-5,
        qk_norm: bool = True,
        cap_feat_dim: int = 2560,
        rope_theta: float = 256.0,
        t_scale: float = 1000.0,
        axes_dims: tuple[int, ...] = (32, 48, 48),
        axes_lens: tuple[int, ...] = (1024, 512, 512),
        detailer_channels: tuple[int, ...] = (64, 128, 256, 512),
        trained_grid: int = 64,
        n_shallow: int = 5,
        prediction_type: str = "velocity",
        noise_pooling: int = 1,
    ):
        if not (isinstance(noise_pooling, int) and noise_pooling >= 1):
            raise ValueError(f"noise_pooling must be an integer >= 1, got {noise_pooling!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} is not one of {tuple(PREDICTION_TYPES)}")
        if patch_size % 2 ** len(detailer_channels):
            raise ValueError(
                f"patch_size {patch_size} must be a multiple of 2**len(detailer_channels) = "
                f"{2 ** len(detailer_channels)}, so that every valid image size pools down evenly in the head"
            )
        # Build Z-Image's modules without its own config registration (ours, above, is the config).
        ZImageTransformer2DModel.__init__.__wrapped__(
            self,
            all_patch_size=(patch_size,),
            all_f_patch_size=(1,),
            in_channels=in_channels,
            dim=dim,
            n_layers=n_layers,
            n_refiner_layers=n_refiner_layers,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            norm_eps=norm_eps,
            qk_norm=qk_norm,
            cap_feat_dim=cap_feat_dim,
            rope_theta=rope_theta,
            t_scale=t_scale,
            axes_dims=list(axes_dims),
            axes_lens=list(axes_lens),
        )
        del self.all_final_layer  # pixels come out of the Detailer Head instead
        self.local_decoder = DetailerHead(dim, detailer_channels, in_channels=in_channels, out_channels=in_channels)
        self.rope_embedder = RotaryPositions(rope_theta, axes_dims)

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_source(cls, source_transformer: ZImageTransformer2DModel, patch_size: int = 16, **head_config):
        """A pixel model initialised from a latent Z-Image DiT, as the release does.

        Every source tensor whose name and shape match is copied exactly; the RGB embedder and the Detailer
        Head keep their fresh default initialisation. The model takes the source's device and dtype.
        `head_config` sets other config values (`detailer_channels`, `trained_grid`).
        """
        config = {key: source_transformer.config[key] for key in SOURCE_CONFIG_KEYS}
        model = cls(patch_size=patch_size, **config, **head_config)
        reference = next(source_transformer.parameters())
        model.to(reference.device)
        if reference.dtype != model.dtype:
            model.to(reference.dtype)
        own = model.state_dict()
        shared = {
            key: tensor
            for key, tensor in source_transformer.state_dict().items()
            if key in own and own[key].shape == tensor.shape
        }
        model.load_state_dict(shared, strict=False)
        return model

    @classmethod
    def from_single_file(
        cls,
        path_or_hub_id: str | os.PathLike,
        filename: str | None = None,
        torch_dtype: torch.dtype | None = None,
        config: dict | str | os.PathLike | None = None,
    ):
        """Load a checkpoint in the release's single-file layout (e.g. `model-1k-merge.safetensors`).

        `path_or_hub_id` is a file, a folder holding `filename`, or a Hub repository id. `config` is a dict
        or a folder with config.json, for checkpoints of another size than the release's full 1K model.
        Tensors are cast to `torch_dtype` (float32 when omitted, as in diffusers).
        """
        path = resolve_checkpoint_file(path_or_hub_id, filename)
        with init_empty_weights():
            model = cls.from_config(_read_config(config))
        state = read_state_dict(path)
        check_state_dict(state, model.state_dict(), source=str(path))
        dtype = torch_dtype or torch.float32
        model.load_state_dict({key: tensor.to(dtype) for key, tensor in state.items()}, strict=True, assign=True)
        return model.eval()

    @property
    def source_blocks(self) -> range:
        """Indices of the blocks in `layers` that are the latent source's own, frozen in the transfer."""
        return range(self.config.n_shallow, self.config.n_layers - self.config.n_shallow)

    @property
    def native_side(self) -> int:
        """The side in pixels of the square images the model was trained at (patch x trained grid): sizes up to
        it are native, larger ones zero-shot."""
        return native_side(self.config.patch_size, self.config.trained_grid)

    # -- memory ---------------------------------------------------------------------------------------
    def enable_detailer_tiling(self, tile_size: int | None = 2048):
        """Run the Detailer Head in overlapping tiles of `tile_size` pixels per side (a multiple of its pooling
        grid, 2**len(detailer_channels)); the result equals the untiled one within float tolerance. None: off."""
        self.local_decoder.enable_tiling(tile_size)

    def disable_detailer_tiling(self):
        self.local_decoder.disable_tiling()

    # -- forward ----------------------------------------------------------------------------------------
    def _run_block(self, block, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    @apply_lora_scale("joint_attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: list[torch.Tensor],
        return_dict: bool = True,
        joint_attention_kwargs: dict | None = None,
    ):
        """Predict x0 - noise for a batch of noisy images.

        Args:
            hidden_states: (B, C, H, W) noisy pixels x_t in [-1, 1]; H and W multiples of the patch size.
            timestep: (B,) in [0, 1], 1 = clean.
            encoder_hidden_states: B caption feature tensors (L_i, cap_feat_dim), lengths may differ.
            joint_attention_kwargs: as Z-Image's: only `scale` is read, the weight of loaded LoRAs (taken out
                by the decorator, which scales the PEFT layers for this call).
        """
        batch, _, height, width = hidden_states.shape
        patch = self.config.patch_size
        check_image_size(height, width, patch)
        if len(encoder_hidden_states) != batch:
            raise ValueError(f"got {len(encoder_hidden_states)} caption feature tensors for a batch of {batch} images")
        device = hidden_states.device

        dit_input, dit_timestep = hidden_states, timestep
        if self.config.noise_pooling > 1:
            dit_sigma, scale = dit_noise_level(1 - timestep, self.config.noise_pooling)
            dit_input, dit_timestep = hidden_states * scale.to(hidden_states.dtype).view(-1, 1, 1, 1), 1 - dit_sigma
        adaln_input = self.t_embedder(dit_timestep * self.t_scale).type_as(hidden_states)
        images = list(dit_input.unsqueeze(2).unbind(0))  # Z-Image's patchify takes (C, F, H, W) items
        x, captions, _, x_pos_ids, cap_pos_ids, x_pad_mask, cap_pad_mask = self.patchify_and_embed(
            images, list(encoder_hidden_states), patch, 1
        )

        x_seqlens = [len(item) for item in x]
        x = self.all_x_embedder[f"{patch}-1"](torch.cat(x, dim=0))
        x, x_freqs, x_mask, _, _ = self._prepare_sequence(
            list(x.split(x_seqlens, dim=0)), x_pos_ids, x_pad_mask, self.x_pad_token, None, device
        )
        for block in self.noise_refiner:
            x = self._run_block(block, x, x_mask, x_freqs, adaln_input)

        cap_seqlens = [len(item) for item in captions]
        captions = self.cap_embedder(torch.cat(captions, dim=0))
        captions, cap_freqs, cap_mask, _, _ = self._prepare_sequence(
            list(captions.split(cap_seqlens, dim=0)), cap_pos_ids, cap_pad_mask, self.cap_pad_token, None, device
        )
        for block in self.context_refiner:
            captions = self._run_block(block, captions, cap_mask, cap_freqs)

        unified, unified_freqs, unified_mask, _ = self._build_unified_sequence(
            x, x_freqs, x_seqlens, None, captions, cap_freqs, cap_seqlens, None, None, None, None, None, False, device
        )
        for block in self.layers:
            unified = self._run_block(block, unified, unified_mask, unified_freqs, adaln_input)

        # Each item's sequence starts with its real image tokens in row-major order; padding follows them,
        # so slicing the real count (not the padded one) works for any token count.
        grid_h, grid_w = height // patch, width // patch
        features = unified[:, : grid_h * grid_w].reshape(batch, grid_h, grid_w, -1).permute(0, 3, 1, 2)
        sample = self.local_decoder(hidden_states, features)
        if self.config.prediction_type != "velocity":
            sigma = (1 - timestep).to(sample.dtype).view(-1, 1, 1, 1)
            clean = sample if self.config.prediction_type == "sample" else (sample + hidden_states) / (2 - sigma)
            sample = (clean - hidden_states) / sigma.clamp(min=SAMPLE_PREDICTION_MIN_SIGMA)
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)


def dit_noise_level(sigma: torch.Tensor, noise_pooling: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For pixel noise level `sigma` and a patch embedder that averages `noise_pooling` (k) pixels per side: the
    noise level sigma' of the averaged patch once its image part is scaled back to 1 - sigma', and that scale.
    (1 - s) x + s n averages to (1 - s) x + (s / k) n' (n' unit Gaussian again); the noise-to-image ratio
    s' / (1 - s') = (s / k) / (1 - s) gives s' = s / (k - (k - 1) s), and the scale (1 - s') / (1 - s) is
    k / (k - (k - 1) s), finite at s = 1.
    It is the inverse of the timestep shift by k (s = k s' / (1 + (k - 1) s')): SD3's resolution shift, exact here."""
    denominator = noise_pooling - (noise_pooling - 1) * sigma
    return sigma / denominator, noise_pooling / denominator


def _read_config(config) -> dict:
    """The config for `from_single_file`: the release's full size when None."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return config
    folder = Path(config)
    with open(folder / "config.json" if folder.is_dir() else folder) as handle:
        return json.load(handle)
