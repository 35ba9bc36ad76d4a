"""An HR model's toy scores and edge widths with extra low-noise sampling steps after its own schedule (docs/results.md,
"The HR head predicting x0 - sigma * noise"): the extra pixel noise levels are given as a comma-separated list (empty:
the schedule alone). Scores the first N validation prompts (seed 700000), and writes scores.json and the first 16
samples to OUT. Run from the repo root:

    PYTHONPATH=. python docs/results/hr-blend/schedule_tail.py PIPELINE N "0.25,0.15,0.08,0.04" OUT
"""
import json
import os
import sys
import time

import torch
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas
from training.evaluate import load_pipeline, run_settings, generate, measure, grid
from l2p.toyworld.grammar import sample_prompts
torch.set_num_threads(2)
folder, n, tail, out = sys.argv[1], int(sys.argv[2]), [float(x) for x in sys.argv[3].split(",") if x], sys.argv[4]
pipe = load_pipeline(folder)
shift = pipe.scheduler.config.shift
settings = run_settings(folder, pipe)
base = list(get_default_z_image_sigmas(settings.num_inference_steps))
# the tail's pixel noise levels, given before the shift as the pipeline takes them
base += [s / (shift - (shift - 1) * s) for s in tail]
prompts = [p for _, p in sample_prompts(n, seed=700000)]
t0 = time.time()
images = generate(pipe, prompts, [700000 + i for i in range(n)], settings, sigmas=base)
r = measure(images, prompts); r.update(folder=folder, tail=tail, seconds=round(time.time() - t0, 1))
print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
os.makedirs(out, exist_ok=True)
json.dump(r, open(f"{out}/scores.json", "w"), indent=1); grid(images[:16]).save(f"{out}/samples.png")
