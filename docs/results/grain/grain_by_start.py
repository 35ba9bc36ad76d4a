"""Where the pixel model's grain comes from (docs/results.md, "Where the grain comes from"): the sampler is
started from a true render noised to sigma_start, runs the rest of the 20-step schedule, and the background's grain
is measured (std over background pixels >= 4 px from any object, in 0-255 levels). Grain left from a low start
comes from the last steps; grain only from high starts, from noise the early steps leave and the later ones keep.
Run from the repo root (prints a row per start, then all rows as JSON):

    PYTHONPATH=. python docs/results/grain/grain_by_start.py [PIXEL_PIPELINE_FOLDER]   # default assets/tiny-l2p

The first row (start 1.0, a normal generation) measures the background of the render's layout, where the sample
may have drawn its objects elsewhere: only the later rows compare like with like."""
import sys, json
import numpy as np, torch
from scipy import ndimage
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas
from l2p import L2PPipeline
from l2p.toyworld.render import render_prompt
from training.toy_data import object_weights, to_tensor
torch.set_num_threads(2)
folder = sys.argv[1] if len(sys.argv) > 1 else "assets/tiny-l2p"
pipe = L2PPipeline.from_pretrained(folder)
shift = pipe.scheduler.config.shift
prompts = ["a red circle", "a blue square", "two triangles", "a circle left of a square",
           "an orange triangle", "three circles", "a green square and a red circle", "a purple triangle"]
sigmas = list(get_default_z_image_sigmas(20))
x0 = torch.stack([to_tensor(render_prompt(p, 128, seed=i)) for i, p in enumerate(prompts)])
renders = ((x0.permute(0, 2, 3, 1).numpy() + 1) * 127.5)  # 0-255, as the outputs are measured
objects = (object_weights(x0, 1.0) > 1.0)[:, 0].numpy()  # the off-background pixels, as the training weights find them
background = [~ndimage.binary_dilation(mask, iterations=4) for mask in objects]
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
rows = []
for k in (0, 4, 8, 12, 16, 18):
    s = sigmas[k]; shifted = shift * s / (1 + (shift - 1) * s)
    start = (1 - shifted) * x0 + shifted * noise
    out = pipe(prompts, height=128, width=128, sigmas=sigmas[k:], latents=start, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    out = out * 255.0
    grain = float(np.mean([out[i][background[i]].std(0).mean() for i in range(len(prompts))]))
    err = float(np.mean([np.abs(out[i] - renders[i])[background[i]].mean() for i in range(len(prompts))]))
    rows.append({"start_sigma": round(shifted, 3), "steps": 20 - k, "background_grain_std": round(grain, 2), "background_abs_error": round(err, 2)})
    print(rows[-1], flush=True)
print(json.dumps(rows))
