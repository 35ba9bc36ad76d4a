"""Merge a transfer checkpoint into a release-layout checkpoint and an `L2PPipeline` folder.

    python -m training.merge --checkpoint runs/toy/transfer/checkpoint-0002000 \\
        --file runs/toy/l2p-merge.safetensors --pipeline assets/tiny-l2p \\
        [--scores docs/results/tiny-l2p/scores.json] [--push-to-hub you/l2p-toy]

The pixel model is rebuilt from the source exactly as training built it (`from_source` with the run's
config), the trained subset is laid over it, and the whole state dict is written as one safetensors file
in the release's layout (the core loader reads it back) plus a pipeline folder that reuses the source's
text encoder and tokenizer. With `--release-dtypes`, frozen middle blocks are stored fp32 and the rest bf16,
as the release stores them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
from safetensors.torch import save_file

from l2p import L2PPipeline, L2PTransformer2DModel
from l2p.sampling import RELEASE_SAMPLING, SamplingSettings, l2p_guidance, read_sampling, write_sampling
from l2p.transformer_l2p import PREDICTION_TYPES

from .files import atomic_directory, atomic_path
from .checkpoints import load_trained, read_state, run_config
from .train import ModelConfig, initial_pixel_model, is_hub_id


def merged_transformer(checkpoint: Path, ema: bool | None = None) -> tuple[L2PTransformer2DModel, ZImagePipeline, set[str]]:
    """The pixel model with the run's trained subset laid over it (its EMA when it kept one, unless `ema` says
    otherwise), its source, and the trained tensor names."""
    model_config = run_config(checkpoint)["model"]
    if model_config["kind"] != "pixel":
        raise ValueError(f"{checkpoint} is a {model_config['kind']} run; merge is for pixel (transfer) runs")
    source = ZImagePipeline.from_pretrained(model_config["source"], dtype=torch.float32)
    known = {f.name for f in fields(ModelConfig)}
    model = initial_pixel_model(ModelConfig(**{k: v for k, v in model_config.items() if k in known}), source.transformer)
    trained = load_trained(model, checkpoint, ema)
    return model.eval(), source, trained


def release_state_dict(model: L2PTransformer2DModel, frozen: set[str], release_dtypes: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        keep_fp32 = not release_dtypes or key in frozen
        state[key] = tensor.detach().to(torch.float32 if keep_fp32 else torch.bfloat16).contiguous()
    return state


def pixel_sampling(model: L2PTransformer2DModel, source_folder: str, steps: int | None = None,
                   guidance: float | None = None, cfg_start: float = 0.0) -> SamplingSettings:
    """The merged pipeline's `sampling.json`: its trained size (patch x trained grid), and the source's steps and
    guidance strength (converted to L2P's convention) unless given; the release's 30 and 2.0 for a source without one;
    and where its guidance starts (`cfg_start`, the run's `sample_cfg_start` in `merge`)."""
    side = model.native_side
    own = read_sampling(source_folder) if Path(source_folder).is_dir() else None
    default_steps, default_guidance = ((own.num_inference_steps, l2p_guidance(own.guidance_scale)) if own
                                       else (RELEASE_SAMPLING.num_inference_steps, RELEASE_SAMPLING.guidance_scale))
    return SamplingSettings(side, side, steps or default_steps, default_guidance if guidance is None else guidance,
                            cfg_start)


SCORE_KEYS = ("overall", "single_object", "two_object", "counting", "colors", "position", "color_attr")


def extra_loss_clause(flow: dict, weight: str, steps: str | None, term: str, after: str = "") -> str:
    """A loss term beyond the paper's velocity MSE (`flow.<weight>`, on for the first `flow.<steps>` steps or, at 0
    or for a term with no `steps` setting (None), throughout) in the card's loss line, when the run used it; `term`
    formats the weight as {weight}."""
    if not flow.get(weight):
        return ""
    limit = flow.get(steps) if steps is not None else 0
    fade = f", fading out over {flow['warm_start_fade']} more" if limit and flow.get("warm_start_fade") else ""
    span = f"for the first {limit} steps{fade}{after}" if limit else "throughout"
    return f"; {term.format(weight=flow[weight])} {span}"


def loss_clauses(flow: dict) -> str:
    """The token alignment (training.alignment), the source's decoded estimate as a target, the object weighting
    and the border weighting, as the run used them."""
    teacher = "its 1x base model's" if flow.get("align_to") == "base" else "the source's"
    noise = " on the pixel model's own noise" if flow.get("align_noise") == "shared" else ""
    return (extra_loss_clause(flow, "align_weight", "align_steps",
                              f"plus the token alignment to {teacher} tokens{noise}" + " (weight {weight:g}, not the paper's recipe)",
                              " (a warm start), then the velocity MSE alone")
            + extra_loss_clause(flow, "teach_weight", "align_steps",
                                "plus the clean estimate pulled toward the source's, drawn by its VAE (weight {weight:g}, not the paper's recipe)")
            + extra_loss_clause(flow, "object_weight", "object_weight_steps",
                                "off-background pixels weighted 1 + {weight:g} in the MSE (not the paper's recipe)")
            + extra_loss_clause(flow, "border_weight", None,
                                "a ring around every object's border weighted 1 + {weight:g} more in the MSE (not the paper's recipe)"))


def training_section(state: dict, trained: set[str], model: L2PTransformer2DModel, scores: dict | None,
                     ema: bool | None = None) -> str:
    """The model card's account of the run: the recipe as the checkpoint's config records it, and the scores of
    `training.evaluate` (its scores.json) when given; `state` is the checkpoint's state.json."""
    config, step = state["config"], state["step"]
    m, o, f = config["model"], config["optim"], config["flow"]
    parameters = model.state_dict()
    count = sum(parameters[name].numel() for name in trained)
    total = sum(tensor.numel() for tensor in parameters.values())
    accumulation = o.get("gradient_accumulation_steps", 1)
    also_frozen = f" and {', '.join(m['also_frozen'])} frozen" if m.get("also_frozen") else ""
    # A high-resolution variant grows from a pixel model (its base, which validation requires), not from the source
    # it takes its text path from.
    origin = m["base"] if m["init"] == "pixel" else m["source"]
    warm_rate = f" after a warm start at {o['warm_start_lr']:g}" if o.get("warm_start_lr") else ""
    lines = [
        "## Training",
        "",
        f"Trained with the l2p repository's `training.train` for **{step} steps** from `{origin}` "
        f"(init: {m['init']}; freeze policy {m['freeze_policy']}{also_frozen}, n_shallow {m['n_shallow']}): {count:,} of "
        f"{total:,} parameters trained ({count / total:.0%}), on `{config['data'].get('path') or config['data']['kind']}`.",
        "",
        f"- Loss: velocity MSE, {f['grid_steps']}-point sigma grid shifted by {f['shift']}" + loss_clauses(f),
        *([f"- The Detailer Head's output means {PREDICTION_TYPES[m['prediction_type']]} (`prediction_type: {m['prediction_type']}`); "
           "the model turns it into the velocity"] if m.get("prediction_type", "velocity") != "velocity" else []),
        f"- AdamW lr {o['lr']:g}{warm_rate} ({o['schedule']}, warm-up {o['warmup_steps']}), weight decay {o['weight_decay']}, "
        f"batch {o['batch_size']} x {accumulation} accumulation per process, {config['mixed_precision']} mixed precision",
        f"- Weights: {'the EMA (decay ' + str(config['ema_decay']) + ')' if config.get('ema_decay') and ema is not False else 'the raw trained weights'}",
    ]
    if scores:
        shown = [key for key in SCORE_KEYS if key in scores]
        lines += ["", f"Toy GenEval (`training.evaluate`, {scores.get('prompts', '?')} held-out prompts):", "",
                  "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown),
                  "| " + " | ".join(f"{scores[key]:.3f}" for key in shown) + " |"]
    return "\n".join(lines)


def merge(checkpoint: str | Path, file: str | Path | None, pipeline: str | Path | None, release_dtypes: bool = False,
          steps: int | None = None, guidance: float | None = None, storage_dtype: torch.dtype = torch.float32,
          repo_id: str | None = None, scores: dict | None = None, ema: bool | None = None,
          cfg_start: float | None = None) -> None:
    """Write the release-layout file and/or the pipeline folder (with its sampling.json and a model card that
    tells the run's recipe, and `scores` when given; its scheduler's shift is the one the run trained with). The
    folder's transformer is stored in `storage_dtype`; diffusers loads it back as float32 unless asked otherwise."""
    checkpoint = Path(checkpoint)
    model, source, trained = merged_transformer(checkpoint, ema)
    if file is not None:
        frozen = set(model.state_dict()) - trained
        with atomic_path(file) as staging:
            save_file(release_state_dict(model, frozen, release_dtypes), str(staging), metadata={"format": "pt"})
    if pipeline is not None:
        state = read_state(checkpoint)
        config = state["config"]
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(L2PPipeline.default_scheduler().config, shift=config["flow"]["shift"])
        card = training_section(state, trained, model, scores, ema)
        pipe = L2PPipeline(scheduler, source.text_encoder, source.tokenizer, model.to(storage_dtype))
        cfg_start = config.get("sample_cfg_start", 0.0) if cfg_start is None else cfg_start
        sampling = pixel_sampling(model, config["model"]["source"], steps, guidance, cfg_start)
        source_id = config["model"]["source"]
        base_model = source_id if is_hub_id(source_id) else None
        with atomic_directory(pipeline) as staging:
            # The card says how to load the folder where it ends up, not the staging folder it is written in.
            pipe.save_pretrained(staging, base_model=base_model, repo_id=repo_id or str(pipeline), training=card)
            write_sampling(staging, sampling)


def publish(repo_id: str, pipeline: Path, file: Path | None = None, token: str | None = None) -> str | None:
    """Upload the merged pipeline folder (and the release-layout file beside it, at the repository's root) to the
    Hub; returns the commit URL, or None when the Hub cannot be reached, after saying how to push later."""
    from huggingface_hub import constants, create_repo, upload_file, upload_folder

    later = f"hf upload {repo_id} {pipeline} ." + (f" && hf upload {repo_id} {file} {Path(file).name}" if file else "")
    try:
        if constants.HF_HUB_OFFLINE:
            raise ConnectionError("HF_HUB_OFFLINE is set")
        repo_id = create_repo(repo_id, token=token, exist_ok=True).repo_id
        commit = upload_folder(repo_id=repo_id, folder_path=str(pipeline), token=token, commit_message="Upload merged L2P pipeline")
        if file:
            upload_file(path_or_fileobj=str(file), path_in_repo=Path(file).name, repo_id=repo_id, token=token,
                        commit_message="Upload the release-layout checkpoint")
        print(f"pushed {pipeline} to https://huggingface.co/{repo_id}: {commit}")
        return str(commit)
    except Exception as error:  # offline, no token, no network: everything is written, so say how to push later
        print(f"not pushed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}); "
              f"everything is written under {pipeline}. To push it later (after `hf auth login`):\n  {later}")
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint-* folder of a pixel training run")
    parser.add_argument("--file", help="write the release-layout single file here")
    parser.add_argument("--pipeline", help="write an L2PPipeline folder here")
    parser.add_argument("--release-dtypes", action="store_true", help="frozen blocks fp32, the rest bf16")
    parser.add_argument("--steps", type=int, help="sampling.json's steps (default: the source's)")
    parser.add_argument("--guidance", type=float, help="sampling.json's guidance, L2P's convention (default: the source's strength)")
    parser.add_argument("--cfg-start", type=float, help="sampling.json's cfg_start, where guidance starts in normalised "
                        "time (default: the run's sample_cfg_start)")
    parser.add_argument("--raw", action="store_true", help="the raw trained weights even where the run kept an EMA")
    parser.add_argument("--scores", help="a scores.json of training.evaluate, quoted in the model card")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the pipeline folder (and --file) to this Hub repository")
    args = parser.parse_args(argv)
    if not (args.file or args.pipeline):
        parser.error("name --file, --pipeline or both")
    if args.push_to_hub and not args.pipeline:
        parser.error("--push-to-hub uploads the pipeline folder: name it with --pipeline")
    scores = json.loads(Path(args.scores).read_text()) if args.scores else None
    merge(args.checkpoint, args.file, args.pipeline, args.release_dtypes, args.steps, args.guidance,
          repo_id=args.push_to_hub, scores=scores, ema=False if args.raw else None, cfg_start=args.cfg_start)
    if args.push_to_hub:
        publish(args.push_to_hub, Path(args.pipeline), Path(args.file) if args.file else None)


if __name__ == "__main__":
    main()
