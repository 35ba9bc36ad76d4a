"""Pre-train the tiny text encoder on the toy grammar: the toy scale's stand-in for a pretrained LLM.

At full scale the text encoder is Qwen3-4B, frozen, whose features already say which colour belongs to which
shape. A freshly initialised tiny Qwen3 does not: its features differ between "a red circle" and "a blue circle"
almost only at the colour word itself (per-token cosine 0.96-0.99 at every later token), so the DiT would have to
learn to bind words by their positions from images alone, which costs it most of a CPU budget.

This stage gives the tiny encoder what a pretrained LLM has: at every token, linear probes on the features the
pipelines use (`hidden_states[-2]`, read exactly as `ZImagePipeline.encode_prompt` reads them) must recover the
whole scene the prompt describes so far: category, each object's shape, colour and count, the relation and the
background. A causal encoder trained so carries each colour forward to its shape and the whole scene to the
template's closing tokens. It is then frozen, as at full scale, and both the source and the pixel model read it.

    python -m training.text_encoder --config training/configs/toy/text-encoder.yaml
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, Qwen3Config, Qwen3Model

from l2p.tokenizer import build_word_tokenizer
from l2p.toyworld import BACKGROUNDS, CATEGORIES, COLORS, RELATIONS, SHAPES, VOCABULARY, parse_prompt, sample_prompts

from .config import parse_command_line
from .files import atomic_directory

# The scene as classification slots; index 0 of every slot but the category means "none".
SLOTS = {
    "category": list(CATEGORIES),
    "shape_1": ["none", *SHAPES],
    "color_1": ["none", *COLORS],
    "count_1": ["none", "1", "2", "3", "4"],
    "shape_2": ["none", *SHAPES],
    "color_2": ["none", *COLORS],
    "relation": ["none", *RELATIONS],
    "background": ["none", *BACKGROUNDS],
}


@dataclass
class TextEncoderConfig:
    output_dir: str = "runs/toy/text-encoder"
    seed: int = 0
    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 30
    eval_prompts: int = 512
    log_every: int = 50
    text_encoder: dict = field(default_factory=dict)  # transformers Qwen3Config fields
    threads: int = 0


def scene_targets(prompt: str) -> list[int]:
    """The prompt's scene as one class index per slot of `SLOTS`."""
    parsed = parse_prompt(prompt)
    first = parsed.objects[0]
    second = parsed.objects[1] if len(parsed.objects) > 1 else None
    values = {
        "category": parsed.category,
        "shape_1": first.shape,
        "color_1": first.color or "none",
        "count_1": str(first.count),
        "shape_2": second.shape if second else "none",
        "color_2": (second.color or "none") if second else "none",
        "relation": parsed.relation or "none",
        "background": parsed.background or "none",
    }
    return [SLOTS[slot].index(values[slot]) for slot in SLOTS]


def encode_features(text_encoder: Qwen3Model, tokenizer: PreTrainedTokenizerBase, prompts: list[str]):
    """(features, mask) as `ZImagePipeline._encode_prompt` computes them: the chat template with thinking
    enabled, right padding, `hidden_states[-2]`. Padded to the longest prompt rather than to 512 tokens, which
    changes nothing for the real tokens of a causal encoder."""
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True, enable_thinking=True)
        for p in prompts
    ]
    inputs = tokenizer(texts, padding="longest", return_tensors="pt")
    mask = inputs.attention_mask.bool()
    features = text_encoder(input_ids=inputs.input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    return features, mask


class ScenePrompts(nn.Module):
    """Linear probes from every token's features to the scene slots."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.heads = nn.ModuleDict({slot: nn.Linear(hidden_size, len(values)) for slot, values in SLOTS.items()})

    def loss(self, features: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, prefix_known: torch.Tensor):
        """Cross-entropy of every slot at every real token where the prompt so far determines it."""
        total = features.new_zeros(())
        accuracy = {}
        for index, (slot, head) in enumerate(self.heads.items()):
            logits = head(features)  # (B, L, classes)
            wanted = targets[:, index][:, None].expand(-1, logits.shape[1])
            used = mask & prefix_known[:, :, index]
            total = total + F.cross_entropy(logits[used], wanted[used])
            last = mask.sum(1) - 1  # the template's final token, which has seen the whole prompt
            accuracy[slot] = (logits[torch.arange(len(last)), last].argmax(-1) == targets[:, index]).float().mean().item()
        return total / len(self.heads), accuracy


def prefix_knowledge(tokenizer: PreTrainedTokenizerBase, prompts: list[str], length: int) -> torch.Tensor:
    """(B, L, slots) bool: whether the tokens up to each position determine each slot's value.

    A slot is known once its deciding word has been read (the shape or count word for an object, the colour,
    the relation's first word, the background colour), and every slot is known from the token after the
    prompt on: past the last word, an absent object, relation or background is known to be absent."""
    known = torch.zeros(len(prompts), length, len(SLOTS), dtype=torch.bool)
    for b, prompt in enumerate(prompts):
        words = prompt.split()
        start = _prompt_start(tokenizer)
        nouns = 0
        for i, word in enumerate(words):
            position = start + i
            deciding = set()
            if word in SHAPES or word.rstrip("s") in SHAPES:
                nouns += 1
                deciding |= {f"shape_{nouns}", f"count_{nouns}"} if nouns == 1 else {f"shape_{nouns}"}
            if word in COLORS:
                deciding.add(f"color_{nouns + 1}")
            if word in {r.split()[0] for r in RELATIONS}:
                deciding.add("relation")
            if word in BACKGROUNDS and i + 1 < len(words) and words[i + 1] == "background":
                deciding.add("background")
            for slot in deciding:
                if slot in SLOTS:
                    known[b, position:, list(SLOTS).index(slot)] = True
        known[b, start + len(words):] = True
    return known


def _prompt_start(tokenizer: PreTrainedTokenizerBase) -> int:
    """Index of the prompt's first word in the chat template (after `<|im_start|>user`)."""
    marker = "qqq"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True, enable_thinking=True)
    ids = tokenizer(text).input_ids
    return ids.index(tokenizer.unk_token_id)


def build_text_encoder(config: TextEncoderConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen3Model:
    torch.manual_seed(config.seed)
    return Qwen3Model(Qwen3Config(vocab_size=len(tokenizer), **config.text_encoder))


def train(config: TextEncoderConfig) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    tokenizer = build_word_tokenizer(VOCABULARY)
    encoder = build_text_encoder(config, tokenizer).train()
    probes = ScenePrompts(encoder.config.hidden_size)
    parameters = list(encoder.parameters()) + list(probes.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / config.warmup_steps) * max(0.05, 1 - s / config.steps)
    )
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def batch(prompts):
        features, mask = encode_features(encoder, tokenizer, prompts)
        targets = torch.tensor([scene_targets(p) for p in prompts])
        return probes.loss(features, mask, targets, prefix_knowledge(tokenizer, prompts, mask.shape[1]))

    with open(output / "log.csv", "w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["step", "loss", "final_token_accuracy", "seconds"])
        for step in range(config.steps):
            prompts = [p for _, p in sample_prompts(config.batch_size, seed=config.seed * 1_000_003 + step)]
            loss, accuracy = batch(prompts)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            if step % config.log_every == 0 or step == config.steps - 1:
                mean = float(np.mean(list(accuracy.values())))
                writer.writerow([step, f"{loss.item():.5f}", f"{mean:.4f}", f"{time.time() - started:.1f}"])
                log.flush()
                print(f"text encoder step {step}: loss {loss.item():.4f}, final-token accuracy {mean:.3f}", flush=True)

    encoder.eval()
    with torch.no_grad():
        held_out = [p for _, p in sample_prompts(config.eval_prompts, seed=10_007 + config.seed)]
        _, accuracy = batch(held_out)
    with atomic_directory(output / "text_encoder") as folder:
        encoder.save_pretrained(folder)
    summary = {"final_token_accuracy": accuracy, "seconds": round(time.time() - started, 1)}
    print(f"text encoder: final-token slot accuracy on {config.eval_prompts} prompts {accuracy}")
    return summary


def main(argv=None):
    _, config = parse_command_line(TextEncoderConfig, __doc__, argv)
    train(config)


if __name__ == "__main__":
    main()
