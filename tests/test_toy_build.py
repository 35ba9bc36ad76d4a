"""The embedded world's build: text-encoder pre-training, semantic alignment, sampling.json, and
`python -m training.toy_assets` end to end on tiny settings (tests/configs/toy-tiny)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ZImagePipeline

from l2p import L2PPipeline
from l2p.high_resolution import grow_for_high_resolution
from l2p.sampling import SAMPLING_FILE, SamplingSettings, read_sampling, write_sampling
from l2p.tokenizer import build_word_tokenizer
from l2p.toyworld import VOCABULARY, layout_prompt, render_layout
from training.semantic import NUM_CLASSES, token_labels
from training.text_encoder import SLOTS, TextEncoderConfig, build_text_encoder, encode_features, prefix_knowledge, scene_targets
from training.toy_assets import HR_STAGES

ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIGS = ROOT / "tests" / "configs" / "toy-tiny"
STAGES = ["text_encoder", "vae", "components", "source", "export", "prompts", "synthesize", "transfer", "merge"]


def test_scene_targets_name_every_slot_of_the_prompt():
    targets = dict(zip(SLOTS, scene_targets("a red circle and a blue square on a gray background")))
    named = {slot: SLOTS[slot][index] for slot, index in targets.items()}
    assert named == {"category": "color_attr", "shape_1": "circle", "color_1": "red", "count_1": "1", "shape_2": "square",
                     "color_2": "blue", "relation": "none", "background": "gray"}
    assert SLOTS["count_1"][dict(zip(SLOTS, scene_targets("three triangles")))["count_1"]] == "3"


def test_prefix_knowledge_marks_a_slot_known_from_its_deciding_word_on():
    tokenizer = build_word_tokenizer(VOCABULARY)
    prompt = "a red circle left of a square"
    known = prefix_knowledge(tokenizer, [prompt], 16)[0]
    slots = list(SLOTS)
    words = prompt.split()
    start = 2  # <|im_start|> user
    red, circle, left = (start + words.index(w) for w in ("red", "circle", "left"))
    assert not known[red - 1, slots.index("color_1")] and known[red, slots.index("color_1")]
    assert not known[red, slots.index("shape_1")] and known[circle, slots.index("shape_1")]
    assert known[left, slots.index("relation")] and not known[left - 1, slots.index("relation")]
    assert known[start + len(words):].all()  # past the prompt, every slot is known (absent ones as "none")


def test_text_features_are_read_as_the_pipeline_reads_them():
    tokenizer = build_word_tokenizer(VOCABULARY)
    config = TextEncoderConfig(text_encoder=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                 num_key_value_heads=1, head_dim=8))
    encoder = build_text_encoder(config, tokenizer).eval()
    prompts = ["a circle", "four triangles on a black background"]
    pipe = ZImagePipeline(scheduler=None, vae=None, text_encoder=encoder, tokenizer=tokenizer, transformer=None)
    with torch.no_grad():
        expected, _ = pipe.encode_prompt(list(prompts), device="cpu", do_classifier_free_guidance=False)
        features, mask = encode_features(encoder, tokenizer, prompts)
    for want, got, keep in zip(expected, features, mask):
        torch.testing.assert_close(got[keep], want)


def test_token_labels_follow_the_rendered_objects():
    layout = layout_prompt("a red circle and a blue square on a gray background", seed=3)
    labels = token_labels(layout, 8, 8)
    assert labels.shape == (8, 8) and int(labels.max()) < NUM_CLASSES
    pixels = np.asarray(render_layout(layout, 128)).astype(int)
    gray = np.array([128, 128, 128])
    for row in range(8):
        for col in range(8):
            cell = pixels[16 * row : 16 * row + 16, 16 * col : 16 * col + 16]
            off_background = (np.abs(cell - gray).max(axis=-1) > 40).mean()
            if off_background > 0.6:
                assert labels[row, col] >= 3, (row, col)  # an object's class, not a background's
            if off_background == 0:
                assert labels[row, col] == 2, (row, col)  # gray is background class 2
    assert set(labels.flatten().tolist()) == {2, 3, 10}  # gray, red circle (3 + 0), blue square (3 + 3 * 2 + 1)


def test_sampling_json_round_trips_and_rejects_malformed_files(tmp_path):
    settings = SamplingSettings(height=128, width=96, num_inference_steps=20, guidance_scale=2.0)
    write_sampling(tmp_path, settings)
    assert read_sampling(tmp_path) == settings and settings.size == (96, 128)
    assert read_sampling(tmp_path / "nowhere") is None
    assert "cfg_start" not in json.loads((tmp_path / SAMPLING_FILE).read_text())  # a ZImagePipeline takes no such argument
    # An L2P folder's guidance interval: optional, round-trips, passed to the pipeline only where set.
    later = SamplingSettings(height=128, width=96, num_inference_steps=20, guidance_scale=3.0, cfg_start=0.08)
    write_sampling(tmp_path, later)
    assert read_sampling(tmp_path) == later and later.as_kwargs()["cfg_start"] == 0.08
    assert "cfg_start" not in settings.as_kwargs()
    with pytest.raises(ValueError, match="cfg_start must be a number in"):
        SamplingSettings(height=128, width=96, num_inference_steps=20, guidance_scale=3.0, cfg_start=1.5)
    (tmp_path / SAMPLING_FILE).write_text(json.dumps({"height": 128, "width": 128}))
    with pytest.raises(ValueError, match="must hold exactly"):
        read_sampling(tmp_path)
    (tmp_path / SAMPLING_FILE).write_text(json.dumps({**settings.as_kwargs(), "cfg_stop": 0.5}))
    with pytest.raises(ValueError, match="must hold exactly"):
        read_sampling(tmp_path)
    (tmp_path / SAMPLING_FILE).write_text(json.dumps({"height": 0, "width": 128, "num_inference_steps": 2, "guidance_scale": 1}))
    with pytest.raises(ValueError, match="height must be a positive integer"):
        read_sampling(tmp_path)


def test_a_stage_redone_on_another_machine_is_named_in_the_build_record(tmp_path):
    from training.toy_assets import machine, record_stage

    record = tmp_path / "toy-build.json"
    record.write_text(json.dumps({"stages": {"source": 3000.0, "transfer": 400.0}, "total_s": 3400.0,
                                  "machine": {"cpu": "an older CPU", "cores": 2}}))
    data = record_stage(record, "transfer", 500.0)
    assert data["stages"] == {"source": 3000.0, "transfer": 500.0} and data["total_s"] == 3500.0
    assert data["stage_cpus"] == {"source": "an older CPU", "transfer": machine()["cpu"]}
    assert json.loads(record.read_text()) == data


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy-build")
    command = [sys.executable, "-m", "training.toy_assets", "--configs", str(TINY_CONFIGS), "--runs", str(folder / "runs"),
               "--assets", str(folder / "assets"), "--record", str(folder / "toy-build.json"), "--threads", "1"]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, command, env


def test_toy_assets_rebuilds_both_pipelines_from_nothing_and_records_each_stage(tiny_build):
    folder, _, _ = tiny_build
    record = json.loads((folder / "toy-build.json").read_text())
    assert list(record["stages"]) == STAGES
    assert record["total_s"] == pytest.approx(sum(record["stages"].values()), abs=0.2)
    assert record["machine"]["cores"] >= 1
    assert record["stage_cpus"] == dict.fromkeys(STAGES, record["machine"]["cpu"])  # one machine timed them all
    source = ZImagePipeline.from_pretrained(folder / "assets" / "tiny-source")
    pixel = L2PPipeline.from_pretrained(folder / "assets" / "tiny-l2p")
    source_settings = read_sampling(folder / "assets" / "tiny-source")
    pixel_settings = read_sampling(folder / "assets" / "tiny-l2p")
    assert source_settings.size == pixel_settings.size == (64, 64)  # components.yaml's, and patch 16 x trained grid 4
    assert pixel_settings.guidance_scale == source_settings.guidance_scale + 1  # the same strength, L2P's convention
    for pipe, settings in ((source, source_settings), (pixel, pixel_settings)):
        image = pipe("a red circle", generator=torch.Generator().manual_seed(0), **settings.as_kwargs()).images[0]
        assert image.size == settings.size
    # The source exported its EMA weights, and the pixel model's frozen middle blocks are the source's own.
    torch.testing.assert_close(pixel.transformer.state_dict()["layers.1.attention.to_q.weight"],
                               source.transformer.state_dict()["layers.1.attention.to_q.weight"], rtol=0, atol=0)


def test_toy_assets_grows_the_native_high_resolution_variant_from_the_pixel_model(tiny_build):
    folder, command, env = tiny_build
    record = folder / "toy-build-hr.json"
    hr = [*command[: command.index("--record")], "--record", str(record), "--threads", "1", "--stages", ",".join(HR_STAGES)]
    done = subprocess.run(hr, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(json.loads(record.read_text())["stages"]) == HR_STAGES
    pixel = L2PPipeline.from_pretrained(folder / "assets" / "tiny-l2p")
    variant = L2PPipeline.from_pretrained(folder / "assets" / "tiny-l2p-hr")
    settings = read_sampling(folder / "assets" / "tiny-l2p-hr")
    assert settings.size == (256, 256)  # 4x the 1x model's 64 px: patch 64 on its 4x4 token grid
    assert (variant.transformer.config.patch_size, variant.transformer.config.detailer_channels) == (64, [4, 4, 4, 4, 8, 8])
    assert variant.scheduler.config.shift == 4.0  # the shift it was trained with
    # Only the head trained: every DiT tensor is still the 1x model's (the embedder its grown form), as the
    # folders store them (float16).
    grown = grow_for_high_resolution(pixel.transformer, 4, variant.transformer.config.detailer_channels).state_dict()
    trained = variant.transformer.state_dict()
    dit = [key for key in trained if not key.startswith("local_decoder.")]
    assert dit and all(torch.equal(trained[key].half(), grown[key].half()) for key in dit)
    assert any(not torch.equal(trained[key].half(), grown[key].half()) for key in trained if key.startswith("local_decoder."))
    # Its model card says what it grew from: the 1x pixel model, not the source.
    assert f"steps** from `{folder / 'assets' / 'tiny-l2p'}`" in (folder / "assets" / "tiny-l2p-hr" / "README.md").read_text()
    image = variant("a red circle", generator=torch.Generator().manual_seed(0), **settings.as_kwargs()).images[0]
    assert image.size == (256, 256)


def test_toy_assets_skips_finished_stages(tiny_build):
    folder, command, env = tiny_build
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done, skipped") == len(STAGES)
