"""The cost model: fitted to benchmark records, monotonic past them, and calibrated on tiny pipelines."""

import json

import numpy as np
import pytest

import tiny
from l2p.bench.costs import CostModel, Estimate, fit_nonnegative, hr_patch_size


def _records(sizes=(256, 512, 1024, 2048)):
    """Synthetic records with known costs: step = a + b T + c T^2, memory = a + b pixels, decode = a + b pixels."""
    records = []
    for side in sizes:
        tokens, pixels = (side // 16) ** 2, side * side
        records.append(dict(pipeline="pixel", width=side, height=side, pixels_per_token=16, tokens=tokens,
                            step_s=0.01 + 1e-5 * tokens + 1e-9 * tokens**2, text_encode_s=0.02,
                            peak_memory_bytes=int(1e8 + 50 * pixels), status="ok"))
        records.append(dict(pipeline="source", width=side, height=side, pixels_per_token=16, tokens=tokens,
                            step_s=0.02 + 2e-5 * tokens + 2e-9 * tokens**2, text_encode_s=0.02,
                            vae_decode_s=0.01 + 1e-7 * pixels, peak_memory_bytes=int(2e8 + 100 * pixels), status="ok"))
    return records


def test_fit_recovers_known_costs_and_whole_generation_formula():
    model = CostModel.from_records(_records(), memory_limit_bytes=10**10)
    side, tokens = 1536, (1536 // 16) ** 2
    step = 0.01 + 1e-5 * tokens + 1e-9 * tokens**2
    estimate = model.estimate("pixel", side, side, steps=8, cfg=False)
    assert estimate.seconds == pytest.approx(0.02 + 8 * step, rel=1e-6)
    assert estimate.peak_memory_bytes == pytest.approx(1e8 + 50 * side * side, rel=1e-6)
    # CFG: a batch of two per step and two prompts to encode; the source adds its VAE decode once.
    with_cfg = model.estimate("pixel", side, side, steps=8, cfg=True)
    assert with_cfg.seconds == pytest.approx(2 * 0.02 + 2 * 8 * step, rel=1e-6)
    source = model.estimate("source", side, side, steps=8, cfg=False)
    source_step = 0.02 + 2e-5 * tokens + 2e-9 * tokens**2
    assert source.seconds == pytest.approx(0.02 + 8 * source_step + 0.01 + 1e-7 * side * side, rel=1e-6)


def test_extrapolation_is_monotonic_even_from_noisy_measurements():
    records = _records()
    rng = np.random.default_rng(0)
    for record in records:  # +-30% noise, and a smaller size measured slower than a bigger one
        record["step_s"] *= float(rng.uniform(0.7, 1.3))
    records[0]["step_s"] = records[2]["step_s"] * 1.5
    model = CostModel.from_records(records)
    for costs in model.pipelines.values():
        assert all(c >= 0 for c in costs.step + costs.memory + costs.vae_decode)
    for pipeline in ("pixel", "source"):
        sides = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
        seconds = [model.estimate(pipeline, s, s, 8, False).seconds for s in sides]
        memory = [model.estimate(pipeline, s, s, 8, False).peak_memory_bytes for s in sides]
        assert seconds == sorted(seconds) and memory == sorted(memory)
        assert seconds[-1] > seconds[-3] > 0


def test_two_sizes_give_the_simplest_exact_model():
    model = CostModel.from_records([r for r in _records((512, 1024)) if r["pipeline"] == "pixel"])
    for side in (512, 1024):
        record = next(r for r in _records((side,)) if r["pipeline"] == "pixel")
        assert model.estimate("pixel", side, side, 1, False).seconds == pytest.approx(0.02 + record["step_s"], rel=1e-3)
    assert np.count_nonzero(model.pipelines["pixel"].step) <= 2


def test_fit_nonnegative_prefers_fewer_terms():
    x = np.array([1.0, 2.0, 4.0])
    coefficients = fit_nonnegative(np.stack([np.ones(3), x, x**2], 1), 3 * x)
    np.testing.assert_allclose(coefficients, [0, 3, 0], atol=1e-9)


def test_pixel_hr_grows_with_pixels_at_a_constant_token_grid():
    assert hr_patch_size(4096, 4096) == 64 and hr_patch_size(8192, 8192) == 128 and hr_patch_size(2048, 2048) is None
    records = [
        dict(pipeline="pixel_hr", width=s, height=s, tokens=4096, step_s=0.1 + 1e-9 * s * s, text_encode_s=0.05,
             peak_memory_bytes=int(2e10 + 100 * s * s), status="ok")
        for s in (4096, 6144, 8192)
    ]
    model = CostModel.from_records(records)
    assert model.pipelines["pixel_hr"].tokens(8192, 8192) == 4096
    at_4k, at_8k = (model.estimate("pixel_hr", s, s, 1, False) for s in (4096, 8192))
    assert at_8k.seconds == pytest.approx(0.05 + 0.1 + 1e-9 * 8192**2, rel=1e-6)
    assert at_8k.seconds > at_4k.seconds and at_8k.peak_memory_bytes > at_4k.peak_memory_bytes


def test_estimate_fits_and_errors():
    assert Estimate(1.0, 10, 10).fits and not Estimate(1.0, 11, 10).fits and Estimate(1.0, 10**15, None).fits
    model = CostModel.from_records(_records(), memory_limit_bytes=2 * 10**8)
    assert model.estimate("pixel", 256, 256, 4, False).fits
    assert not model.estimate("source", 2048, 2048, 4, False).fits
    with pytest.raises(ValueError, match="pixel_hr"):
        model.estimate("pixel_hr", 4096, 4096, 4, False)
    with pytest.raises(ValueError, match="no measured"):
        CostModel.from_records([dict(r, status="does not fit") for r in _records()])


def test_from_benchmarks_reads_the_bench_json(tmp_path):
    records = _records() + [dict(pipeline="source", width=8192, height=8192, step_s=None, text_encode_s=None,
                                 vae_decode_s=None, peak_memory_bytes=None, status="does not fit",
                                 estimated_peak_memory_bytes=10**12)]
    path = tmp_path / "full-gpu.json"
    path.write_text(json.dumps({"meta": {"device": "gpu", "memory_limit_bytes": 80 * 2**30}, "records": records}))
    model = CostModel.from_benchmarks(path)
    assert model.memory_limit_bytes == 80 * 2**30 and model.device == "gpu"
    assert model.estimate("source", 1024, 1024, 8, False).seconds == pytest.approx(
        CostModel.from_records(_records()).estimate("source", 1024, 1024, 8, False).seconds
    )


def test_calibrate_on_tiny_pipelines():
    model = CostModel.calibrate(tiny.source_pipeline(), tiny.pixel_pipeline(), sizes=[64, (96, 64)], steps=1)
    assert set(model.pipelines) == {"source", "pixel"}
    assert model.memory_limit_bytes and model.memory_limit_bytes > 0
    for pipeline in ("source", "pixel"):
        small, big = (model.estimate(pipeline, s, s, 4, False) for s in (64, 512))
        assert 0 < small.seconds <= big.seconds
        assert 0 < small.peak_memory_bytes <= big.peak_memory_bytes and small.fits
    assert any(model.pipelines["source"].vae_decode)
