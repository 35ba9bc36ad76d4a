"""The demo's logic (l2p.demo and its helpers) on tiny models: sizes, seeds, previews, estimates, every input
check, failures, cancelling, configuration and loading."""

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import tiny
from browser.server import save_tiny_models
from l2p.bench.costs import CostModel
from l2p.demo import results
from l2p.demo.analysis import detail_box, high_frequency_share, matching_crops, radial_power_spectrum
from l2p.demo import (
    BUILD_COMMAND,
    MAX_SEED,
    CompareResult,
    Demo,
    DemoConfig,
    DemoError,
    GenerateResult,
    MissingAssets,
    Preview,
    ProgressPacer,
    Request,
    SourceDone,
    Waiting,
    load_models,
    x0_preview,
)
from l2p.demo.presets import PRESETS, Geometry, image_size, is_native, preset_for_size, preset_label, resolve_rope
from l2p.device import measure

STEPS = 2
GIB = 2**30


def synthetic_costs(memory_limit=2 * GIB, per_token_s=1e-6, extra_records=(), hr_rule=(4096, 64)):
    """A deterministic cost model: 1 ms + 1 µs (`per_token_s`) per token a step; 100 MB + 100 bytes per pixel at
    the peak; `extra_records` (e.g. a "pixel_hr" measurement, with the `hr_rule` it was measured under) besides."""
    records = []
    for pipeline in ("pixel", "source"):
        for side in (128, 256, 512):
            tokens = (side // 16) ** 2
            records.append(dict(
                pipeline=pipeline, width=side, height=side, step_s=1e-3 + per_token_s * tokens, text_encode_s=0.01,
                peak_memory_bytes=int(1e8 + 100 * side * side), vae_decode_s=1e-3 if pipeline == "source" else None,
                pixels_per_token=16,
            ))
    return CostModel.from_records([*records, *extra_records], memory_limit_bytes=memory_limit, device="test",
                                  hr_rule=hr_rule)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def demo(assets):
    config = DemoConfig(assets=str(assets), steps=STEPS)
    return Demo(load_models(config), config, synthetic_costs(), "synthetic")


def run(iterator):
    events = list(iterator)
    return events[:-1], events[-1]


# -- sizes ----------------------------------------------------------------------------------------------------
def test_presets_are_long_sides_snapped_to_both_pipelines():
    geometry = Geometry(patch_size=16, trained_grid=16)
    assert image_size("native", "1:1", geometry) == (256, 256)
    assert image_size("native", "16:9", geometry) == (256, 144)
    assert image_size("native", "9:16", geometry) == (144, 256)
    assert image_size("native", "4:3", geometry) == (256, 192)
    assert image_size("4K", "16:9", geometry) == (4096, 2304)
    assert image_size("8K", "3:4", geometry) == (6144, 8192)
    hr = Geometry(patch_size=64, trained_grid=64)  # a 4K-native model: sizes are multiples of 64
    assert hr.native_side == 4096 and hr.source_native_side == 1024
    for preset in PRESETS:
        for aspect in ("1:1", "4:3", "3:4", "16:9", "9:16"):
            width, height = image_size(preset, aspect, hr)
            assert width % 64 == 0 and height % 64 == 0
    assert preset_label("4K", hr) == "4K · 4096 px · native"
    assert preset_label("8K", hr) == "8K · 8192 px · zero-shot"
    assert preset_label("native", geometry) == "Native · 256 px · native"


def test_auto_rope_is_the_measured_best_only_past_the_trained_grid():
    assert is_native(256, 144, 16, 16) and not is_native(272, 16, 16, 16)
    assert resolve_rope("auto", 256, 256, 16, 16) is None
    assert resolve_rope("auto", 512, 256, 16, 16) == "yarn"
    assert resolve_rope("none", 4096, 4096, 16, 16) is None
    assert resolve_rope("yarn", 256, 256, 16, 16) == "yarn"
    with pytest.raises(ValueError, match="unknown RoPE strategy"):
        resolve_rope("rotary", 256, 256, 16, 16)


def test_default_size_is_the_models_native_size(demo):
    assert demo.geometry.native_side == 256
    assert demo.size(demo.defaults.preset, demo.defaults.aspect_ratio) == (256, 256)
    assert [value for _, value in demo.preset_choices()] == [*PRESETS, "custom"]
    assert demo.preset_choices()[0][0] == "Native · 256 px · native"
    assert demo.preset_choices()[1][0] == "1K · 1024 px · zero-shot"


# -- generate ---------------------------------------------------------------------------------------------------
def test_generate_streams_x0_previews_then_the_image_at_the_asked_size(demo, monkeypatch):
    monkeypatch.setattr(demo, "preview_interval", 0.0)  # every step's progress (the last one is the result)
    monkeypatch.setattr(demo, "preview_min_run_s", 0.0)  # previews for runs of any length
    request = Request("a red circle", aspect_ratio="4:3", steps=3, guidance=2.0, seed=7)
    previews, result = run(demo.generate(request))
    assert isinstance(result, GenerateResult)
    assert result.image.size == (256, 192) and (result.width, result.height) == (256, 192)
    assert result.seed == 7 and result.native and result.rope is None
    assert [(p.pipeline, p.step, p.total) for p in previews] == [("pixel", 1, 3), ("pixel", 2, 3)]
    assert all(p.image.size == (256, 192) for p in previews)
    # A run estimated under the threshold still says its progress, without the previews' images.
    monkeypatch.setattr(demo, "preview_min_run_s", demo.plan(request).estimate.seconds * 1.01)
    previews, result = run(demo.generate(request))
    assert [(p.step, p.image) for p in previews] == [(1, None), (2, None)] and result.image.size == (256, 192)


def test_progress_is_paced_so_fast_steps_do_not_flood_the_page(demo, monkeypatch):
    monkeypatch.setattr(demo, "preview_interval", 60.0)
    previews, result = run(demo.generate(Request("a red circle", steps=4)))
    assert previews == [] and result.image.size == (256, 256)
    pacer = ProgressPacer(total=10, interval=0.05)
    assert not pacer.due(1)  # too soon after the start
    time.sleep(0.06)
    assert pacer.due(2) and not pacer.due(3)  # then at most once per interval
    time.sleep(0.06)
    assert not pacer.due(10)  # never for the last step: the result follows


def test_same_seed_same_image_and_a_random_seed_is_reported(demo):
    _, first = run(demo.generate(Request("a blue square", steps=STEPS, seed=11)))
    _, again = run(demo.generate(Request("a blue square", steps=STEPS, seed=11)))
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    _, drawn = run(demo.generate(Request("a blue square", steps=STEPS, seed=11, randomize_seed=True)))
    assert 0 <= drawn.seed <= MAX_SEED
    _, replayed = run(demo.generate(Request("a blue square", steps=STEPS, seed=drawn.seed)))
    assert np.array_equal(np.asarray(drawn.image), np.asarray(replayed.image))


def test_zero_shot_size_uses_yarn_under_auto(demo):
    _, result = run(demo.generate(Request("a red circle", preset="1K", aspect_ratio="9:16", steps=1, guidance=1.0)))
    assert result.image.size == (576, 1024) and not result.native and result.rope == "yarn"


def test_x0_preview_is_downscaled_to_its_long_side():
    preview = x0_preview(torch.zeros(1, 3, 1024, 2048), side=512)
    assert preview.size == (512, 256)
    assert x0_preview(torch.ones(1, 3, 64, 32)).getpixel((0, 0)) == (255, 255, 255)


# -- compare ----------------------------------------------------------------------------------------------------
def test_compare_runs_both_on_the_same_seed_and_measures_every_stage(demo, monkeypatch):
    monkeypatch.setattr(demo, "preview_interval", 0.0)
    events, result = run(demo.compare(Request("a red circle and a blue square", aspect_ratio="16:9", steps=2,
                                              guidance=2.0, seed=3, source_steps=3, source_guidance=1.0)))
    assert isinstance(result, CompareResult)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Preview"] * 2 + ["SourceDone"] + ["Preview"]
    assert [e.pipeline for e in events if isinstance(e, Preview)] == ["source"] * 2 + ["pixel"]
    assert isinstance(events[2], SourceDone) and events[2].seed == 3
    assert result.source_image.size == result.pixel_image.size == (256, 144)
    assert result.seed == 3 and result.steps == {"source": 3, "pixel": 2}
    assert result.shares_text_encoder and demo.models.pixel.text_encoder is demo.models.source.text_encoder
    assert [(s.pipeline, s.stage) for s in result.stages] == [
        ("shared", "text encoding"), ("source", "denoising"), ("source", "VAE decode"), ("pixel", "denoising")]
    assert all(s.seconds > 0 and s.peak_bytes > 0 for s in result.stages)

    headers, rows = Demo.cost_table(result)
    assert headers == ["pipeline", "stage", "time (s)", "ms / step", "weights (MiB)", "peak (MiB)", "working (MiB)"]
    stages = [(row[0], row[1]) for row in rows]
    assert stages == [
        ("latent", "text encoding (shared)"), ("latent", "denoising × 3"), ("latent", "VAE decode"), ("latent", "total"),
        ("pixel", "text encoding (shared)"), ("pixel", "denoising × 2"), ("pixel", "decode: none (no VAE)"),
        ("pixel", "total"),
    ]
    # One meaning per column: a total's peak and working memory are its stages' highest, never weights + something.
    for name, pipeline in (("latent", "source"), ("pixel", "pixel")):
        own = [row for row in rows if row[0] == name and row[5] is not None and row[1] != "total"]
        total = next(row for row in rows if row[0] == name and row[1] == "total")
        assert total[5] == max(row[5] for row in own) and total[6] == max(row[6] for row in own)
        assert total[4] == pytest.approx(result.weights[pipeline] / 2**20, abs=0.1)
    totals = {row[0]: row[2] for row in rows if row[1] == "total"}
    assert totals["latent"] == pytest.approx(result.total_seconds("source"), abs=1e-3)
    assert result.total_seconds("source") > result.stages[1].seconds

    # Crops of one region, enlarged by a whole factor; spectra on a shared frequency axis.
    left, top, right, bottom = result.crop_box
    assert right - left == bottom - top == 72 and result.crop_factor == 3
    assert result.crops["source"].size == result.crops["pixel"].size == (216, 216)
    crop = result.pixel_image.crop(result.crop_box).resize((216, 216), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(crop), np.asarray(result.crops["pixel"]))
    rows = Demo.spectrum_rows(result)
    assert {row["image"] for row in rows} == {"latent source (VAE decoded)", "pixel (L2P)"}
    assert all(0 < row["cycles per pixel"] <= 0.5 for row in rows)
    assert set(Demo.high_frequency_shares(result)) == {"source", "pixel"}


def test_source_guidance_maps_to_z_image_scale(demo, monkeypatch):
    seen = {}
    source = demo.models.source
    original = type(source).__call__

    def spy(self, *args, **kwargs):
        seen["guidance_scale"] = kwargs["guidance_scale"]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(source), "__call__", spy)
    run(demo.compare(Request("a red circle", steps=1, guidance=1.0, seed=0, source_steps=1, source_guidance=3.0)))
    # neg + 3 (pos - neg) is Z-Image's pos + 2 (pos - neg).
    assert seen["guidance_scale"] == pytest.approx(2.0)


# -- estimates --------------------------------------------------------------------------------------------------
def test_estimates_for_every_preset_before_running(demo):
    rows = demo.preset_rows("1:1", 30, 2.0)
    assert [row[0] for row in rows] == ["Native", "1K", "2K", "4K", "8K"]
    assert [row[2] for row in rows] == ["native", "zero-shot", "zero-shot", "zero-shot", "zero-shot"]
    assert rows[0][1] == "256×256" and rows[-1][1] == "8192×8192"
    assert rows[-1][4].endswith("(too much)") and not rows[0][4].endswith("(too much)")
    summary = demo.run_summary(Request("", preset="1K", aspect_ratio="16:9", steps=30, guidance=2.0))
    assert summary.startswith("1024×576 · zero-shot · RoPE yarn · ~")
    for preset in ("native", "2K", "8K"):
        for kind in ("generate", "compare"):
            request = Request("x", preset=preset, steps=30)
            seconds = demo.plan(request, kind).estimate.seconds
            assert demo.gpu_seconds(request, kind) == min(120, max(20, int(np.ceil(seconds * 1.5 + 10))))
    request = Request("x", preset="2K", steps=30)
    assert demo.plan(request, "compare").estimate.seconds > demo.plan(request).estimate.seconds


def test_no_cost_model_means_no_estimate_and_no_memory_check(assets):
    config = DemoConfig(assets=str(assets), steps=STEPS)
    bare = Demo(load_models(config), config, None, "none")
    assert bare.estimate("pixel", 256, 256, 2, 2.0) is None
    assert bare.problems(Request("a red circle", preset="8K")) == {}
    assert bare.preset_rows("1:1", 2, 2.0)[0][3:] == ["?", "?", "?", "?"]
    assert bare.gpu_seconds(Request("a", steps=2)) == 120


# -- input checks -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, field, message",
    [
        (dict(prompt=""), "prompt", "Enter a prompt: it is empty."),
        (dict(prompt=" \n\t "), "prompt", "Enter a prompt: it is only whitespace."),
        (dict(prompt="red " * 600), "prompt", "The prompt is 600 tokens long; the text encoder reads at most 507 tokens "
                                                "of it (512 with its chat template). Shorten it by 93 tokens."),
        (dict(negative_prompt="red " * 510), "negative_prompt", "The negative prompt is 510 tokens long"),
        (dict(preset="16K"), "preset", "Unknown resolution preset '16K'; choose one of: native, 1K, 2K, 4K, 8K, custom."),
        (dict(aspect_ratio="2:1"), "aspect_ratio", "Unknown aspect ratio '2:1'; choose one of: 1:1, 4:3, 3:4, 16:9, 9:16."),
        (dict(rope="rotary"), "rope", "Unknown RoPE strategy 'rotary'; choose one of: auto, none, pi, ntk, yarn, dype."),
        (dict(steps=0), "steps", "Steps must be a whole number from 1 to 100, got 0."),
        (dict(steps=101), "steps", "Steps must be a whole number from 1 to 100, got 101."),
        (dict(steps=2.5), "steps", "Steps must be a whole number from 1 to 100, got 2.5."),
        (dict(guidance=-0.5), "guidance", "Guidance must be between 0 and 10, got -0.5."),
        (dict(guidance=10.5), "guidance", "Guidance must be between 0 and 10, got 10.5."),
        (dict(guidance=float("nan")), "guidance", "Guidance must be between 0 and 10, got nan."),
        (dict(seed=-1), "seed", f"Seed must be a whole number from 0 to {MAX_SEED}, got -1."),
        (dict(preset="8K"), "preset", "8192×8192 needs about 12.6 GiB of memory for the pixel model, more than this "
                                      "device's 2.0 GiB. Choose a smaller preset."),
    ],
)
def test_every_bad_input_gets_its_own_message(demo, changes, field, message):
    request = Request(**{"prompt": "a red circle", "steps": 2, "guidance": 2.0, **changes})
    problems = demo.problems(request)
    assert list(problems) == [field]
    assert problems[field].startswith(message)
    with pytest.raises(DemoError, match="^" + message[:30].replace("(", r"\(").replace("?", r"\?")):
        next(demo.generate(request))


def test_compare_checks_the_source_settings_and_both_memory_estimates(demo):
    problems = demo.problems(Request("a", steps=2, guidance=2.0, source_steps=0, source_guidance=12.0), "compare")
    assert problems == {
        "source_steps": "Source steps must be a whole number from 1 to 100, got 0.",
        "source_guidance": "Source guidance must be between 0 and 10, got 12.0.",
    }
    assert demo.problems(Request("a", steps=2, guidance=2.0, source_steps=2, source_guidance=2.0), "compare") == {}
    message = demo.problems(Request("a", preset="8K", steps=2, guidance=1.0, source_steps=2, source_guidance=1.0),
                            "compare")["preset"]
    assert "needs about" in message and "2.0 GiB" in message


def test_random_seed_skips_the_seed_check_and_prompts_outside_the_grammar_are_fine(demo):
    assert demo.problems(Request("a cat riding a bicycle at dusk", seed=-5, randomize_seed=True)) == {}


def test_time_limit_from_the_configuration(assets):
    config = DemoConfig(assets=str(assets), steps=STEPS, max_seconds=1.0)
    limited = Demo(load_models(config), config, synthetic_costs(memory_limit=None), "synthetic")
    assert limited.problems(Request("a", steps=2)) == {}
    message = limited.problems(Request("a", preset="2K", steps=100))["preset"]
    assert message.startswith("2048×2048 would take about") and "over this app's limit of 1.0 s" in message


# -- failures and cancelling ----------------------------------------------------------------------------------------
def test_out_of_memory_is_reported_and_the_demo_keeps_working(demo, monkeypatch):
    transformer = demo.models.pixel.transformer

    def fail(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(transformer, "forward", fail)
    with pytest.raises(DemoError, match=r"^Out of memory at 256×256 on CPU .*estimate was .*still running"):
        list(demo.generate(Request("a red circle", steps=STEPS)))
    monkeypatch.setattr(transformer, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(DemoError, match=r"^The run failed \(RuntimeError: boom\)"):
        list(demo.compare(Request("a red circle", steps=STEPS, source_steps=1)))
    monkeypatch.undo()
    assert not demo.lock.locked()
    _, result = run(demo.generate(Request("a red circle", steps=STEPS)))
    assert result.image.size == (256, 256)


def test_closing_a_run_interrupts_the_pipeline(demo, monkeypatch):
    monkeypatch.setattr(demo, "preview_interval", 0.0)
    calls = []
    transformer = demo.models.pixel.transformer
    transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        stream = demo.generate(Request("a red circle", steps=50, guidance=1.0))
        first = next(stream)
        assert isinstance(first, Preview) and first.step == 1
        stream.close()  # what Gradio does when the user presses Stop
        with demo.lock:  # the worker holds the lock until the pipeline has stopped
            assert len(calls) < 50
    finally:
        transformer._forward_pre_hooks.clear()
    cancel = threading.Event()
    cancel.set()
    assert list(demo.generate(Request("a red circle", steps=2), cancel)) == []  # cancelled before it started


def test_stop_lands_within_a_step_between_blocks(demo):
    """A stop set while a step runs takes effect at the next DiT block, not at the end of the step."""
    transformer = demo.models.pixel.transformer
    cancel = threading.Event()
    seen = []

    def block_hook(module, args):
        seen.append(module)
        if len(seen) == 2:  # the second block of the first step: stop now
            cancel.set()

    handles = [block.register_forward_pre_hook(block_hook) for block in transformer.layers]
    head_calls = []
    handles.append(transformer.local_decoder.register_forward_pre_hook(lambda *args: head_calls.append(1)))
    try:
        assert list(demo.generate(Request("a red circle", steps=50, guidance=1.0), cancel)) == []
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) == 2 and head_calls == []  # no further block ran, and the head never did
    assert isinstance(list(demo.generate(Request("a red circle", steps=2)))[-1], GenerateResult)  # and runs go on


def test_the_stop_message_names_the_last_step_shown():
    assert results.stopped_line(Preview("pixel", 3, 20)) == "Stopped at step 3 of 20."
    assert results.stopped_line(Preview("source", 1, 9)) == "Stopped at step 1 of 9 of the latent source."


# -- configuration and loading ------------------------------------------------------------------------------------
def test_configuration_from_yaml_with_environment_on_top(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text("pixel_model: some/pixel\nsteps: 12\nguidance: 3.5\nmcp: true\nexamples: [a red circle, two squares]\n")
    config = DemoConfig.load({"L2P_CONFIG": str(path), "L2P_STEPS": "9", "L2P_SOURCE_MODEL": "some/source"})
    assert (config.pixel_model, config.source_model, config.steps, config.guidance) == ("some/pixel", "some/source", 9, 3.5)
    assert config.mcp and config.examples == ["a red circle", "two squares"] and config.configured
    assert not DemoConfig.load({}).configured
    path.write_text("pixel_modle: typo\n")
    with pytest.raises(SystemExit, match="unknown setting"):
        DemoConfig.load({"L2P_CONFIG": str(path)})
    with pytest.raises(SystemExit, match="L2P_STEPS|steps='many'"):
        DemoConfig.load({"L2P_STEPS": "many"})


def test_missing_assets_name_the_build_command(tmp_path):
    with pytest.raises(MissingAssets) as raised:
        load_models(DemoConfig(assets=str(tmp_path)))
    assert BUILD_COMMAND in str(raised.value) and "tiny-l2p" in str(raised.value)


def test_unloadable_configured_models_fall_back_to_the_embedded_ones_and_say_why(assets, tmp_path):
    missing = tmp_path / "no-such-model"
    models = load_models(DemoConfig(assets=str(assets), pixel_model=str(missing), source_model=str(missing)))
    assert models.origin == "embedded" and str(missing) in models.notice and "could not be loaded" in models.notice
    with pytest.raises(MissingAssets, match="could not be loaded"):
        load_models(DemoConfig(assets=str(tmp_path), pixel_model=str(missing), source_model=str(missing)))


def test_configured_folders_load_and_share_the_text_encoder_only_when_it_is_the_same(assets, tmp_path):
    models = load_models(DemoConfig(pixel_model=str(assets / "tiny-l2p"), source_model=str(assets / "tiny-source")))
    assert models.origin == "configured" and models.notice is None
    assert models.shares_text_encoder and models.pixel.text_encoder is models.source.text_encoder
    other = tiny.pixel_pipeline(seed=1)  # a different text encoder
    other.save_pretrained(tmp_path / "other-l2p")
    models = load_models(DemoConfig(pixel_model=str(tmp_path / "other-l2p"), source_model=str(assets / "tiny-source")))
    assert not models.shares_text_encoder and models.pixel.text_encoder is not models.source.text_encoder


def test_toy_examples_and_defaults_for_tiny_models(demo):
    assert demo.toy and "a red circle and a blue square" in demo.examples
    defaults = Demo(demo.models, DemoConfig(), None).defaults  # as the toy models are trained and evaluated
    assert (defaults.steps, defaults.guidance, defaults.source_steps, defaults.source_guidance) == (20, 2.0, 20, 2.0)
    assert (demo.defaults.steps, demo.defaults.source_steps) == (STEPS, STEPS)
    facts = demo.describe()
    assert facts["origin"] == "embedded" and facts["text_encoder"] == "shared by both pipelines"
    assert "native 256 px" in facts["pixel"]


# -- spectra, crops, measurement ------------------------------------------------------------------------------------
def test_blurring_moves_spectral_power_out_of_the_high_frequencies():
    rng = np.random.default_rng(0)
    sharp = Image.fromarray(rng.integers(0, 256, (128, 192, 3), dtype=np.uint8))
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    frequencies, power = radial_power_spectrum(sharp)
    assert frequencies.min() > 0 and frequencies.max() <= 0.5 and len(frequencies) == 64
    # White noise has a flat spectrum.
    assert power[5:].std() / power[5:].mean() < 0.2
    assert high_frequency_share(*radial_power_spectrum(blurred)) < 0.1 * high_frequency_share(frequencies, power)


def test_crops_find_the_detailed_region():
    flat = np.full((256, 256, 3), 128, dtype=np.uint8)
    flat[160:224, 32:96] = np.indices((64, 64)).sum(0)[..., None] % 2 * 255  # a checkerboard patch
    image = Image.fromarray(flat)
    assert detail_box([image, image], 64) == (32, 160, 96, 224)
    box, factor, crops = matching_crops([image, image], size=64, display=256)
    assert factor == 4 and crops[0].size == (256, 256)
    with pytest.raises(ValueError, match="differ in size"):
        detail_box([image, image.resize((128, 128))], 64)


def test_measure_records_time_and_the_memory_a_stage_adds():
    with measure("pixel", "denoising", "cpu") as cost:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        threading.Event().wait(0.05)
    del block
    assert cost.seconds >= 0.05 and cost.working_bytes >= 48 * 2**20 and cost.peak_bytes > cost.start_bytes


def test_the_example_configuration_offline_falls_back_to_the_embedded_models(assets, monkeypatch):
    from browser.server import REPO

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = DemoConfig.load({"L2P_CONFIG": str(REPO / "app.yaml.example"), "L2P_ASSETS": str(assets)})
    assert (config.checkpoint, config.source_model, config.source_steps) == ("zhen-nan/L2P", "Tongyi-MAI/Z-Image-Turbo", 9)
    models = load_models(config)
    # The checkpoint is tried first, so the notice names it (and not the source it never reached), whole.
    assert models.origin == "embedded" and models.fell_back
    assert "L2P_CHECKPOINT=zhen-nan/L2P: could not fetch model-1k-merge.safetensors" in models.notice
    assert "Tongyi-MAI/Z-Image-Turbo" not in models.notice and "..." not in models.notice


def test_without_sampling_json_the_defaults_are_the_releases(demo):
    models = dataclasses.replace(demo.models, pixel_sampling=None, source_sampling=None)
    defaults = Demo(models, DemoConfig(), None).defaults  # L2P's release: 30 steps, CFG 2; Z-Image-Turbo: 9, none
    assert (defaults.steps, defaults.guidance, defaults.source_steps, defaults.source_guidance) == (30, 2.0, 9, 1.0)
    configured = Demo(models, DemoConfig(steps=4), None).defaults  # models meant to run differently stay apart
    assert (configured.steps, configured.source_steps) == (4, 9)


def test_native_size_comes_from_the_model(demo):
    transformer = demo.models.pixel.transformer
    assert transformer.native_side == demo.geometry.native_side == 256
    assert demo.size("native", "1:1") == (transformer.native_side,) * 2


def test_a_request_is_resolved_once_for_its_check_and_its_run(demo, monkeypatch):
    resolved = []
    resolve = demo.planner._resolve
    monkeypatch.setattr(demo.planner, "_resolve", lambda *args: resolved.append(args) or resolve(*args))
    monkeypatch.setattr(demo.planner, "learn", lambda *args: None)  # a run's rescaling re-plans on purpose
    request = Request("a red circle", steps=1, guidance=1.0, seed=4)
    assert demo.problems(request) == {}  # the check before the queue
    assert demo.gpu_seconds(request) >= 20  # ZeroGPU's duration
    _, result = run(demo.generate(request))  # the run
    assert len(resolved) == 1 and result.seed == 4
    _, drawn = run(demo.generate(dataclasses.replace(request, randomize_seed=True)))
    _, again = run(demo.generate(dataclasses.replace(request, randomize_seed=True)))
    assert len(resolved) == 2  # a seed is still drawn per run
    assert 0 <= drawn.seed <= MAX_SEED and 0 <= again.seed <= MAX_SEED


def test_the_embedded_model_names_the_words_it_does_not_know(demo):
    note = demo.vocabulary_note("A photo of a cat, red circles")
    assert "*photo*, *cat*:" in note and "red" in note.split("words only")[1] and "*red*" not in note
    assert demo.vocabulary_note("two red circles left of a blue square") == ""
    assert demo.vocabulary_note("   ") == ""


def test_default_run_time_limit_fits_the_platform(monkeypatch):
    from l2p.demo.config import run_time_limit

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert run_time_limit(None, "cpu") == (120, "L2P_MAX_SECONDS") and run_time_limit(None, "cuda")[0] == 600
    assert run_time_limit(30.0, "cuda")[0] == 30 and run_time_limit(0.0, "cpu")[0] is None
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert run_time_limit(None, "cuda") == (120, "L2P_MAX_SECONDS")
    # On ZeroGPU no run may be estimated past what one GPU call may ask for: ZeroGPU would abort it midway.
    assert run_time_limit(600.0, "cuda", gpu_max_seconds=90.0) == (90.0, "L2P_GPU_MAX_SECONDS, what a ZeroGPU call may ask for")
    assert run_time_limit(0.0, "cuda", gpu_max_seconds=90.0)[0] == 90.0
    assert run_time_limit(60.0, "cuda", gpu_max_seconds=90.0) == (60.0, "L2P_MAX_SECONDS")


def test_the_default_limit_refuses_a_long_run_before_it_queues(assets):
    """With no limit configured, a run estimated past two minutes on this CPU is refused with the estimate and the
    limit, and a short one is not."""
    config = DemoConfig(assets=str(assets), steps=STEPS)
    demo = Demo(load_models(config), config, synthetic_costs(memory_limit=2**50, per_token_s=1e-5), "synthetic")
    long = demo.plan(Request("a red circle", preset="8K", steps=50))
    assert long.estimate.seconds > 120
    assert "over this app's limit of 2 min a run (L2P_MAX_SECONDS)" in long.problems["preset"]
    assert "would take about" in long.problems["preset"]
    assert not demo.plan(Request("a red circle", steps=STEPS)).problems


def test_estimates_follow_what_runs_measure_here(assets):
    """The synthetic cost model is far off this machine: after one run, later estimates are rescaled to what it
    measured, and the page says so."""
    config = DemoConfig(assets=str(assets), steps=STEPS)
    demo = Demo(load_models(config), config, synthetic_costs(), "synthetic")
    request = Request("a red circle", steps=STEPS, guidance=1.0)
    before = demo.plan(request).estimate.seconds
    result = list(demo.generate(request))[-1]
    after = demo.plan(request).estimate.seconds
    assert after == pytest.approx(result.seconds, rel=1e-6) and after != pytest.approx(before)
    larger = demo.plan(dataclasses.replace(request, preset="1K")).estimate.seconds
    assert larger > after  # the scale moves, the size terms stay
    assert "times rescaled by the last run here (pixel model ×" in results.run_line(demo, request)


def test_free_width_and_height_with_the_nearest_valid_sizes(demo):
    odd = demo.plan(Request("a red circle", preset="custom", width=200, height=120, steps=STEPS))
    assert odd.problems["width"] == ("Width 200 is not a multiple of 16 px (what both models accept); nearest valid: "
                                     "192 or 208.")
    assert "nearest valid: 112 or 128" in odd.problems["height"]
    assert "Height must be from 16 to 8192 px" in demo.plan(Request("a", preset="custom", width=64, height=9000)).problems["height"]
    result = list(demo.generate(Request("a red circle", preset="custom", width=192, height=96, steps=STEPS)))[-1]
    assert result.image.size == (192, 96) and (result.width, result.height) == (192, 96)


# -- images per run ---------------------------------------------------------------------------------------------
def test_images_per_run_on_consecutive_seeds_each_tagged_with_its_own(demo, monkeypatch):
    monkeypatch.setattr(demo, "preview_interval", 0.0)
    monkeypatch.setattr(demo, "preview_min_run_s", 0.0)
    previews, result = run(demo.generate(Request("a red circle", steps=STEPS, seed=MAX_SEED - 1, num_images=3)))
    assert result.seeds == [MAX_SEED - 1, MAX_SEED, 0]  # seed, seed + 1, ... wrapping past the largest seed
    assert [(p.index, p.count, p.step) for p in previews] == [(1, 3, 1), (2, 3, 1), (3, 3, 1)]
    assert results.progress_line(previews[1]).startswith("Step 1 of 2 of image 2 of 3")
    assert results.stopped_line(previews[1]) == "Stopped at step 1 of 2 of image 2 of 3."
    assert [image.info["seed"] for image in result.images] == [str(seed) for seed in result.seeds]
    assert "3 images, seeds 2147483646, 2147483647, 0" in results.generate_details(result)
    # Each image is the one a one-image run on its seed makes.
    _, alone = run(demo.generate(Request("a red circle", steps=STEPS, seed=0)))
    assert np.array_equal(np.asarray(alone.image), np.asarray(result.images[2]))
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(result.images[2]))


def test_images_per_run_count_in_the_estimate_and_the_limit(assets):
    config = DemoConfig(assets=str(assets), steps=STEPS, max_seconds=1.0)
    demo = Demo(load_models(config), config, synthetic_costs(memory_limit=None), "synthetic")
    one = demo.plan(Request("a", preset="1K", steps=50))
    four = demo.plan(Request("a", preset="1K", steps=50, num_images=4))
    assert four.estimate.seconds == pytest.approx(4 * one.estimate.seconds)
    assert four.estimate.peak_memory_bytes == one.estimate.peak_memory_bytes  # one after another, not batched
    assert one.estimate.seconds < 1.0 < four.estimate.seconds  # one fits the limit, four do not
    assert not one.problems and four.problems["preset"].startswith("4 images at 1024×1024 would take about")
    assert "fewer steps or fewer images" in four.problems["preset"]
    assert "for 4 images" in results.run_line(demo, Request("", preset="1K", steps=50, num_images=4))
    # Compare makes one pair whatever the count.
    assert demo.plan(Request("a", num_images=9), "compare").problems == {}


@pytest.mark.parametrize("count", [0, 5, 2.5, -1, True])
def test_images_per_run_outside_one_to_four_are_refused(demo, count):
    request = Request("a red circle", steps=STEPS, num_images=count)
    assert demo.problems(request) == {"num_images": f"Images per run must be a whole number from 1 to 4, got {count!r}."}
    with pytest.raises(DemoError, match="^Images per run must be a whole number from 1 to 4"):
        next(demo.generate(request))


# -- ZeroGPU durations --------------------------------------------------------------------------------------------
def test_zero_gpu_durations_follow_the_estimate_capped_by_the_quota(assets, monkeypatch):
    config = DemoConfig(assets=str(assets), steps=STEPS, gpu_max_seconds=90.0)
    demo = Demo(load_models(config), config, synthetic_costs(memory_limit=2**50, per_token_s=1e-5), "synthetic")
    small = Request("a", preset="2K", steps=50)
    estimate = demo.plan(small).estimate.seconds
    assert 20 < estimate * 1.5 + 10 < 90 / 2  # between the floor and the cap: the estimate with headroom
    assert demo.gpu_seconds(small) == int(np.ceil(estimate * 1.5 + 10))
    two = dataclasses.replace(small, num_images=2)  # the estimate is the whole run's, all its images
    assert demo.gpu_seconds(two) == int(np.ceil(2 * estimate * 1.5 + 10))
    assert demo.gpu_seconds(dataclasses.replace(small, num_images=4)) == 90
    assert demo.gpu_seconds(Request("a", steps=1)) == 20  # a floor for start-up and transfers
    assert demo.gpu_seconds(Request("a", preset="8K", steps=50)) == 90  # the cap (L2P_GPU_MAX_SECONDS)
    assert Demo(demo.models, config, None).gpu_seconds(small) == 90  # no estimate: the cap
    # On ZeroGPU a run estimated past the cap is refused before it queues, naming the setting.
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    zero = Demo(demo.models, DemoConfig(assets=str(assets), steps=STEPS, max_seconds=600.0, gpu_max_seconds=60.0),
                synthetic_costs(memory_limit=2**50, per_token_s=1e-5), "synthetic")
    message = zero.problems(Request("a", preset="8K", steps=50))["preset"]
    assert "over this app's limit of 60.0 s a run (L2P_GPU_MAX_SECONDS, what a ZeroGPU call may ask for)" in message
    monkeypatch.setenv("L2P_GPU_MAX_SECONDS", "300")
    assert DemoConfig.load().gpu_max_seconds == 300.0


# -- the app's own queue: turns and what waiting runs are told ----------------------------------------------------
def test_a_waiting_run_is_told_the_runs_ahead_and_their_estimated_time(demo, monkeypatch):
    monkeypatch.setattr(demo, "preview_interval", 0.0)
    first = demo.generate(Request("a red circle", steps=50, guidance=1.0))
    assert isinstance(next(first), Preview)  # running (its first step done), holding the turn
    second = demo.generate(Request("a blue square", steps=STEPS, guidance=1.0))
    waiting = next(second)
    assert isinstance(waiting, Waiting) and waiting.ahead == 1 and waiting.unknown == 0
    expected = demo.plan(Request("a red circle", steps=50, guidance=1.0)).estimate.seconds
    assert 0 <= waiting.seconds <= expected  # the running run's estimate, less what it has run
    assert results.waiting_line(waiting).startswith("Waiting: 1 run ahead of you, about ")
    assert results.stopped_line(waiting) == "Stopped while waiting for its turn; it had not started."
    first.close()  # the run ahead is stopped: this one's turn comes
    events = list(second)
    assert isinstance(events[-1], GenerateResult) and demo.admissions.waiting == 0


# -- this visit's gallery ---------------------------------------------------------------------------------------
def test_the_history_reads_settings_from_served_pngs_and_remakes_an_image(demo, tmp_path):
    from gradio.processing_utils import save_pil_to_cache

    from l2p.demo import history

    geometry = demo.geometry
    assert preset_for_size(256, 144, geometry) == ("native", "16:9")
    assert preset_for_size(1024, 1024, geometry) == ("1K", "1:1") and preset_for_size(160, 96, geometry)[0] == "custom"
    _, made = run(demo.generate(Request("a red circle", negative_prompt="a square", aspect_ratio="16:9", steps=STEPS,
                                        guidance=2.5, seed=21, num_images=2, shift=2.0)))
    _, custom = run(demo.generate(Request("a blue square", preset="custom", width=160, height=96, steps=STEPS, seed=4)))
    # As Gradio serves them (what the page's gallery hands back), with a preview that carries no settings.
    served = [(save_pil_to_cache(image, str(tmp_path), format="png"), f"seed {seed}")
              for image, seed in zip(made.images, made.seeds)]
    preview = save_pil_to_cache(Image.new("RGB", (8, 8)), str(tmp_path), format="png")
    visit = history.remember([], served + [(preview, None)])
    visit = history.remember(visit, [save_pil_to_cache(custom.image, str(tmp_path), format="png")])
    assert [entry.settings["seed"] for entry in visit] == ["4", "21", "22"]  # newest first, no preview
    assert history.gallery(visit)[1] == (served[0][0], "a red circle · seed 21 · 256×144 · 2 steps · guidance 2.5 · tiny-l2p")
    values = history.reused(visit[2], geometry)
    assert values == {"prompt": "a red circle", "negative_prompt": "a square", "preset": "native", "aspect_ratio": "16:9",
                      "steps": STEPS, "guidance": 2.5, "seed": 22, "randomize_seed": False, "num_images": 1,
                      "rope": "none", "shift": 2.0}
    _, again = run(demo.generate(Request(**values)))
    assert np.array_equal(np.asarray(again.image), np.asarray(made.images[1]))
    values = history.reused(visit[0], geometry)
    assert (values["preset"], values["width"], values["height"]) == ("custom", 160, 96) and "aspect_ratio" not in values
    assert history.reused_line(visit[0]).startswith("**Settings reused** from “a blue square”: seed 4, 2 steps")
    assert len(history.remember(visit * 30, served)) == history.HISTORY_MAX


def test_dype_parameters_travel_with_a_zero_shot_image(demo):
    from l2p.demo.metadata import read_settings

    _, result = run(demo.generate(Request("a red circle", preset="custom", width=512, height=256, rope="dype", steps=1,
                                          guidance=1.0, dype_lambda_s=0.5)))
    settings = read_settings(result.image.info)
    assert (settings["rope"], settings["dype_lambda_s"], settings["dype_lambda_t"]) == ("dype", "0.5", "2")
    assert result.image.info["parameters"].endswith("RoPE: dype, Shift: 3, DyPE: 0.5 2")
    assert read_settings({"prompt": "x"}) is None


def test_the_embedded_pixel_model_leaves_the_steps_its_sampling_json_names_unguided():
    """The shipped pixel model's sampling.json starts guidance at normalised time 0.08 (guided from the first step
    it draws empty canvases): the app runs it so, and its PNG says so."""
    from l2p.demo.metadata import read_settings

    embedded = Path(__file__).resolve().parent.parent / "assets"
    config = DemoConfig(assets=str(embedded), steps=3)
    demo = Demo(load_models(config), config, synthetic_costs(), "synthetic")
    cfg_start = demo.models.pixel_sampling.cfg_start
    assert cfg_start == 0.08
    prompt, seed = "a red circle on a black background", 3
    _, result = run(demo.generate(Request(prompt, preset="native", steps=3, guidance=3.0, seed=seed)))

    def direct(start):
        return demo.models.pixel(prompt, height=128, width=128, num_inference_steps=3, guidance_scale=3.0,
                                 generator=torch.Generator().manual_seed(seed), cfg_start=start).images[0]

    assert np.array_equal(np.asarray(result.image), np.asarray(direct(cfg_start)))
    assert not np.array_equal(np.asarray(result.image), np.asarray(direct(0.0)))
    assert read_settings(result.image.info)["cfg_start"] == "0.08"
    assert "CFG start: 0.08" in result.image.info["parameters"]
