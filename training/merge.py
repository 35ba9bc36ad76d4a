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
import json
from pathlib import Path

import torch
from diffusers import ZImagePipeline
from safetensors.torch import save_file

from l2p import L2PPipeline, L2PTransformer2DModel

from .files import atomic_directory, atomic_path
from .train import load_trained


def merged_transformer(checkpoint: Path) -> tuple[L2PTransformer2DModel, ZImagePipeline, set[str]]:
    """The pixel model with the run's trained subset laid over it, its source, and the trained tensor names."""
    meta = json.loads((checkpoint / "state.json").read_text())
    model_config = meta["config"]["model"]
    if model_config["kind"] != "pixel":
        raise ValueError(f"{checkpoint} is a {model_config['kind']} run; merge is for pixel (transfer) runs")
    source = ZImagePipeline.from_pretrained(model_config["source"], dtype=torch.float32)
    model = L2PTransformer2DModel.from_source(
        source.transformer, patch_size=model_config["patch_size"],
        detailer_channels=model_config["detailer_channels"], trained_grid=model_config["trained_grid"],
    )
    trained = load_trained(model, checkpoint)
    return model.eval(), source, trained


def release_state_dict(model: L2PTransformer2DModel, frozen: set[str], release_dtypes: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        keep_fp32 = not release_dtypes or key in frozen
        state[key] = tensor.detach().to(torch.float32 if keep_fp32 else torch.bfloat16).contiguous()
    return state


def merge(checkpoint: str | Path, file: str | Path | None, pipeline: str | Path | None, release_dtypes: bool = False) -> None:
    checkpoint = Path(checkpoint)
    model, source, trained = merged_transformer(checkpoint)
    if file is not None:
        frozen = set(model.state_dict()) - trained
        with atomic_path(file) as staging:
            save_file(release_state_dict(model, frozen, release_dtypes), str(staging), metadata={"format": "pt"})
    if pipeline is not None:
        pipe = L2PPipeline(L2PPipeline.default_scheduler(), source.text_encoder, source.tokenizer, model)
        with atomic_directory(pipeline) as staging:
            pipe.save_pretrained(staging)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint-* folder of a pixel training run")
    parser.add_argument("--file", help="write the release-layout single file here")
    parser.add_argument("--pipeline", help="write an L2PPipeline folder here")
    parser.add_argument("--release-dtypes", action="store_true", help="frozen blocks fp32, the rest bf16")
    args = parser.parse_args(argv)
    if not (args.file or args.pipeline):
        parser.error("name --file, --pipeline or both")
    merge(args.checkpoint, args.file, args.pipeline, args.release_dtypes)


if __name__ == "__main__":
    main()
