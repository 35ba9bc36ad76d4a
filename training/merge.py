"""Merge a transfer checkpoint into a release-layout checkpoint and an `L2PPipeline` folder.

    python -m training.merge --checkpoint runs/toy/transfer/checkpoint-0002000 \\
        --file runs/toy/l2p-merge.safetensors --pipeline assets/tiny-l2p

The pixel model is rebuilt from the source exactly as training built it (`from_source` with the run's
config), the trained subset is laid over it, and the whole state dict is written as one safetensors file
in the release's layout (the core loader reads it back) plus a pipeline folder that reuses the source's
text encoder and tokenizer. With `--release-dtypes`, frozen middle blocks are stored fp32 and the rest bf16,
as the release stores them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
from safetensors.torch import save_file

from l2p import L2PPipeline, L2PTransformer2DModel
from l2p.sampling import RELEASE_SAMPLING, SamplingSettings, l2p_guidance, read_sampling, write_sampling

from .files import atomic_directory, atomic_path
from .checkpoints import load_trained, run_config
from .train import retrained_blocks


def merged_transformer(checkpoint: Path) -> tuple[L2PTransformer2DModel, ZImagePipeline, set[str]]:
    """The pixel model with the run's trained subset laid over it, its source, and the trained tensor names."""
    model_config = run_config(checkpoint)["model"]
    if model_config["kind"] != "pixel":
        raise ValueError(f"{checkpoint} is a {model_config['kind']} run; merge is for pixel (transfer) runs")
    source = ZImagePipeline.from_pretrained(model_config["source"], dtype=torch.float32)
    model = L2PTransformer2DModel.from_source(
        source.transformer, patch_size=model_config["patch_size"],
        detailer_channels=model_config["detailer_channels"], trained_grid=model_config["trained_grid"],
        n_shallow=retrained_blocks(model_config["init"], model_config["n_shallow"], source.transformer),
    )
    trained = load_trained(model, checkpoint)
    return model.eval(), source, trained


def release_state_dict(model: L2PTransformer2DModel, frozen: set[str], release_dtypes: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        keep_fp32 = not release_dtypes or key in frozen
        state[key] = tensor.detach().to(torch.float32 if keep_fp32 else torch.bfloat16).contiguous()
    return state


def pixel_sampling(model: L2PTransformer2DModel, source_folder: str, steps: int | None = None,
                   guidance: float | None = None) -> SamplingSettings:
    """The merged pipeline's `sampling.json`: its trained size (patch x trained grid), and the source's steps and
    guidance strength (converted to L2P's convention) unless given; the release's 30 and 2.0 for a source without one."""
    side = model.native_side
    own = read_sampling(source_folder) if Path(source_folder).is_dir() else None
    default_steps, default_guidance = ((own.num_inference_steps, l2p_guidance(own.guidance_scale)) if own
                                       else (RELEASE_SAMPLING.num_inference_steps, RELEASE_SAMPLING.guidance_scale))
    return SamplingSettings(side, side, steps or default_steps, default_guidance if guidance is None else guidance)


def merge(checkpoint: str | Path, file: str | Path | None, pipeline: str | Path | None, release_dtypes: bool = False,
          steps: int | None = None, guidance: float | None = None, storage_dtype: torch.dtype = torch.float32) -> None:
    """Write the release-layout file and/or the pipeline folder (with its sampling.json; its scheduler's shift
    is the one the run trained with). The folder's transformer is stored in `storage_dtype`; diffusers loads
    it back as float32 unless asked otherwise."""
    checkpoint = Path(checkpoint)
    model, source, trained = merged_transformer(checkpoint)
    if file is not None:
        frozen = set(model.state_dict()) - trained
        with atomic_path(file) as staging:
            save_file(release_state_dict(model, frozen, release_dtypes), str(staging), metadata={"format": "pt"})
    if pipeline is not None:
        config = run_config(checkpoint)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(L2PPipeline.default_scheduler().config, shift=config["flow"]["shift"])
        pipe = L2PPipeline(scheduler, source.text_encoder, source.tokenizer, model.to(storage_dtype))
        sampling = pixel_sampling(model, config["model"]["source"], steps, guidance)
        with atomic_directory(pipeline) as staging:
            pipe.save_pretrained(staging)
            write_sampling(staging, sampling)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint-* folder of a pixel training run")
    parser.add_argument("--file", help="write the release-layout single file here")
    parser.add_argument("--pipeline", help="write an L2PPipeline folder here")
    parser.add_argument("--release-dtypes", action="store_true", help="frozen blocks fp32, the rest bf16")
    parser.add_argument("--steps", type=int, help="sampling.json's steps (default: the source's)")
    parser.add_argument("--guidance", type=float, help="sampling.json's guidance, L2P's convention (default: the source's strength)")
    args = parser.parse_args(argv)
    if not (args.file or args.pipeline):
        parser.error("name --file, --pipeline or both")
    merge(args.checkpoint, args.file, args.pipeline, args.release_dtypes, args.steps, args.guidance)


if __name__ == "__main__":
    main()
