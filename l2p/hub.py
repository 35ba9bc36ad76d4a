"""The model card a saved or pushed `L2PPipeline` carries: what it is, how to load it, what it came from."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

MODEL_CARD_FILE = "README.md"
TAGS = ["l2p", "pixel-space", "text-to-image", "z-image", "diffusers"]

CARD = """---
{card_data}
---

# L2P pixel-space text-to-image model

An L2P ("Latent-to-Pixel") model: {origin} turned into a generator
that works directly on RGB pixels. There is no VAE: the image goes into the DiT as {patch}-pixel patches, and a
small U-Net Detailer Head ({head}) predicts every pixel from the DiT's features. Native size
{side} x {side} px ({grid} x {grid} tokens); larger sizes run zero-shot with a RoPE strategy (`rope_scaling=`).

- DiT: width {dim}, {layers} blocks; {blocks}
- Parameters: {parameters:,}.

## How to load

```bash
pip install ./l2p     # a checkout of the l2p repository (or pip install git+<its URL>): defines L2PPipeline
```

```python
from l2p import L2PPipeline

pipe = L2PPipeline.from_pretrained("{repo}")
image = pipe("a red circle left of a blue square", height={side}, width={side}).images[0]
```

No `trust_remote_code` is involved: `model_index.json` names the transformer `["l2p", "L2PTransformer2DModel"]`,
which diffusers imports from the installed package.
"""


def model_card(pipeline, repo_id: str, base_model: str | None = None, training: str | None = None) -> ModelCard:
    """The card for `pipeline` (an `L2PPipeline`) saved as `repo_id` (a Hub id or a folder); `base_model` (a Hub
    id) is the latent source it came from; `training` (markdown), how it was trained and what it scored."""
    config = pipeline.transformer.config
    middle = len(pipeline.transformer.source_blocks)
    data = ModelCardData(library_name="diffusers", pipeline_tag="text-to-image", tags=TAGS, base_model=base_model)
    text = CARD.format(
        card_data=data.to_yaml(),
        origin=f"the latent model [{base_model}](https://huggingface.co/{base_model})" if base_model else "a latent Z-Image model",
        patch=config.patch_size,
        head="widths " + "/".join(str(width) for width in config.detailer_channels),
        side=pipeline.transformer.native_side,
        grid=config.trained_grid,
        dim=config.dim,
        layers=config.n_layers,
        blocks=(
            f"the outer {config.n_shallow} at each end were retrained for pixels, the {middle} between are the "
            "source's own weights (Z-Image LoRAs apply there)." if middle else "all were trained for pixels."
        ),
        parameters=sum(parameter.numel() for parameter in pipeline.transformer.parameters()),
        repo=repo_id,
    )
    return ModelCard(text + (f"\n{training.strip()}\n" if training else ""))
