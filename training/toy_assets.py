"""Build the embedded tiny models from nothing: `assets/tiny-source` and `assets/tiny-l2p`.

    python -m training.toy_assets                 # every stage, skipping those already done
    python -m training.toy_assets --stages source --force

Stages (each one a `training` module with its YAML under training/configs/toy/):
  vae         training.vae          the source's 16-channel VAE on toy renders (128 px, then 256 px)
  components  training.components   tokenizer, frozen Qwen3 text encoder, VAE and a fresh DiT
  source      training.train        the tiny Z-Image DiT on VAE latents of toy renders
  export      -> assets/tiny-source (a ZImagePipeline folder)
  prompts     training.prompts      the transfer's prompt corpus from the toy grammar
  synthesize  training.synthesize   the source renders its own training corpus
  transfer    training.train        L2P transfer: shallow layers + Detailer Head on the corpus
  merge       training.merge        -> assets/tiny-l2p (an L2PPipeline folder)
Wall time of each stage is appended to runs/toy/timings.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from diffusers import ZImagePipeline

from . import components, merge, prompts, synthesize, train, vae
from .config import load_config
from .files import atomic_directory

CONFIGS = Path(__file__).resolve().parent / "configs" / "toy"
RUNS = Path("runs/toy")
ASSETS = Path("assets")
STAGES = ["vae", "components", "source", "export", "prompts", "synthesize", "transfer", "merge"]


def _config(cls, name: str, threads: int):
    config = load_config(cls, CONFIGS / f"{name}.yaml")
    if hasattr(config, "threads") and threads:
        config.threads = threads
    return config


def export_source(source_run: Path, components_dir: Path, target: Path) -> None:
    """The components folder with the trained DiT in place of the fresh one."""
    last = train.latest_checkpoint(source_run)
    if last is None:
        raise FileNotFoundError(f"no checkpoint in {source_run}; run the source stage first")
    from safetensors.torch import load_file

    pipe = ZImagePipeline.from_pretrained(components_dir)
    pipe.transformer.load_state_dict(load_file(str(last / "trainable.safetensors")), strict=True)
    with atomic_directory(target) as staging:
        pipe.save_pretrained(staging)


def done(stage: str) -> bool:
    if stage in ("source", "transfer"):
        config = load_config(train.TrainConfig, CONFIGS / f"{stage}.yaml")
        return (Path(config.output_dir) / f"checkpoint-{config.max_steps:07d}").is_dir()
    outputs = {
        "vae": RUNS / "vae" / "vae" / "config.json",
        "components": RUNS / "source-init" / "model_index.json",
        "export": ASSETS / "tiny-source" / "model_index.json",
        "prompts": RUNS / "prompts.jsonl",
        "synthesize": RUNS / "corpus" / "metadata.jsonl",
        "merge": ASSETS / "tiny-l2p" / "model_index.json",
    }
    return outputs[stage].exists()


def run_stage(stage: str, threads: int) -> None:
    if stage == "vae":
        vae.train(_config(vae.VaeConfig, "vae", threads))  # 128-px renders
        vae.train(_config(vae.VaeConfig, "vae-full", threads))  # then 256-px renders
    elif stage == "components":
        components.build(_config(components.ComponentsConfig, "components", threads))
    elif stage == "source":
        train.run(_config(train.TrainConfig, "source", threads), resume=True)
    elif stage == "export":
        export_source(RUNS / "source", RUNS / "source-init", ASSETS / "tiny-source")
    elif stage == "prompts":
        prompts.toy_prompts(500, seed=1, out=RUNS / "prompts.jsonl")
    elif stage == "synthesize":
        synthesize.run(_config(synthesize.SynthesizeConfig, "synthesize", threads))
    elif stage == "transfer":
        train.run(_config(train.TrainConfig, "transfer", threads), resume=True)
    elif stage == "merge":
        last = train.latest_checkpoint(RUNS / "transfer")
        merge.merge(last, RUNS / "l2p-merge.safetensors", ASSETS / "tiny-l2p")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of: " + ", ".join(STAGES))
    parser.add_argument("--force", action="store_true", help="redo stages whose outputs exist")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per stage (0: torch's default)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {STAGES}")
    RUNS.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        if stage not in chosen:
            continue
        if done(stage) and not args.force:
            print(f"[toy_assets] {stage}: already done, skipped")
            continue
        if args.force and stage in ("source", "transfer"):
            shutil.rmtree(RUNS / stage, ignore_errors=True)
        started = time.time()
        print(f"[toy_assets] {stage}: starting", flush=True)
        run_stage(stage, args.threads)
        seconds = time.time() - started
        with open(RUNS / "timings.jsonl", "a") as log:
            log.write(json.dumps({"stage": stage, "seconds": round(seconds, 1), "threads": args.threads}) + "\n")
        print(f"[toy_assets] {stage}: done in {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
