"""A word-level tokenizer built locally, with a Qwen-style chat template, for tiny text encoders.

Z-Image encodes a prompt by wrapping it in the tokenizer's chat template (`enable_thinking=True`) and
reading the text encoder's second-to-last hidden states. A tokenizer made here, offline, from a word list
(the toy world's vocabulary) carries the same special tokens and template, so `ZImagePipeline`'s prompt
encoding runs unchanged on the tiny models.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD, UNK = "<|endoftext|>", "<unk>"
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]
ROLE_WORDS = ["system", "user", "assistant"]

# Qwen3's layout: one turn per message, then the assistant header; with thinking disabled an empty
# think block follows, as Qwen3 does.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


def build_word_tokenizer(words, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over `words` (unknown words map to `<unk>`)."""
    vocabulary = [PAD, UNK] + CHAT_TOKENS + sorted(set(ROLE_WORDS) | {w.lower() for w in words} | set(".,;:!?'\"-"))
    tokenizer = Tokenizer(WordLevel({word: i for i, word in enumerate(vocabulary)}, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=CHAT_TOKENS,
        model_max_length=model_max_length,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
