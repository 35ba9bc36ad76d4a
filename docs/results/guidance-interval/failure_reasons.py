"""Why a pipeline's toy samples fail: the evaluator's reason for each prompt of one category, counted.

A measurement record for docs/results.md ("Guidance at the first steps empties the canvas"), not library code.
The prompts and seeds are `training.evaluate toy`'s (prompt i of the set drawn with `--seed`, sampled with seed + i),
so the counts belong to the same images its scores do.

    PYTHONPATH=. python docs/results/guidance-interval/failure_reasons.py assets/tiny-l2p --category single_object \
        [--guidance 3.0] [--cfg-start 0.08]
"""

import argparse
import collections

import torch

from l2p.toyworld import sample_prompts
from l2p.toyworld.evaluate import check
from training.evaluate import generate, load_pipeline, run_settings


def reason(result) -> str:
    if result.passed:
        return "passed"
    if not result.objects:
        return "empty canvas"
    return "an extra or missing object" if result.reason.startswith("expected") else "wrong objects"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--category", default="single_object")
    parser.add_argument("--prompts", type=int, default=300, help="the size of the set the category's prompts are taken from")
    parser.add_argument("--seed", type=int, default=700_000)
    parser.add_argument("--guidance", type=float, default=None, help="L2P's convention; default: the folder's")
    parser.add_argument("--cfg-start", type=float, default=None, help="default: the folder's")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipe = load_pipeline(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    settings = run_settings(args.pipeline, pipe, guidance=args.guidance, cfg_start=args.cfg_start)
    chosen = [(i, prompt) for i, (category, prompt) in enumerate(sample_prompts(args.prompts, seed=args.seed))
              if category == args.category]
    images = generate(pipe, [prompt for _, prompt in chosen], [args.seed + i for i, _ in chosen], settings)
    counts = collections.Counter(reason(check(image, prompt)) for (_, prompt), image in zip(chosen, images))
    print({"pipeline": args.pipeline, "category": args.category, "guidance": settings.guidance_scale,
           "cfg_start": settings.cfg_start, "prompts": len(chosen), **dict(counts.most_common())})


if __name__ == "__main__":
    main()
