"""`python -m l2p.bench` on tiny pipelines: the tiny CLI (a subprocess per case), the full-scale path at tiny
dims, "does not fit", the time budget, FLOP counting and the full-size configs."""

import json

import pytest
import torch
import torch.nn.functional as F

import tiny
from l2p import bench
from l2p.bench.costs import CostModel

REQUIRED_FIELDS = {
    "scale", "device", "width", "height", "pipeline", "step_s", "text_encode_s", "vae_decode_s",
    "peak_memory_bytes", "flops_per_step", "status",
}
# The full-scale builders at tests/tiny.py's dims (HR rule moved down so pixel_hr runs at test sizes).
TINY_OVERRIDES = {
    "dit": {k: v for k, v in tiny.DIT.items() if k != "cap_feat_dim"},
    "pixel": {"detailer_channels": [8, 8, 16, 16], "trained_grid": 4},
    "vae": {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 8, "layers_per_block": 1},
    "text_encoder": {"vocab_size": 100, "hidden_size": tiny.TEXT_DIM, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16},
}
HR_RULE = {"min_side": 128, "base_patch": 32}


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-models")
    tiny.source_pipeline().save_pretrained(folder / "tiny-source")
    tiny.pixel_pipeline().save_pretrained(folder / "tiny-l2p")
    return folder / "tiny-source", folder / "tiny-l2p"


def _check_records(records, scale):
    for record in records:
        assert REQUIRED_FIELDS <= set(record), REQUIRED_FIELDS - set(record)
        assert record["scale"] == scale and record["status"] == "ok"
        assert record["step_s"] > 0 and record["text_encode_s"] > 0 and record["peak_memory_bytes"] > 0
        assert record["flops_per_step"] > 0 and record["estimated_peak_memory_bytes"] > 0
        assert (record["vae_decode_s"] is not None) == (record["pipeline"] == "source")


def test_tiny_cli_writes_json_markdown_and_plot(tiny_folders, tmp_path, capsys):
    source, pixel = tiny_folders
    out = tmp_path / "benchmarks"
    result = bench.main([
        "--scale", "tiny", "--source", str(source), "--pixel", str(pixel), "--sizes", "64",
        "--hr-min-side", "64", "--hr-patch", "32", "--steps", "1", "--generation-steps", "1", "--threads", "1",
        "--out", str(out),
    ])
    records = result["records"]
    assert [r["pipeline"] for r in records] == ["source", "pixel", "pixel_hr"]
    _check_records(records, "tiny")
    assert result["meta"]["memory_method"].startswith("peak RSS (VmHWM) of a fresh subprocess")
    hr = records[2]
    assert hr["patch_size"] == 32 and hr["tokens"] == 4 and hr["detailer_channels"] == [4, 8, 8, 16, 16]

    saved = json.loads((out / "tiny-cpu.json").read_text())
    assert saved["records"] == records
    meta = saved["meta"]
    assert meta["device"] == "cpu" and meta["versions"]["torch"] == torch.__version__ and "--scale tiny" in meta["command"]
    table = (out / "tiny-cpu.md").read_text()
    assert "| 64x64 | pixel_hr |" in table and "--hr-min-side 64" in table
    assert (out / "tiny-cpu.png").stat().st_size > 0
    model = CostModel.from_benchmarks(out / "tiny-cpu.json")
    assert set(model.pipelines) == {"source", "pixel", "pixel_hr"}
    assert model.estimate("pixel", 256, 256, 8, cfg=True).seconds > 0


def test_a_trained_hr_folder_is_measured_at_its_own_native_size_and_patch(tmp_path, capsys):
    from browser.server import save_tiny_hr_models

    assets = save_tiny_hr_models(tmp_path / "assets")
    common = ["--scale", "tiny", "--source", str(assets / "tiny-source"), "--pixel", str(assets / "tiny-l2p"),
              "--steps", "1", "--generation-steps", "1", "--threads", "1", "--in-process"]
    # No --hr-min-side/--hr-patch: the rule comes from the folder (512 px native, patch 64 = 4x the 1x model's 16).
    result = bench.main([*common, "--pixel-hr", str(assets / "tiny-l2p-hr"), "--sizes", "512", "--out", str(tmp_path / "out")])
    records = result["records"]
    assert [(r["pipeline"], r["width"]) for r in records] == [("source", 512), ("pixel", 512), ("pixel_hr", 512)]
    _check_records(records, "tiny")
    hr = records[2]
    assert hr["patch_size"] == 64 and hr["tokens"] == 8 * 8 and hr["tokens"] * 16 == records[1]["tokens"]
    assert result["meta"]["models"]["pixel_hr"] == str((assets / "tiny-l2p-hr").resolve())
    # A rule that contradicts the folder's own size and patch is refused before anything runs.
    with pytest.raises(SystemExit):
        bench.main([*common, "--pixel-hr", str(assets / "tiny-l2p-hr"), "--sizes", "512", "--hr-patch", "32",
                    "--out", str(tmp_path / "refused")])
    assert "--pixel-hr" in capsys.readouterr().err and not (tmp_path / "refused").exists()


def test_full_scale_path_at_tiny_dims_on_cpu():
    spec = {"scale": "full", "overrides": TINY_OVERRIDES, "hr_rule": HR_RULE}
    result = bench.run_benchmark(
        "full", spec, [(bench.native_size(spec),) * 2, (128, 96)], device="cpu", timed_steps=1, generation_steps=1,
        isolate=False, detailer_tile=32, log=lambda *_: None,
    )
    records = result["records"]
    assert [(r["pipeline"], r["width"]) for r in records] == [
        ("source", 64), ("pixel", 64), ("source", 128), ("pixel", 128), ("pixel_hr", 128)
    ]
    _check_records(records, "full")
    assert all(r["achieved_fraction_of_peak"] > 0 for r in records)
    hr = records[-1]
    assert hr["patch_size"] == 32 and hr["tokens"] == 12 and hr["detailer_channels"] == [4, 8, 8, 16, 16]
    assert {r["detailer_tile"] for r in records if r["pipeline"] != "source"} == {32}  # the head ran in tiles
    assert result["meta"]["models"]["overrides"] == TINY_OVERRIDES
    assert "markdown" not in result and "| 128x96 | source |" in bench.markdown_table(result)


def test_does_not_fit_is_reported_not_run(tiny_folders):
    source, pixel = tiny_folders
    spec = {"scale": "tiny", "source": str(source), "pixel": str(pixel)}
    result = bench.run_benchmark(
        "tiny", spec, [(64, 64), (8192, 8192)], device="cpu", memory_limit=64 * 2**20, timed_steps=1,
        generation_steps=1, log=lambda *_: None,
    )
    assert {r["status"] for r in result["records"]} == {"does not fit"}
    for record in result["records"]:
        assert record["estimated_peak_memory_bytes"] > 64 * 2**20 and record["step_s"] is None
    assert "does not fit" in bench.markdown_table(result)


def test_time_budget_skips_what_would_run_too_long():
    spec = {"scale": "full", "overrides": TINY_OVERRIDES, "hr_rule": HR_RULE}
    result = bench.run_benchmark(
        "full", spec, [(64, 64), (128, 128)], device="cpu", timed_steps=1, generation_steps=1, time_budget=1e-6,
        isolate=False, log=lambda *_: None,
    )
    # The first size of each pipeline runs (nothing to predict from); the rest is over the budget.
    assert [(r["pipeline"], r["width"]) for r in result["records"]] == [("source", 64), ("pixel", 64), ("pixel_hr", 128)]
    assert {(s["pipeline"], s["width"]) for s in result["skipped"]} == {("source", 128), ("pixel", 128)}
    assert all(s["predicted_s"] > 1e-6 for s in result["skipped"])


def test_missing_tiny_models_give_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="tiny model folder"):
        bench.main(["--scale", "tiny", "--source", str(tmp_path / "nope"), "--pixel", str(tmp_path / "nope2")])


def test_flop_counter_counts_cpu_attention():
    q = torch.randn(1, 2, 64, 16)
    flops = bench.count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert flops == 4 * 2 * 64 * 64 * 16  # QK^T and PV, 2 FLOPs per multiply-add


def test_sizes_and_cases():
    assert bench.parse_size("native", 256) == (256, 256) and bench.parse_size("640x480", 256) == (640, 480)
    cases = bench.plan_cases([(1024, 1024), (4096, 4096), (8192, 4096), (1000, 1000)], 16, 16)
    assert ("pixel_hr", 4096, 4096) in cases and ("pixel_hr", 8192, 4096) in cases
    assert not any(c[0] == "pixel_hr" and c[1] == 1024 for c in cases) and not any(c[1] == 1000 for c in cases)
    # A trained HR folder (the toy's: 512 px native, patch 64) is measured only where the rule asks for its
    # patch (a long side of 512 px); past it the rule asks for 128, which that folder does not have.
    sizes = [(128, 128), (512, 512), (512, 384), (768, 512), (1024, 1024)]
    hr_cases = [c for c in bench.plan_cases(sizes, 16, 16, (512, 64), hr_folder_patch=64) if c[0] == "pixel_hr"]
    assert hr_cases == [("pixel_hr", 512, 512), ("pixel_hr", 512, 384)]
    assert ("pixel_hr", 1024, 1024) in bench.plan_cases(sizes, 16, 16, (512, 64))  # a grown head has any patch


def test_full_size_configs_match_the_release():
    assert bench.hr_detailer_channels([64, 128, 256, 512], 16, 64) == [16, 32, 64, 128, 256, 512]
    assert bench.hr_detailer_channels([64, 128, 256, 512], 16, 128) == [8, 16, 32, 64, 128, 256, 512]
    spec = {"scale": "full", "overrides": {}}
    assert bench.native_size(spec) == 1024
    shared = {}
    source = bench.build_pipeline(spec, "source", 1024, 1024, "meta", torch.bfloat16, shared)
    pixel = bench.build_pipeline(spec, "pixel", 1024, 1024, "meta", torch.bfloat16, shared)
    hr = bench.build_pipeline(spec, "pixel_hr", 8192, 8192, "meta", torch.bfloat16, shared)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert len(source.transformer.state_dict()) == 521 and len(pixel.transformer.state_dict()) == 545
    assert 6.1e9 < count(pixel.transformer) < 6.25e9
    assert 3.9e9 < count(pixel.text_encoder) < 4.1e9  # Qwen3-4B without the LM head
    assert source.vae.config.latent_channels == 16 and source.vae_scale_factor == 8
    assert hr.transformer.config.patch_size == 128 and hr.transformer.local_decoder.num_levels == 7
    estimates = {
        name: bench.analytic_peak_memory(pipe, name, 4096, 4096)["estimated_peak_memory_bytes"]
        for name, pipe in (("source", source), ("pixel", pixel))
    }
    assert estimates["source"] > estimates["pixel"] > 19 * 2**30  # weights alone are ~19 GiB in bf16


def test_generation_bench_times_both_pipelines_at_their_sampling_json_and_writes_the_ratio(tmp_path):
    from browser.server import save_tiny_models
    from l2p.bench import generation
    from l2p.sampling import SamplingSettings, write_sampling

    assets = save_tiny_models(tmp_path / "assets")
    for name, guidance in (("tiny-source", 1.0), ("tiny-l2p", 2.0)):  # 2 steps keep the test short
        write_sampling(assets / name, SamplingSettings(64, 64, 2, guidance))
    generation.main(["--source", str(assets / "tiny-source"), "--pixel", str(assets / "tiny-l2p"), "--repeats", "2",
                     "--threads", "1", "--scale", "test", "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "generation-test-cpu.json").read_text())
    assert len(result["seconds"]["source"]) == len(result["seconds"]["pixel"]) == 2
    assert result["settings"]["pixel"] == {"height": 64, "width": 64, "num_inference_steps": 2, "guidance_scale": 2.0}
    median = result["median_s"]
    assert 0 < median["source_vae_decode"] < median["source"]
    assert result["pixel_over_source"] == pytest.approx(median["pixel"] / median["source"])
    assert "pixel / source" in (tmp_path / "out" / "generation-test-cpu.md").read_text()

    write_sampling(assets / "tiny-l2p", SamplingSettings(128, 128, 2, 2.0))
    with pytest.raises(ValueError, match="native sizes differ"):
        generation.measure(assets / "tiny-source", assets / "tiny-l2p", "a red circle", 0, 1, 1)
