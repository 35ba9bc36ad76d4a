"""`python -m l2p.bench`: the run. Plans the cases, guards memory, measures each case (on CPU in a fresh subprocess
per case), skips what would take too long, and writes the outputs (`l2p.bench.report`)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from ..device import device_description, device_memory_bytes, device_name, release_memory, rss_bytes
from ..sizes import pixels_per_token, token_count
from .cases import (
    DEFAULT_SIZES,
    HR_BASE_PATCH,
    HR_MIN_SIDE,
    build_pipeline,
    configure,
    describe_spec,
    hr_patch_size,
    native_size,
    parse_size,
    pixel_folder_geometry,
    plan_cases,
    quiet_loading,
    spec_hr_patch,
    spec_hr_rule,
    tiny_spec_paths,
)
from .costs import CostModel
from .measure import FLOPS_METHOD, analytic_peak_memory, measure_case, measure_matmul_peak
from .report import markdown_table, write_outputs

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks"
DEFAULT_TINY_SOURCE = REPO_ROOT / "assets" / "tiny-source"
DEFAULT_TINY_PIXEL = REPO_ROOT / "assets" / "tiny-l2p"
RESULT_MARKER = "L2P_BENCH_RESULT "


def _predict_case_seconds(
    records: list[dict], pipeline: str, width: int, height: int, steps_per_case: int, hr_rule
) -> float | None:
    """Predicted wall time of a case from the records measured so far (None without any)."""
    done = [r for r in records if r["pipeline"] == pipeline and r.get("status") == "ok"]
    if not done:
        return None
    if len(done) == 1:  # one size: scale linearly with tokens or pixels, whichever grows more
        r = done[0]
        patch = hr_patch_size(width, height, *hr_rule) if pipeline == "pixel_hr" else r["pixels_per_token"]
        growth = max(token_count(width, height, patch) / r["tokens"], width * height / (r["width"] * r["height"]))
        return (r["step_s"] * steps_per_case + (r.get("vae_decode_s") or 0) * 3 + r["text_encode_s"] * 3) * growth
    model = CostModel.from_records(done, hr_rule=hr_rule)
    estimate = model.estimate(pipeline, width, height, steps_per_case, cfg=False)
    return estimate.seconds


def _run_worker_subprocess(case: dict, threads: int, timeout: float | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    command = [sys.executable, "-m", "l2p.bench", "--worker", json.dumps(case)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"worker timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    if done.returncode in (-9, 137):
        return {"status": "does not fit", "note": "the worker was killed (out of memory)"}
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"status": "error", "note": f"worker exited with {done.returncode}: " + " | ".join(tail)}


def _worker_main(case_json: str) -> None:
    """Entry of the CPU subprocess: build one pipeline, measure one case, print the record."""
    case = json.loads(case_json)
    torch.set_num_threads(case["threads"])
    quiet_loading()
    dtype = getattr(torch, case["dtype"])
    pipe = build_pipeline(case["spec"], case["pipeline"], case["width"], case["height"], case["device"], dtype)
    configure(pipe, case["pipeline"], case.get("attention"), case.get("detailer_tile"))
    record = measure_case(
        pipe, case["pipeline"], case["width"], case["height"], case["device"], timed_steps=case["timed_steps"],
        warmup_steps=case["warmup_steps"], generation_steps=case["generation_steps"], matmul_peak=case.get("matmul_peak"),
    )
    print(RESULT_MARKER + json.dumps(record), flush=True)


def run_benchmark(
    scale: str,
    spec: dict,
    sizes: list[tuple[int, int]],
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    timed_steps: int = 3,
    warmup_steps: int = 1,
    generation_steps: int = 2,
    time_budget: float | None = None,
    attention: str | None = None,
    detailer_tile: int | None = None,
    threads: int | None = None,
    command: str | None = None,
    isolate: bool = True,
    dry_run: bool = False,
    memory_limit: int | None = None,
    log=print,
) -> dict:
    """Measure every case and return {"meta": ..., "records": [...], "skipped": [...]}.

    The same function serves both scales: `spec` says where the models come from (see `build_pipeline`).
    On CUDA the cases run in this process (peak memory reset per case, one pipeline and the text encoder
    resident at a time); on CPU each case runs in a fresh subprocess (peak RSS), unless `isolate` is False, when
    CPU cases run in this process like CUDA ones (peak RSS reset per case; the process' other memory counts).
    """
    device = torch.device(device)
    quiet_loading()
    in_process = device.type == "cuda" or not isolate
    if dry_run:  # only the plan and the analytic estimates: nothing is measured or built for real
        isolate, in_process = False, False
    threads = threads or torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    if memory_limit is None and (device.type != "cuda" or torch.cuda.is_available()):
        memory_limit = device_memory_bytes(device)
    matmul_peak = 0.0 if dry_run else measure_matmul_peak(device, dtype)
    log(f"[bench] {device_description(device)}; matmul peak {matmul_peak / 1e9:.1f} GFLOP/s ({str(dtype).replace('torch.', '')})")

    # Analytic estimates need the models' structure: built on the meta device at full scale (no memory, no
    # time), loaded for real at tiny scale (small).
    structure_device = "meta" if spec["scale"] == "full" else "cpu"
    shared_structure: dict = {}
    probe = {name: build_pipeline(spec, name, 4096, 4096, structure_device, dtype, shared_structure) for name in ("source", "pixel")}
    pixel_patch = probe["pixel"].transformer.config.patch_size
    source_ppt = pixels_per_token(probe["source"])
    hr_rule = spec_hr_rule(spec)
    # A trained HR folder's rule has its own patch as base (main checks it): it serves only that patch's sizes.
    cases = plan_cases(sizes, pixel_patch, source_ppt, hr_rule, hr_rule[1] if spec.get("pixel_hr") else None)
    baseline_rss = rss_bytes() if device.type == "cpu" else 0
    efficient = attention not in ("_native_math",)

    records: list[dict] = []
    skipped: list[dict] = []
    shared: dict = {}
    built: dict = {}
    steps_per_case = generation_steps + warmup_steps + timed_steps
    for pipeline, width, height in cases:
        base = {"scale": scale, "device": device_name(device), "width": width, "height": height, "pipeline": pipeline}
        structure = probe.get(pipeline) or build_pipeline(spec, pipeline, width, height, structure_device, dtype, shared_structure)
        if pipeline != "source":
            configure(structure, pipeline, None, detailer_tile)
        estimate = analytic_peak_memory(structure, pipeline, width, height, efficient_attention=efficient)
        estimate["estimated_peak_memory_bytes"] += baseline_rss or 0
        label = f"{pipeline} {width}x{height}"
        if dry_run:
            fits = memory_limit is None or estimate["estimated_peak_memory_bytes"] <= memory_limit
            log(f"[bench] {label}: estimated peak {estimate['estimated_peak_memory_bytes'] / 2**30:.2f} GiB "
                f"(weights {estimate['weights_bytes'] / 2**30:.2f} GiB)" + ("" if fits else ": does not fit"))
            records.append(_unmeasured(base, estimate, "estimate only" if fits else "does not fit", "dry run: not measured"))
            continue
        if memory_limit is not None and estimate["estimated_peak_memory_bytes"] > memory_limit:
            log(f"[bench] {label}: does not fit (estimated {estimate['estimated_peak_memory_bytes'] / 2**30:.2f} GiB "
                f"> {memory_limit / 2**30:.2f} GiB)")
            records.append(_unmeasured(base, estimate, "does not fit", "analytic estimate above the device's memory"))
            continue
        if time_budget is not None:
            predicted = _predict_case_seconds(records, pipeline, width, height, steps_per_case, hr_rule)
            if predicted is not None and predicted > time_budget:
                log(f"[bench] {label}: skipped, predicted {predicted:.0f} s > budget {time_budget:.0f} s")
                skipped.append({**base, "reason": "time budget", "predicted_s": predicted, "time_budget_s": time_budget})
                continue
        log(f"[bench] {label}: measuring ...")
        if not in_process:
            case = {
                "spec": spec, "pipeline": pipeline, "width": width, "height": height, "device": "cpu",
                "dtype": str(dtype).replace("torch.", ""), "threads": threads, "timed_steps": timed_steps,
                "warmup_steps": warmup_steps, "generation_steps": generation_steps, "matmul_peak": matmul_peak,
                "attention": attention, "detailer_tile": detailer_tile,
            }
            predicted = _predict_case_seconds(records, pipeline, width, height, steps_per_case, hr_rule)
            timeout = None if time_budget is None else max(600.0, 4 * max(time_budget, predicted or 0))
            result = _run_worker_subprocess(case, threads, timeout)
        else:
            result = _measure_here(spec, pipeline, width, height, device, dtype, shared, built, attention, detailer_tile,
                                     timed_steps, warmup_steps, generation_steps, matmul_peak)
        if result.get("status") != "ok":
            log(f"[bench] {label}: {result.get('status')}: {result.get('note', '')}")
            records.append(_unmeasured(base, estimate, result.get("status", "error"), result.get("note", "")))
            continue
        record = {**base, **result, **estimate}
        records.append(record)
        log(f"[bench] {label}: step {record['step_s'] * 1e3:.1f} ms, peak {record['peak_memory_bytes'] / 2**20:.0f} MiB"
            + (f", VAE decode {record['vae_decode_s'] * 1e3:.1f} ms" if record.get("vae_decode_s") else ""))
    _release(built)
    shared.clear()

    meta = {
        "scale": scale,
        "device": device_name(device),
        "device_description": device_description(device),
        "memory_limit_bytes": memory_limit,
        "dtype": str(dtype).replace("torch.", ""),
        "attention": attention or "native",
        "detailer_tile": detailer_tile,
        "threads": threads if device.type == "cpu" else None,
        "matmul_peak_flops": matmul_peak,
        "flops_method": FLOPS_METHOD,
        "memory_method": "torch.cuda.max_memory_allocated, reset per case" if device.type == "cuda"
        else "peak RSS (VmHWM) of a fresh subprocess per case, process runtime included" if not in_process
        else "peak RSS (VmHWM) of this process, reset per case, process runtime included",
        "timed_steps": timed_steps,
        "warmup_steps": warmup_steps,
        "generation_steps": generation_steps,
        "time_budget_s": time_budget,
        "hr_rule": {"min_side": hr_rule[0], "base_patch": hr_rule[1]},
        "models": describe_spec(spec),
        "versions": _versions(),
        "command": command or " ".join(shlex.quote(a) for a in ["python", "-m", "l2p.bench", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return {"meta": meta, "records": records, "skipped": skipped}


def _measure_here(spec, pipeline, width, height, device, dtype, shared, built, attention, detailer_tile,
                  timed_steps, warmup_steps, generation_steps, matmul_peak) -> dict:
    """One case in this process, keeping only the pipeline being measured (and the text encoder) resident."""
    key = (pipeline, spec_hr_patch(spec, width, height) if pipeline == "pixel_hr" else None)
    try:
        if key not in built:
            _release(built)
            pipe = build_pipeline(spec, pipeline, width, height, device, dtype, shared)
            configure(pipe, pipeline, attention, detailer_tile)
            built[key] = pipe
        return measure_case(built[key], pipeline, width, height, device, timed_steps=timed_steps,
                            warmup_steps=warmup_steps, generation_steps=generation_steps, matmul_peak=matmul_peak)
    except torch.cuda.OutOfMemoryError as error:
        _release(built)
        return {"status": "does not fit", "note": f"out of memory at run time ({str(error).splitlines()[0]})"}


def _release(built: dict) -> None:
    """Drop the pipelines held for earlier cases (pipelines hold reference cycles: collect them too)."""
    built.clear()
    release_memory()


def _unmeasured(base: dict, estimate: dict, status: str, note: str) -> dict:
    return {
        **base, "step_s": None, "text_encode_s": None, "vae_decode_s": None, "peak_memory_bytes": None,
        "flops_per_step": None, **estimate, "status": status, "note": note,
    }


def _versions() -> dict:
    import diffusers
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {
        "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "l2p_commit": commit,
    }
    if torch.cuda.is_available():
        versions["cuda"] = torch.version.cuda
    return versions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m l2p.bench",
        description="Latent (source Z-Image) versus pixel (L2P) cost per step, VAE decode, text encoding and peak memory.",
    )
    parser.add_argument("extra_sizes", nargs="*", metavar="SIZE", help="more sizes to measure: N or WxH")
    parser.add_argument("--scale", choices=("tiny", "full"), default="tiny",
                        help="tiny: the embedded models on CPU; full: default configs, random weights, bf16 on a GPU")
    parser.add_argument("--source", default=str(DEFAULT_TINY_SOURCE), help="tiny scale: a ZImagePipeline folder")
    parser.add_argument("--pixel", default=str(DEFAULT_TINY_PIXEL), help="tiny scale: an L2PPipeline folder")
    parser.add_argument("--pixel-hr", default=None,
                        help="tiny scale: a trained high-resolution L2PPipeline folder (e.g. assets/tiny-l2p-hr) for "
                             "the pixel_hr cases; the HR rule then defaults to its native side and patch, and pixel_hr runs only "
                             "at the sizes whose long side is its native side (where the rule asks for its patch). Without it "
                             "pixel_hr grows the pixel model's head (same cost, untrained outer levels)")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES),
                        help="replace the default sizes (native 1024 2048 4096 8192); N, WxH or native")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda for full scale, cpu for tiny)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="default bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (the first counts FLOPs)")
    parser.add_argument("--generation-steps", type=int, default=2, help="steps of the whole generation for peak memory")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="skip a case whose predicted wall time exceeds this many seconds (default 300 on CPU, "
                             "120 on CUDA); the prediction is fitted to the smaller sizes already measured")
    parser.add_argument("--attention", default=None,
                        help="diffusers attention backend (transformer.set_attention_backend): native (PyTorch SDPA, "
                             "default), flash, _flash_3, sage, ...")
    parser.add_argument("--detailer-tile", type=int, default=None,
                        help="run the Detailer Head in tiles of this many pixels (rounded up to its pooling grid)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default docs/benchmarks)")
    parser.add_argument("--hr-min-side", type=int, default=None,
                        help="long side from which pixel_hr runs (default 4096: patch 64 at 4K, 128 at 8K; with "
                             "--pixel-hr its native side)")
    parser.add_argument("--hr-patch", type=int, default=None,
                        help="pixel_hr patch at --hr-min-side (default 64; with --pixel-hr its patch)")
    parser.add_argument("--overrides", default=None,
                        help="full scale: JSON of config overrides {dit, pixel, vae, text_encoder} (for testing)")
    parser.add_argument("--in-process", action="store_true",
                        help="CPU: measure every case in this process (peak RSS reset per case) instead of a fresh "
                             "subprocess per case; faster, but memory then includes everything this process holds")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the cases and their analytic memory estimates only (no measurement, no files); "
                             "full scale builds on the meta device, so this works without a GPU")
    parser.add_argument("--memory-limit-gib", type=float, default=None,
                        help="compare estimates with this much memory instead of the device's (e.g. 48 for a 48 GB card)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        _worker_main(args.worker)
        return {}
    device = args.device or ("cuda" if args.scale == "full" else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available() and not args.dry_run:
        parser.error("--device cuda but no CUDA device is available (full scale needs a GPU; tests run it on CPU with --overrides)")
    dtype = getattr(torch, args.dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32"))
    if args.scale == "tiny":
        spec = {"scale": "tiny", "source": str(Path(args.source).resolve()), "pixel": str(Path(args.pixel).resolve())}
        tiny_spec_paths(spec)
    else:
        spec = {"scale": "full", "overrides": json.loads(args.overrides) if args.overrides else {}}
    hr_min_side, hr_patch = HR_MIN_SIDE, HR_BASE_PATCH
    if args.pixel_hr:
        if args.scale != "tiny":
            parser.error("--pixel-hr is a tiny-scale option (full scale builds its HR variant from the default config)")
        spec["pixel_hr"] = str(Path(args.pixel_hr).resolve())
        hr_min_side, hr_patch = pixel_folder_geometry(spec["pixel_hr"])
        if args.hr_min_side not in (None, hr_min_side) or args.hr_patch not in (None, hr_patch):
            parser.error(f"--pixel-hr {args.pixel_hr} is native at {hr_min_side} px with patch {hr_patch}; leave out "
                         "--hr-min-side/--hr-patch or give those values")
    spec["hr_rule"] = {"min_side": args.hr_min_side or hr_min_side, "base_patch": args.hr_patch or hr_patch}
    native = native_size(spec)
    sizes = []
    for text in list(args.sizes) + list(args.extra_sizes):
        size = parse_size(text, native)
        if size not in sizes:
            sizes.append(size)
    time_budget = args.time_budget if args.time_budget is not None else (300.0 if torch.device(device).type == "cpu" else 120.0)
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "l2p.bench", *(argv if argv is not None else sys.argv[1:])])
    result = run_benchmark(
        args.scale, spec, sizes, device=device, dtype=dtype, timed_steps=args.steps, warmup_steps=args.warmup,
        generation_steps=args.generation_steps, time_budget=time_budget, attention=args.attention,
        detailer_tile=args.detailer_tile, threads=args.threads, command=command, isolate=not args.in_process,
        dry_run=args.dry_run,
        memory_limit=None if args.memory_limit_gib is None else int(args.memory_limit_gib * 2**30),
    )
    if args.dry_run:
        return result
    paths = write_outputs(result, Path(args.out))
    print(markdown_table(result))
    print("[bench] wrote " + ", ".join(str(p) for p in paths.values()))
    return result

