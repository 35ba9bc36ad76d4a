"""The prompt-binding diagnostic: colour words swapped exactly, and the shipped source's colours follow them."""

import json
from pathlib import Path

import pytest

from l2p.toyworld import COLORS, parse_prompt, sample_prompts
from training.prompt_binding import COLOUR_CATEGORIES, evaluate_prompt_binding, swap_colours

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def test_swapping_changes_every_colour_and_nothing_else():
    for _, prompt in sample_prompts(60, seed=7, categories=COLOUR_CATEGORIES):
        original, swapped = parse_prompt(prompt), parse_prompt(swap_colours(prompt))  # still the grammar's
        assert len(swapped.objects) == len(original.objects) and swapped.background == original.background
        assert swapped.relation == original.relation
        for before, after in zip(original.objects, swapped.objects):
            assert (after.shape, after.count) == (before.shape, before.count)
            assert before.color in COLORS and after.color in COLORS and after.color != before.color
        colours = [o.color for o in original.objects]
        assert len({o.color for o in swapped.objects}) == len(set(colours))  # distinct colours stay distinct
    assert swap_colours("an orange circle left of a red square") == "a green circle left of a blue square"
    assert swap_colours("two circles on a black background") == "two circles on a black background"


# The least gain each shipped model must show at sigma 0.9 on 16 renders. The source binds its colour words where a
# run decides colours (docs/results.md: +0.137 on 128 renders); the pixel model, warm-started with the token
# alignment and object weighting, +0.103 (+0.139 +- 0.030 on these 16); the least is above the +0.072 of the
# alignment alone (on these 16 too); the paper's recipe alone gave +0.028, and reading colour off the noise ~0.
LEAST_GAIN = {"tiny-source": 0.01, "tiny-l2p": 0.08}


@pytest.mark.parametrize("name", sorted(LEAST_GAIN))
def test_the_shipped_models_objects_take_the_prompts_colours(name, tmp_path):
    result = evaluate_prompt_binding(ASSETS / name, n_images=16, sigmas=(0.9,), out=tmp_path)
    (level,) = result["levels"]
    assert level["colour_word_gain"] > max(LEAST_GAIN[name], 2 * level["colour_word_gain_se"]), level
    assert level["object_colour_error_swapped"] > level["object_colour_error"]
    assert json.loads((tmp_path / "binding.json").read_text())["levels"] == result["levels"]
