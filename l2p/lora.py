"""Which of a latent Z-Image LoRA's adapters belong on the pixel model, and which do not.

The transfer freezes the source's middle blocks (`L2PTransformer2DModel.source_blocks`), so there the pixel
model's weights are the latent model's own and a LoRA trained on the latent Z-Image applies unchanged.
Everything else (embedders, refiners, the shallow blocks, the head) was retrained for pixels: an adapter
trained against the latent weights there would be applied to weights it was never trained for, so those
adapters are left out, by name.
"""

from __future__ import annotations

import re

# diffusers' LoRA files prefix each key with the component ("transformer.layers.3.attention.to_q.lora_A.weight").
COMPONENT_PREFIX = "transformer."
BLOCK = re.compile(r"^layers\.(\d+)\.")


def adapted_module(key: str) -> str:
    """The module a LoRA tensor adapts: "transformer.layers.3.attention.to_q.lora_A.weight" -> "layers.3.attention.to_q"."""
    name = key.removeprefix(COMPONENT_PREFIX)
    return name.split(".lora_", 1)[0] if ".lora_" in name else name.rsplit(".", 1)[0]


def split_by_source_blocks(state_dict: dict, source_blocks: range) -> tuple[dict, list[str]]:
    """(the tensors whose module is in one of `source_blocks`, the sorted names of the other modules)."""
    kept, skipped = {}, set()
    for key, tensor in state_dict.items():
        module = adapted_module(key)
        block = BLOCK.match(module)
        if block and int(block.group(1)) in source_blocks:
            kept[key] = tensor
        else:
            skipped.add(module)
    return kept, sorted(skipped)
