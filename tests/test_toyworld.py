"""The toy world: grammar, layouts, rendering, and the evaluator's pass rates on right and wrong images."""

import io
import time
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageFilter

from l2p.toyworld import (
    BACKGROUNDS,
    CATEGORIES,
    COLORS,
    SHAPES,
    VOCABULARY,
    CheckResult,
    Layout,
    ObjectSpec,
    ParsedPrompt,
    check,
    layout_prompt,
    parse_prompt,
    place_objects,
    render_layout,
    render_prompt,
    sample_prompts,
    score,
)
from l2p.toyworld.render import EVALUATED_SIZES, GAP, MARGIN, MAX_SIZE, MIN_SIZE


def pass_rate(images_and_prompts) -> tuple[float, list[str]]:
    failures, total = [], 0
    for image, prompt in images_and_prompts:
        result = check(image, prompt)
        total += 1
        if not result.passed:
            failures.append(f"{prompt!r}: {result.reason}")
    return 1 - len(failures) / total, failures


# --- grammar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a circle", ParsedPrompt("single_object", (ObjectSpec("circle"),))),
        ("An triangle", ParsedPrompt("single_object", (ObjectSpec("triangle"),))),
        ("a square and an circle", ParsedPrompt("two_object", (ObjectSpec("square"), ObjectSpec("circle")))),
        ("one circle", ParsedPrompt("counting", (ObjectSpec("circle", count=1),))),
        ("four triangles", ParsedPrompt("counting", (ObjectSpec("triangle", count=4),))),
        ("an orange square", ParsedPrompt("colors", (ObjectSpec("square", "orange"),))),
        (
            "a circle left of a square",
            ParsedPrompt("position", (ObjectSpec("circle"), ObjectSpec("square")), relation="left of"),
        ),
        (
            "a triangle below a triangle",
            ParsedPrompt("position", (ObjectSpec("triangle"), ObjectSpec("triangle")), relation="below"),
        ),
        (
            "a red circle and a blue circle",
            ParsedPrompt("color_attr", (ObjectSpec("circle", "red"), ObjectSpec("circle", "blue"))),
        ),
        (
            "  Two Squares on a Gray background.  ",
            ParsedPrompt("counting", (ObjectSpec("square", count=2),), background="gray"),
        ),
        (
            "a green triangle right of a circle on an black background",
            None,  # out of grammar: position objects carry no colour
        ),
        (
            "a yellow circle and a purple triangle on a black background",
            ParsedPrompt(
                "color_attr", (ObjectSpec("circle", "yellow"), ObjectSpec("triangle", "purple")), background="black"
            ),
        ),
    ],
)
def test_parse(prompt, expected):
    if expected is None:
        with pytest.raises(ValueError):
            parse_prompt(prompt)
    else:
        assert parse_prompt(prompt) == expected


def test_parse_background_default():
    parsed = parse_prompt("a circle")
    assert parsed.background is None and parsed.canvas_background == "white"
    assert parse_prompt("a circle on a white background").background == "white"


@pytest.mark.parametrize(
    "prompt, detail",
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ("a pink circle", "'pink'"),
        ("a circle and a hexagon", "'hexagon'"),
        ("circle a", "accepted sentence"),
        ("two circle", "plural"),
        ("one circles", "singular"),
        ("a red circle left of a square", "accepted sentence"),
        ("a circle on a red background", "accepted sentence"),
    ],
)
def test_parse_errors_quote_prompt_and_list_forms(prompt, detail):
    with pytest.raises(ValueError) as error:
        parse_prompt(prompt)
    message = str(error.value)
    assert repr(prompt) in message and detail in message
    for form in ("a {shape}", "a {shape} and a {shape}", "{one|two|three|four} {shape}s", "a {color} {shape}"):
        assert form in message
    assert "{left of|right of|above|below}" in message and "background" in message


def test_sample_prompts_cover_categories_and_are_deterministic():
    prompts = sample_prompts(6, seed=3)
    assert [category for category, _ in prompts] == list(CATEGORIES)
    assert sample_prompts(60, seed=3) == sample_prompts(60, seed=3)
    assert sample_prompts(60, seed=3) != sample_prompts(60, seed=4)
    assert {c for c, _ in sample_prompts(10, 0, categories=["position"])} == {"position"}


def test_sampled_prompts_parse_back_and_use_the_vocabulary():
    prompts = sample_prompts(600, seed=0)
    with_background = 0
    for category, prompt in prompts:
        parsed = parse_prompt(prompt)
        assert parsed.category == category and parsed.text == prompt
        assert set(prompt.split()) <= set(VOCABULARY)
        with_background += parsed.background is not None
    assert 0.2 < with_background / len(prompts) < 0.4
    assert VOCABULARY == sorted(set(VOCABULARY))
    assert {"an", "circles", "left", "of", "gray"} <= set(VOCABULARY)


# --- layout and rendering --------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(MIN_SIZE, MAX_SIZE), EVALUATED_SIZES])
def test_layouts_obey_size_gap_margin_and_relation_rules(sizes):
    for i, (category, prompt) in enumerate(sample_prompts(600, seed=1)):
        layout = layout_prompt(prompt, seed=i, sizes=sizes)
        parsed = parse_prompt(prompt)
        assert len(layout.objects) == sum(spec.count for spec in parsed.objects)
        assert layout.background == parsed.canvas_background
        for k, obj in enumerate(layout.objects):
            assert sizes[0] <= obj.size <= sizes[1]
            assert MARGIN + obj.size / 2 <= obj.x <= 1 - MARGIN - obj.size / 2
            assert MARGIN + obj.size / 2 <= obj.y <= 1 - MARGIN - obj.size / 2
            for other in layout.objects[k + 1 :]:
                reach = (obj.size + other.size) / 2 + GAP
                assert abs(obj.x - other.x) >= reach or abs(obj.y - other.y) >= reach
        for spec, obj in zip(parsed.objects, layout.objects):
            assert obj.shape == spec.shape and spec.color in (None, obj.color)
        if parsed.relation:
            a, b = layout.objects
            offset = {"left of": b.x - a.x, "right of": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}
            assert offset[parsed.relation] > 0.05


def test_render_is_deterministic_and_canonical():
    image = render_prompt("a red circle and a blue square", 64, seed=5)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert image.tobytes() == render_prompt("  A Red Circle and a Blue Square. ", 64, seed=5).tobytes()
    assert image.tobytes() != render_prompt("a red circle and a blue square", 64, seed=6).tobytes()


def test_render_is_antialiased():
    pixels = np.asarray(render_prompt("a blue circle", 128, seed=0)).reshape(-1, 3)
    colors = {tuple(p) for p in pixels}
    assert {BACKGROUNDS["white"], COLORS["blue"]} <= colors
    assert len(colors) > 10  # the rim blends the two


def test_same_seed_same_layout_at_every_resolution():
    sizes = [128, 512, (384, 256), (200, 360)]
    for i, (_, prompt) in enumerate(sample_prompts(12, seed=2)):
        centres = []
        for size in sizes:
            image = render_prompt(prompt, size, seed=i, sizes=EVALUATED_SIZES)
            result = check(image, prompt)
            assert result.passed, (prompt, size, result.reason)
            width, height = image.size
            centres.append(sorted((obj.center[0] / width, obj.center[1] / height) for obj in result.objects))
        for other in centres[1:]:
            assert np.allclose(centres[0], other, atol=0.02), (prompt, centres)


@pytest.mark.parametrize("size", [(320, 180), (180, 320), (1000, 100), (333, 257)])
def test_non_square_canvases(size):
    pairs = [(render_prompt(p, size, seed=i, sizes=EVALUATED_SIZES), p) for i, (_, p) in enumerate(sample_prompts(24, seed=4))]
    assert all(image.size == size for image, _ in pairs)
    rate, failures = pass_rate(pairs)
    assert rate == 1.0, failures


# --- evaluator -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA"])
def test_check_accepts_any_mode(mode):
    prompt = "a yellow square and a purple triangle"
    image = render_prompt(prompt, 200, seed=1)
    converted = image.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else image.convert(mode)
    result = check(converted, prompt)
    assert isinstance(result, CheckResult)
    if mode in ("RGBA", "P"):
        assert result.passed, result.reason
    else:  # grey levels cannot carry the colours
        assert not result.passed and result.reason


def test_transparent_pixels_count_as_white():
    image = render_prompt("a green circle", 128, seed=0).convert("RGBA")
    pixels = np.asarray(image).copy()
    pixels[..., 3] = np.where((pixels[..., :3] == BACKGROUNDS["white"]).all(axis=-1), 0, 255)
    assert check(Image.fromarray(pixels, "RGBA"), "a green circle on a white background").passed


def test_check_reports_objects_and_reasons():
    with pytest.raises(ValueError, match="outside the toy-world grammar"):
        check(render_prompt("a circle", 64), "a red circle left of a square")
    ok = check(render_prompt("a circle left of a square", 256, seed=0), "a circle left of a square")
    assert ok.passed and ok.reason == "" and ok.background == "white"
    circle = next(obj for obj in ok.objects if obj.shape == "circle")
    left, top, right, bottom = circle.bbox
    assert circle.center == ((left + right) / 2, (top + bottom) / 2)
    assert 0.5 < circle.area / ((right - left) * (bottom - top)) < 1.0
    wrong = check(render_prompt("a circle left of a square", 256, seed=0), "a circle right of a square")
    assert not wrong.passed and "not right of" in wrong.reason


def test_background_is_checked_only_when_named():
    image = render_prompt("a circle on a black background", 128, seed=0)
    assert check(image, "a circle on a black background").passed
    assert check(image, "a circle").passed
    result = check(image, "a circle on a gray background")
    assert not result.passed and "background" in result.reason


@pytest.mark.parametrize("size, n", [(128, 300), (256, 300), (1024, 60), (4096, 40)])
def test_passes_own_renders(size, n):
    pairs = ((render_prompt(p, size, seed=i, sizes=EVALUATED_SIZES), p) for i, (_, p) in enumerate(sample_prompts(n, seed=10)))
    rate, failures = pass_rate(pairs)
    print(f"own renders at {size} px: pass rate {rate:.3f} over {n}")
    assert rate >= 0.99, failures


def _jpeg(image):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=50)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _noise(image, rng):
    noisy = np.asarray(image, np.float32) + rng.normal(0, 8, (image.size[1], image.size[0], 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("degradation", ["blur", "jpeg", "noise"])
def test_passes_degraded_renders(degradation):
    rng = np.random.default_rng(0)
    degrade = {
        "blur": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
        "jpeg": _jpeg,
        "noise": lambda image: _noise(image, rng),
    }[degradation]
    pairs = ((degrade(render_prompt(p, 256, seed=i, sizes=EVALUATED_SIZES)), p) for i, (_, p) in enumerate(sample_prompts(300, seed=20)))
    rate, failures = pass_rate(pairs)
    print(f"{degradation} at 256 px: pass rate {rate:.3f}")
    assert rate >= 0.95, failures


def _wrong_image(prompt: str, seed: int, kind: str) -> Image.Image:
    """The prompt's render with one thing made false."""
    parsed = parse_prompt(prompt)
    layout = layout_prompt(parsed, seed, EVALUATED_SIZES)
    objects = list(layout.objects)
    rng = np.random.default_rng(seed)
    i = int(rng.integers(len(objects)))
    if kind == "extra":  # a fresh layout with one more object of any kind
        specs = [(obj.shape, obj.color) for obj in objects]
        specs.append((SHAPES[rng.integers(len(SHAPES))], list(COLORS)[rng.integers(len(COLORS))]))
        objects = list(place_objects(specs, rng, parsed.relation, EVALUATED_SIZES))
    elif kind == "missing":
        del objects[i]
    elif kind == "color":  # only for prompts that name colours, so that every object has a named one
        objects[i] = replace(objects[i], color=rng.choice([c for c in COLORS if c != objects[i].color]))
    elif kind == "shape":
        objects[i] = replace(objects[i], shape=rng.choice([s for s in SHAPES if s != objects[i].shape]))
    elif kind == "swap":  # the two objects trade places (and sizes, so both still fit)
        a, b = objects
        objects = [replace(a, shape=b.shape, color=b.color), replace(b, shape=a.shape, color=a.color)]
    return render_layout(Layout(tuple(objects), layout.background), 256)


@pytest.mark.parametrize(
    "kind, categories",
    [
        ("extra", None),
        ("missing", None),
        ("color", ["colors", "color_attr"]),
        ("shape", None),
        ("swap", ["position"]),
    ],
)
def test_fails_wrong_images(kind, categories):
    prompts = [p for _, p in sample_prompts(240, seed=30, categories=categories)]
    pairs = ((_wrong_image(p, i, kind), p) for i, p in enumerate(prompts))
    rate, _ = pass_rate(pairs)
    print(f"wrong images ({kind}): fail rate {1 - rate:.3f}")
    assert 1 - rate >= 0.99


def test_speed():
    prompt = "four triangles on a gray background"
    for size, n, budget in [(256, 20, 0.05), (4096, 2, 2.0)]:
        start = time.perf_counter()
        images = [render_prompt(prompt, size, seed=i) for i in range(n)]
        rendered = time.perf_counter()
        assert all(check(image, prompt).passed for image in images)
        checked = time.perf_counter()
        render_s, check_s = (rendered - start) / n, (checked - rendered) / n
        print(f"{size} px: render {1e3 * render_s:.1f} ms, check {1e3 * check_s:.1f} ms")
        assert render_s < budget and check_s < budget  # generous: the CPU is shared


def test_score_arithmetic():
    images = [
        render_prompt("a circle", 128),
        render_prompt("a triangle", 128),  # wrong for "a square"
        render_prompt("two circles", 128),
        render_prompt("a red circle", 128),
    ]
    prompts = ["a circle", "a square", "two circles", "a red circle"]
    scores = score(images, prompts)
    assert scores == pytest.approx({"single_object": 0.5, "counting": 1.0, "colors": 1.0, "overall": 2.5 / 3})
    with pytest.raises(ValueError):
        score(images, prompts[:3])


def test_partial_credit_counts_right_backgrounds_and_object_counts_even_when_prompts_fail():
    from l2p.toyworld import partial_credit

    images = [
        render_prompt("a triangle on a black background", 128),  # wrong shape for its prompt, right background
        render_prompt("two squares on a gray background", 128),  # right count, wrong background
        render_prompt("three circles", 128),  # no background named: only its count is judged
    ]
    prompts = ["a circle on a black background", "two circles on a white background", "two circles"]
    assert score(images, prompts)["overall"] == 0.0
    assert partial_credit(images, prompts) == pytest.approx({"background_match": 0.5, "count_match": 2 / 3})


def test_edge_width_reads_crisp_renders_as_about_a_pixel_and_grows_with_blur():
    from l2p.sharpness import edge_widths, mean_edge_width

    prompts = [prompt for _, prompt in sample_prompts(24, seed=5)]
    renders = [render_prompt(prompt, 256, seed=i) for i, prompt in enumerate(prompts)]
    widths = [mean_edge_width([image.filter(ImageFilter.GaussianBlur(s)) if s else image for image in renders]) for s in (0, 1, 2)]
    assert 0.6 < widths[0] < 1.2
    assert widths[0] + 1.5 < widths[1] < widths[2] - 1.5
    assert abs(mean_edge_width([render_prompt(p, 1024, seed=i) for i, p in enumerate(prompts[:6])]) - widths[0]) < 0.3
    assert edge_widths(Image.new("RGB", (64, 64), "white")) == []


def test_edge_width_measures_the_objects_of_a_grainy_sample_not_its_grain():
    """Per-pixel grain (a pixel model's, at its last sampling steps) must not clump into speck "objects" whose
    1-2 px borders outnumber the real ones: the same objects are measured with grain as without, light grain
    hardly moves their width, and heavy grain along a border widens it instead of hiding it."""
    from l2p.sharpness import edge_widths, mean_edge_width

    prompts = [prompt for _, prompt in sample_prompts(12, seed=5)]
    renders = [render_prompt(prompt, 512, seed=i).filter(ImageFilter.GaussianBlur(1)) for i, prompt in enumerate(prompts)]
    rng = np.random.default_rng(0)

    def grainy(image, std):
        noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, std, (*image.size[::-1], 3))
        return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))

    clean = mean_edge_width(renders)
    for std in (5, 10, 20):
        noisy = [grainy(image, std) for image in renders]
        assert [len(edge_widths(image)) for image in noisy] == [len(edge_widths(image)) for image in renders], std
    assert abs(mean_edge_width([grainy(image, 5) for image in renders]) - clean) < 0.3
    assert mean_edge_width([grainy(image, 20) for image in renders]) > clean + 3
