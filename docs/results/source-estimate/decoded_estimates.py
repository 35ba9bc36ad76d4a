"""What the source's clean estimate looks like decoded by its VAE, per noise level: the target flow.teach_weight
pulls the pixel model's estimate toward. Rows: the corpus image (the source's own render), then the decoded estimate
at sigma 0.95, 0.8, 0.6, 0.3 for that image noised in latent space; columns: 8 corpus items whose prompts name green,
blue or purple. Needs the corpus (python -m training.toy_assets --stages prompts,synthesize); run from the repo root:

    PYTHONPATH=. python docs/results/source-estimate/decoded_estimates.py     # writes decoded-estimates.png here
"""
import json, torch
from PIL import Image
import numpy as np
from diffusers import ZImagePipeline
from l2p.latents import standardise_latents, destandardise_latents
from training.flow import predict, noised
from training.toy_data import to_tensor
torch.set_num_threads(2)
pipe = ZImagePipeline.from_pretrained("assets/tiny-source")
vae = pipe.vae
rows = [json.loads(l) for l in open("runs/toy/corpus/metadata.jsonl")]
pick = [r for r in rows if any(c in r["prompt"] for c in ("green", "blue", "purple"))][:8]
imgs = torch.stack([to_tensor(Image.open("runs/toy/corpus/" + r["file_name"]).convert("RGB")) for r in pick])
with torch.no_grad():
    z0 = standardise_latents(vae, vae.encode(imgs).latent_dist.mode())
    feats, _ = pipe.encode_prompt([r["prompt"] for r in pick], device="cpu", do_classifier_free_guidance=False)
    feats = [f.float() for f in feats]
    cols = [imgs]
    g = torch.Generator().manual_seed(0)
    n = torch.randn(z0.shape, generator=g)
    for s in (0.95, 0.8, 0.6, 0.3):
        sig = torch.full((len(pick),), s)
        xt = noised(z0, n, sig)
        out = predict(pipe.transformer, xt, 1 - sig, feats, latent=True)
        x0 = xt + s * out
        cols.append(vae.decode(destandardise_latents(vae, x0)).sample.clamp(-1, 1))
grid = torch.cat([torch.cat(list(c), dim=2) for c in cols], dim=1)  # rows: noise levels; columns: images
Image.fromarray(((grid.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(__file__.replace("decoded_estimates.py", "decoded-estimates.png"))
print([r["prompt"] for r in pick])
