"""`python -m training.memory_plan`: per-GPU memory of the full 1K transfer on 8 GPUs, by arithmetic.

Parameter counts come from the real classes built on the meta device (no weights): the pixel model at its
release defaults (6.17B), frozen with the release's policy (n_shallow 5: 2.55B trainable), and the Qwen3-4B text
encoder. Everything else is arithmetic, written out below so that it can be checked against a GPU run:

- weights: fp32 (the trainer keeps fp32 weights and autocasts to bf16); ZeRO-2 keeps a whole copy on every GPU,
  FSDP (fully sharded) a 1/N shard plus the all-gathered fp32 unit being computed and the one prefetched;
- gradients: fp32 for the trained parameters only, sharded 1/N by both (ZeRO-2 after its reduce-scatter);
- optimizer: AdamW's two fp32 moments per trained parameter, sharded 1/N by both;
- text encoder: frozen, in bf16 (`model.text_encoder_dtype` of training/configs/full/transfer-1k.yaml; fp32 doubles it);
- activations with gradient checkpointing, batch 1 at 1024 x 1024: the fp32 residual stream saved at every
  block's input (4096 image + 512 caption tokens x 3840 x 4 B x 34 blocks with the refiners), one block's
  recomputed bf16 internals (q, k, v, out, the 3 x 10240 feed-forward and its input), and the Detailer Head's
  bf16 activations, not checkpointed (about four 64/128/256/512-channel maps per level at 1, 1/2, 1/4, 1/8).
Estimates, not measurements; written to docs/results/training-memory-plan.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

GB = 10**9
PROCESSES = 8
CARD_GB = 80
OUT = Path("docs/results/training-memory-plan.md")
WEIGHTS = "weights (fp32; ZeRO-2 whole, FSDP 1/N + 2 gathered blocks)"


def parameter_counts() -> dict[str, int]:
    from accelerate import init_empty_weights
    from transformers import Qwen3Config, Qwen3Model

    from l2p import L2PTransformer2DModel, freeze_for_transfer

    with init_empty_weights():
        model = L2PTransformer2DModel()
        trainable = freeze_for_transfer(model, n_shallow=5, policy="release")
        # Z-Image's text encoder, Qwen3-4B (hidden 2560, 36 layers), as the bench's full-scale pipeline builds it.
        encoder = Qwen3Model(Qwen3Config(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                                         num_key_value_heads=8, head_dim=128, vocab_size=151936))
    largest_block = max(sum(p.numel() for p in block.parameters()) for block in model.layers)
    return {"model": sum(p.numel() for p in model.parameters()), "trainable": trainable,
            "text_encoder": sum(p.numel() for p in encoder.parameters()), "block": largest_block,
            "dim": model.config.dim, "blocks": len(model.layers) + len(model.noise_refiner) + len(model.context_refiner)}


def activation_bytes(dim: int, blocks: int, side: int = 1024, caption_tokens: int = 512, ffn: int = 10240) -> int:
    tokens = (side // 16) ** 2 + caption_tokens
    saved = tokens * dim * 4 * blocks
    one_block = tokens * (4 * dim + 3 * ffn + dim) * 2
    head = sum(4 * (side >> level) ** 2 * width * 2 for level, width in enumerate((64, 128, 256, 512)))
    return saved + one_block + head


def plan(n: int = PROCESSES) -> dict[str, dict[str, float]]:
    c = parameter_counts()
    activations = activation_bytes(c["dim"], c["blocks"])
    common = {
        "gradients (fp32, trained, 1/N)": c["trainable"] * 4 / n,
        "AdamW moments (2 x fp32, 1/N)": c["trainable"] * 8 / n,
        "text encoder (frozen, bf16: transfer-1k.yaml's text_encoder_dtype)": c["text_encoder"] * 2,
        "activations (checkpointed, batch 1, 1K)": activations,
    }
    zero2 = {WEIGHTS: c["model"] * 4, **common}
    fsdp = {WEIGHTS: c["model"] * 4 / n + 2 * c["block"] * 4, **common}
    table = {"DeepSpeed ZeRO-2": zero2, "FSDP v2 (full shard)": fsdp}
    return {name: {**{k: v / GB for k, v in rows.items()}, "total": sum(rows.values()) / GB} for name, rows in table.items()} | {
        "counts": {k: float(v) for k, v in c.items()}}


def markdown(result: dict) -> str:
    c = result["counts"]
    names = ["DeepSpeed ZeRO-2", "FSDP v2 (full shard)"]
    keys = list(dict.fromkeys(k for name in names for k in result[name] if k != "total"))
    lines = [
        f"Per-GPU memory of the full 1K transfer on {PROCESSES} x {CARD_GB} GB (`python -m training.memory_plan`; "
        f"arithmetic, not measured): {c['model'] / 1e9:.2f}B parameters, {c['trainable'] / 1e9:.2f}B trained, "
        f"text encoder {c['text_encoder'] / 1e9:.2f}B.",
        "",
        "| per GPU | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{result[name][key]:.1f} GB" for name in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{result[name]['total']:.1f} GB**" for name in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    text = markdown(plan())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Training memory plan\n\n" + text)
    print(text)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
