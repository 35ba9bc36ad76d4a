"""Render the synthetic corpus: the source pipeline draws k seeds for every prompt of a prompt file.

    accelerate launch --config_file training/configs/accelerate/cpu.yaml -m training.synthesize \\
        --config training/configs/toy/synthesize.yaml

Work items (prompt, k) are split across processes by `accelerate` (item i goes to process i mod N); each
image is written atomically and finished images are skipped, so an interrupted run resumes where it
stopped. The output is an image folder with `metadata.jsonl` (`file_name`, `prompt`, `seed`), the layout
`datasets`' imagefolder loader reads.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from .config import ConfigError, parse_command_line
from .evaluate import load_pipeline, run_settings
from .files import atomic_file


@dataclass
class SynthesizeConfig:
    source: str = "assets/tiny-source"
    prompts: str = "runs/toy/prompts.jsonl"  # JSONL {id, major, sub, prompt}, as training.prompts writes
    output_dir: str = "runs/toy/corpus"
    seeds_per_prompt: int = 2
    # None: as the source folder's sampling.json says (the release's defaults for a folder without one).
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None  # L2P's convention (1 = off)
    batch_size: int = 8
    seed: int = 0
    threads: int = 0


@dataclass(frozen=True)
class WorkItem:
    file_name: str
    prompt: str
    seed: int


def work_items(config: SynthesizeConfig) -> list[WorkItem]:
    path = Path(config.prompts)
    if not path.is_file():
        raise ConfigError(f"prompts: {path} does not exist; write it with training.prompts first")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    items = []
    for record in records:
        for k in range(config.seeds_per_prompt):
            seed = int(np.random.default_rng([config.seed, zlib.crc32(record["id"].encode()), k]).integers(2**31))
            items.append(WorkItem(f"images/{record['id']}-{k}.png", record["prompt"], seed))
    return items


def run(config: SynthesizeConfig) -> Path:
    if config.threads:
        torch.set_num_threads(config.threads)
    items = work_items(config)
    if not (Path(config.source) / "model_index.json").is_file():
        raise ConfigError(f"source: {config.source} is not a pipeline folder (no model_index.json)")
    # On a machine without CUDA, processes started by `accelerate launch` talk over gloo on the CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    output = Path(config.output_dir)
    mine = items[state.process_index :: state.num_processes]
    todo = [item for item in mine if not (output / item.file_name).exists()]
    pipe = load_pipeline(config.source)
    settings = run_settings(config.source, pipe, config.steps, config.guidance, height=config.height, width=config.width)
    done_log = output / f"rendered-by-process-{state.process_index}.txt"
    for start in range(0, len(todo), config.batch_size):
        chunk = todo[start : start + config.batch_size]
        images = pipe(
            [item.prompt for item in chunk], generator=[torch.Generator().manual_seed(item.seed) for item in chunk],
            **settings.as_kwargs(),
        ).images
        for item, image in zip(chunk, images):
            with atomic_file(output / item.file_name) as stream:
                image.save(stream, format="PNG")
        with open(done_log, "a") as log:
            log.writelines(f"{item.file_name}\n" for item in chunk)
        print(f"process {state.process_index}: {start + len(chunk)}/{len(todo)} images", flush=True)
    state.wait_for_everyone()
    if state.is_main_process:
        with atomic_file(output / "metadata.jsonl", "w") as stream:
            for item in items:
                if (output / item.file_name).exists():
                    stream.write(json.dumps({"file_name": item.file_name, "prompt": item.prompt, "seed": item.seed}) + "\n")
    state.wait_for_everyone()
    return output


def main(argv=None):
    _, config = parse_command_line(SynthesizeConfig, __doc__, argv)
    run(config)


if __name__ == "__main__":
    main()
