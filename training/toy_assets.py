"""Build the embedded tiny models from nothing: `assets/tiny-source` and `assets/tiny-l2p`.

    python -m training.toy_assets                 # every stage, skipping those already done
    python -m training.toy_assets --stages source,export --force

Stages (each one a `training` module with its YAML under training/configs/toy/, hyperparameters only: where
each stage reads and writes is laid out here, under --runs and --assets):
  text_encoder  training.text_encoder  the tiny Qwen3, pre-trained on the grammar, then frozen for good
  vae           training.vae           the source's 16-channel VAE on whole toy renders at the native size
  components    training.components    tokenizer, text encoder, VAE and a fresh DiT as a ZImagePipeline
  source        training.train         the tiny Z-Image DiT on VAE latents of toy renders
  export        -> assets/tiny-source  (a ZImagePipeline folder with its sampling.json)
  prompts       training.prompts       the transfer's prompt corpus from the toy grammar
  synthesize    training.synthesize    the source renders its own training corpus
  transfer      training.train         L2P transfer: shallow layers + Detailer Head on the corpus
  merge         training.merge         -> assets/tiny-l2p (an L2PPipeline folder with its sampling.json)
Each stage's wall time goes to the build record (--record, by default docs/results/toy-build.json).

The native high-resolution variant (issue 15) builds on the two, with its own stages and record
(docs/results/toy-build-hr.json):

    python -m training.toy_assets --stages hr_transfer,hr_merge

  hr_transfer   training.train         the 1x pixel model grown to 4x its side (l2p.high_resolution), its head
                                       trained on true 4x renders of the toy world (the DiT stays the 1x model's)
  hr_merge      training.merge         -> assets/tiny-l2p-hr
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ZImagePipeline

from l2p.device import cpu_has_bf16_units, cpu_model
from l2p.sampling import SAMPLING_FILE

from . import checkpoints, components, merge, prompts, synthesize, text_encoder, train, vae
from .config import load_config
from .files import atomic_directory, atomic_file

CONFIGS = Path(__file__).resolve().parent / "configs" / "toy"
RECORD = Path("docs/results/toy-build.json")
RECORD_HR = Path("docs/results/toy-build-hr.json")
# The shipped DiTs are stored in fp16 to keep each folder under 25 MB (width 256 x 6 blocks is 35 MB in fp32);
# the pipelines load them as float32, and the round trip moves a sample by well under one uint8 level.
ASSET_DTYPE = torch.float16
STAGES = ["text_encoder", "vae", "components", "source", "export", "prompts", "synthesize", "transfer", "merge"]
HR_STAGES = ["hr_transfer", "hr_merge"]


@dataclass
class PromptsConfig:
    count: int = 1000
    seed: int = 1


@dataclass(frozen=True)
class Layout:
    """Where every stage reads and writes."""

    runs: Path
    assets: Path

    @property
    def text_encoder(self) -> Path:
        return self.runs / "text-encoder"

    @property
    def vae(self) -> Path:
        return self.runs / "vae"

    @property
    def components(self) -> Path:
        return self.runs / "source-init"

    @property
    def source_run(self) -> Path:
        return self.runs / "source"

    @property
    def prompts(self) -> Path:
        return self.runs / "prompts.jsonl"

    @property
    def corpus(self) -> Path:
        return self.runs / "corpus"

    @property
    def transfer_run(self) -> Path:
        return self.runs / "transfer"

    @property
    def merged_file(self) -> Path:
        return self.runs / "l2p-merge.safetensors"

    @property
    def hr_run(self) -> Path:
        return self.runs / "hr"

    @property
    def hr_merged_file(self) -> Path:
        return self.runs / "l2p-hr-merge.safetensors"

    @property
    def source(self) -> Path:
        return self.assets / "tiny-source"

    @property
    def pixel(self) -> Path:
        return self.assets / "tiny-l2p"

    @property
    def hr(self) -> Path:
        return self.assets / "tiny-l2p-hr"


class Build:
    def __init__(self, configs: Path, layout: Layout, threads: int = 0):
        self.configs, self.layout, self.threads = Path(configs), layout, threads

    def config(self, cls, name: str, **paths):
        config = load_config(cls, self.configs / f"{name}.yaml")
        if hasattr(config, "threads") and self.threads:
            config.threads = self.threads
        for dotted, value in paths.items():
            node = config
            *parents, last = dotted.split("__")
            for parent in parents:
                node = getattr(node, parent)
            setattr(node, last, str(value))
        return config

    def source_config(self):
        return self.config(train.TrainConfig, "source", output_dir=self.layout.source_run, model__source=self.layout.components)

    def transfer_config(self):
        return self.config(train.TrainConfig, "transfer", output_dir=self.layout.transfer_run, model__source=self.layout.source,
                           data__path=self.layout.corpus)

    def hr_config(self):
        return self.config(train.TrainConfig, "hr", output_dir=self.layout.hr_run, model__source=self.layout.source,
                           model__base=self.layout.pixel)

    def training_config(self, stage: str):
        return {"source": self.source_config, "transfer": self.transfer_config, "hr_transfer": self.hr_config}[stage]()

    def done(self, stage: str) -> bool:
        L = self.layout
        if stage in ("source", "transfer", "hr_transfer"):
            config = self.training_config(stage)
            return (Path(config.output_dir) / f"checkpoint-{config.max_steps:07d}").is_dir()
        outputs = {
            "text_encoder": L.text_encoder / "text_encoder" / "config.json",
            "vae": L.vae / "vae" / "config.json",
            "components": L.components / "model_index.json",
            "export": L.source / "model_index.json",
            "prompts": L.prompts,
            "synthesize": L.corpus / "metadata.jsonl",
            "merge": L.pixel / "model_index.json",
            "hr_merge": L.hr / "model_index.json",
        }
        return outputs[stage].exists()

    def run(self, stage: str) -> None:
        L = self.layout
        if stage == "text_encoder":
            text_encoder.train(self.config(text_encoder.TextEncoderConfig, "text-encoder", output_dir=L.text_encoder))
        elif stage == "vae":
            vae.train(self.config(vae.VaeConfig, "vae", output_dir=L.vae))
        elif stage == "components":
            components.build(self.config(components.ComponentsConfig, "components", output_dir=L.components,
                                         vae=L.vae / "vae", text_encoder=L.text_encoder / "text_encoder"))
        elif stage == "source":
            train.run(self.source_config(), resume=True)
        elif stage == "export":
            export_source(L.source_run, L.components, L.source)
        elif stage == "prompts":
            config = load_config(PromptsConfig, self.configs / "prompts.yaml")
            prompts.toy_prompts(config.count, seed=config.seed, out=L.prompts)
        elif stage == "synthesize":
            synthesize.run(self.config(synthesize.SynthesizeConfig, "synthesize", source=L.source, prompts=L.prompts,
                                       output_dir=L.corpus))
        elif stage == "transfer":
            train.run(self.transfer_config(), resume=True)
        elif stage == "merge":
            merge.merge(checkpoints.latest_checkpoint(L.transfer_run), L.merged_file, L.pixel, storage_dtype=ASSET_DTYPE)
        elif stage == "hr_transfer":
            train.run(self.hr_config(), resume=True)
        elif stage == "hr_merge":
            merge.merge(checkpoints.latest_checkpoint(L.hr_run), L.hr_merged_file, L.hr, storage_dtype=ASSET_DTYPE)


def export_source(source_run: Path, components_dir: Path, target: Path) -> None:
    """The components folder with the trained DiT (its EMA when the run kept one) in place of the fresh one."""
    last = checkpoints.latest_checkpoint(source_run)
    if last is None:
        raise FileNotFoundError(f"no checkpoint in {source_run}; run the source stage first")
    pipe = ZImagePipeline.from_pretrained(components_dir)
    trained = checkpoints.load_trained(pipe.transformer, last)
    if trained != set(pipe.transformer.state_dict()):
        raise ValueError(f"{last} does not hold every DiT tensor; was it written by a latent (source) run?")
    pipe.transformer.to(ASSET_DTYPE)
    with atomic_directory(target) as staging:
        pipe.save_pretrained(staging)
        shutil.copy(Path(components_dir) / SAMPLING_FILE, staging / SAMPLING_FILE)


def machine() -> dict:
    return {"cpu": cpu_model(), "cpu_bf16_units": cpu_has_bf16_units(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def record_stage(record: Path, stage: str, seconds: float) -> dict:
    """Add a stage's time to the build record (a resumed build keeps the times of the stages it skipped). `machine`
    is the last stage's; `stage_cpus` names each stage's CPU, so a record whose stages were timed on different
    machines says so."""
    data = json.loads(record.read_text()) if record.is_file() else {"stages": {}}
    # A record written before stage_cpus existed was timed on the one machine it names.
    cpus = data.get("stage_cpus") or dict.fromkeys(data["stages"], data.get("machine", {}).get("cpu"))
    data["stages"][stage] = round(seconds, 1)
    data["stages"] = {name: data["stages"][name] for name in STAGES + HR_STAGES if name in data["stages"]}
    data["total_s"] = round(sum(data["stages"].values()), 1)
    data["machine"] = machine()
    cpus[stage] = data["machine"]["cpu"]
    data["stage_cpus"] = {name: cpus[name] for name in data["stages"]}
    with atomic_file(record, "w") as stream:
        json.dump(data, stream, indent=1)
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="comma-separated subset of: " + ", ".join(STAGES + HR_STAGES) + " (default: the first nine)")
    parser.add_argument("--force", action="store_true", help="redo stages whose outputs exist")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per stage (0: torch's default)")
    parser.add_argument("--configs", type=Path, default=CONFIGS, help="the folder of stage YAMLs (default: %(default)s)")
    parser.add_argument("--runs", type=Path, default=Path("runs/toy"), help="intermediate outputs (default: %(default)s)")
    parser.add_argument("--assets", type=Path, default=Path("assets"), help="where the two pipelines go (default: %(default)s)")
    parser.add_argument("--record", type=Path, help=f"stage times, as JSON (default: {RECORD}, and {RECORD_HR} for the hr_ stages)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STAGES + HR_STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {STAGES + HR_STAGES}")
    if not args.configs.is_dir():
        parser.error(f"--configs {args.configs} is not a folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    build = Build(args.configs, Layout(args.runs, args.assets), args.threads)
    args.runs.mkdir(parents=True, exist_ok=True)
    for stage in STAGES + HR_STAGES:
        if stage not in chosen:
            continue
        if build.done(stage) and not args.force:
            print(f"[toy_assets] {stage}: already done, skipped", flush=True)
            continue
        if args.force and stage in ("source", "transfer", "prompts", "synthesize", "hr_transfer"):
            target = {"source": build.layout.source_run, "transfer": build.layout.transfer_run, "hr_transfer": build.layout.hr_run,
                      "prompts": build.layout.prompts, "synthesize": build.layout.corpus}[stage]
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        started = time.time()
        print(f"[toy_assets] {stage}: starting", flush=True)
        build.run(stage)
        seconds = time.time() - started
        record = args.record or (RECORD_HR if stage in HR_STAGES else RECORD)
        total = record_stage(record, stage, seconds)["total_s"]
        print(f"[toy_assets] {stage}: done in {seconds / 60:.1f} min (build total {total / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
