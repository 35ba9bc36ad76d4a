"""Where a pixel model's soft borders come from (docs/results.md, "Where the HR model's soft borders come from"):
the sampler is started from a true toy render noised to a given pixel noise level, runs the rest of its 20-step
schedule below that level, and the output's border width is measured (l2p.sharpness). Started from a crisp render (0.9 px), a wide
output means the low-noise steps *blur*; started from a blurred render (Gaussian, 2 px at 128 px, scaled with the
side), an output narrower than the start means they *sharpen*. The same prompts, renders and noise for every model.
Run from the repo root (a row per start and kind, then all rows as JSON):

    PYTHONPATH=. python docs/results/hr-edges/edge_by_start.py PIXEL_PIPELINE_FOLDER [N_PROMPTS]
"""
import json
import sys

import numpy as np
import torch
from scipy import ndimage

from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas
from l2p.sharpness import mean_edge_width
from l2p.toyworld.render import render_prompt
from training.evaluate import load_pipeline, run_settings
from training.toy_data import to_tensor

torch.set_num_threads(2)
folder = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
pipe = load_pipeline(folder)
settings = run_settings(folder, pipe)
side, shift = settings.height, pipe.scheduler.config.shift
prompts = ["a red circle", "a blue square", "two triangles", "a circle left of a square", "an orange triangle",
           "three circles", "a green square and a red circle", "a purple triangle", "a yellow circle on a black background",
           "two squares on a gray background", "a triangle above a circle", "four circles"][:n]
crisp = torch.stack([to_tensor(render_prompt(p, side, seed=i)) for i, p in enumerate(prompts)])
blur_px = 2.0 * side / 128
blurred = torch.from_numpy(ndimage.gaussian_filter(crisp.numpy(), sigma=(0, 0, blur_px, blur_px))).float()
noise = torch.randn(crisp.shape, generator=torch.Generator().manual_seed(0))
sigmas = list(get_default_z_image_sigmas(settings.num_inference_steps))


def as_images(x):
    return [((im.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8) for im in x]


rows = [{"start": kind, "render_edge_px": round(mean_edge_width(as_images(x)), 2)} for kind, x in
        (("crisp", crisp), ("blurred", blurred))]
print(rows, flush=True)
for pixel_sigma in (0.8, 0.6, 0.4, 0.2, 0.1):
    # The pipeline takes sigmas before its shift: the start, then the model's own schedule below it (none left
    # below the schedule's last step, 0.39 at the HR model's shift 12: then one step to 0 from the start).
    start_sigma = pixel_sigma / (shift - (shift - 1) * pixel_sigma)
    schedule = [start_sigma] + [s for s in sigmas if s < start_sigma]
    for kind, x0 in (("crisp", crisp), ("blurred", blurred)):
        start = (1 - pixel_sigma) * x0 + pixel_sigma * noise
        out = pipe(prompts, height=side, width=side, sigmas=schedule, latents=start,
                   guidance_scale=settings.guidance_scale, generator=torch.Generator().manual_seed(0)).images
        rows.append({"start": kind, "pixel_sigma": round(pixel_sigma, 3), "steps": len(schedule),
                     "edge_px": round(mean_edge_width(out), 2)})
        print(rows[-1], flush=True)
print(json.dumps(rows))
