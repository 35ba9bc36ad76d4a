"""Write the prompt corpus: JSONL records {id, major, sub, prompt}, deduplicated and resumable.

    python -m training.prompts toy --count 1500 --out runs/toy/prompts.jsonl
    python -m training.prompts llm --model Qwen/Qwen3-8B --count 10000 --out corpus/prompts.jsonl

Toy scale: the toy grammar's sampler (major "toy", sub = the GenEval-style category).
Full scale (reference section 6): for each fine category of the taxonomy an instruction-tuned causal LM
writes detailed prompts as JSON records; the same or another LM then audits each one; only approved
prompts are kept. Appending to an existing file skips what it already holds, so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from l2p.toyworld import sample_prompts

# Reference section 6: 4 major classes, 17 sub-classes (plus "others" buckets).
TAXONOMY = {
    "Nature": ["objects", "cityscape", "food", "plants", "indoor", "landscape", "animals", "others"],
    "Design": ["arts", "posters", "slides", "cartoon", "UI", "others"],
    "People": ["portrait", "sports", "activities", "others"],
    "Text": ["Chinese text", "English text", "others"],
}

GENERATION_INSTRUCTIONS = """You write prompts for training a text-to-image model.
Category: {major} / {sub}. Write {n} different prompts for this category.
Answer with a JSON list only, each element {{"id": "<short unique id>", "major-class": "{major}", "sub-class": "{sub}", "prompt": "<the prompt>"}}.
Each prompt is fluent English, three to five sentences, describing subject, setting, composition, lighting and style in concrete detail.
Any text that should appear in the image is written inside escaped double quotes, e.g. a sign reading \\"OPEN\\".
Posters, slides and interfaces always contain such text. Vary viewpoint, lighting, medium and mood; do not start two prompts the same way.
Nothing sexual, violent or hateful; no real brands, logos, celebrities or copyrighted characters."""

AUDIT_INSTRUCTIONS = """You check prompts for a text-to-image training set and reject anything doubtful.
Reject the prompt if it is a list of tags rather than sentences, if text meant to appear in the image is not inside escaped double quotes,
if it is unsafe (sexual, violent, hateful), or if it names a real brand, logo, celebrity or copyrighted character.
Prompt: {prompt}
Answer with JSON only: {{"is_valid": true or false, "reason": "<one short sentence>"}}"""


def prompt_key(prompt: str) -> str:
    """What counts as the same prompt: case and spacing do not."""
    return " ".join(prompt.lower().split())


def read_existing(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_records(path: Path, records: list[dict], seen: set[str]) -> int:
    """Append records whose normalised prompt is new; one flushed line each, so a crash loses at most one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "a") as stream:
        for record in records:
            key = prompt_key(record["prompt"])
            if key in seen:
                continue
            seen.add(key)
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            stream.flush()
            written += 1
    return written


def toy_prompts(count: int, seed: int, out: Path) -> int:
    existing = read_existing(out)
    seen = {prompt_key(r["prompt"]) for r in existing}
    chosen, records, attempt = set(seen), [], 0
    while len(existing) + len(records) < count and attempt < 50:
        # The grammar has a few thousand distinct prompts; draw fresh batches until enough are new.
        for category, prompt in sample_prompts(count * 2, seed=seed + attempt):
            if prompt_key(prompt) not in chosen and len(existing) + len(records) < count:
                chosen.add(prompt_key(prompt))
                records.append({"id": f"toy-{len(existing) + len(records):06d}", "major": "toy", "sub": category, "prompt": prompt})
        attempt += 1
    return append_records(out, records, seen)


def parse_json(text: str):
    """The first JSON value in an LM answer (models wrap JSON in prose or code fences)."""
    match = re.search(r"(\[.*\]|\{.*\})", text, flags=re.S)
    if not match:
        return None
    try:
        return json.loads(match.group(1))
    except json.JSONDecodeError:
        return None


class LanguageModel:
    """An instruction-tuned `transformers` causal LM answering one chat turn at a time."""

    def __init__(self, name_or_path: str, max_new_tokens: int = 2048):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, device_map="auto" if torch.cuda.is_available() else None)
        self.max_new_tokens = max_new_tokens

    def __call__(self, instruction: str, temperature: float = 0.9) -> str:
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True)
        inputs = self.tokenizer(text, return_tensors="pt").to(self.model.device)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=temperature > 0, temperature=temperature or None)
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def llm_prompts(writer: LanguageModel, auditor: LanguageModel, count: int, out: Path, per_call: int = 5) -> int:
    existing = read_existing(out)
    seen = {prompt_key(r["prompt"]) for r in existing}
    categories = [(major, sub) for major, subs in TAXONOMY.items() for sub in subs]
    written, call = 0, len(existing)
    while len(existing) + written < count:
        major, sub = categories[call % len(categories)]
        call += 1
        answer = parse_json(writer(GENERATION_INSTRUCTIONS.format(major=major, sub=sub, n=per_call)))
        if not isinstance(answer, list):
            continue
        approved = []
        for record in answer:
            prompt = record.get("prompt") if isinstance(record, dict) else None
            if not isinstance(prompt, str) or len(prompt) < 40:
                continue
            verdict = parse_json(auditor(AUDIT_INSTRUCTIONS.format(prompt=prompt), temperature=0))
            if isinstance(verdict, dict) and verdict.get("is_valid") is True:
                approved.append({"id": f"p{len(existing) + written + len(approved):07d}", "major": major, "sub": sub, "prompt": prompt})
        written += append_records(out, approved, seen)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["toy", "llm"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="llm: writer model (local path or hub id)")
    parser.add_argument("--auditor", help="llm: auditing model (defaults to the writer)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.mode == "toy":
        written = toy_prompts(args.count, args.seed, out)
    else:
        if not args.model:
            parser.error("llm mode needs --model")
        writer = LanguageModel(args.model)
        auditor = LanguageModel(args.auditor) if args.auditor and args.auditor != args.model else writer
        written = llm_prompts(writer, auditor, args.count, out)
    print(f"wrote {written} new prompts to {out} ({len(read_existing(out))} in all)")


if __name__ == "__main__":
    main()
