"""Serve `app.py` in a subprocess on a free port, on tiny models saved from tests/tiny.py, and stop it after."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from l2p.bench.app_overhead import free_port
from l2p.sampling import SamplingSettings, write_sampling

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"


# How the embedded toy models run (their sampling.json): 256 px, 20 steps, the same guidance strength for both
# (Z-Image's 1.0 is L2P's 2.0).
TOY_SAMPLING = {"tiny-source": SamplingSettings(256, 256, 20, 1.0), "tiny-l2p": SamplingSettings(256, 256, 20, 2.0)}


def save_tiny_models(folder: Path) -> Path:
    """`folder/tiny-source` and `folder/tiny-l2p`, laid out as the embedded assets are (same text encoder, and a
    sampling.json each)."""
    import tiny

    if not (folder / "tiny-l2p" / "model_index.json").is_file():
        tiny.source_pipeline().save_pretrained(folder / "tiny-source")
        tiny.pixel_pipeline().save_pretrained(folder / "tiny-l2p")
        for name, settings in TOY_SAMPLING.items():
            write_sampling(folder / name, settings)
    return folder


# A pair at the embedded models' own 128 px (trained grid 8) with a native HR variant grown from the pixel model at
# 4x its side (512 px, patch 64), as assets/tiny-l2p-hr is: small enough for a three-way Compare in seconds.
HR_SAMPLING = {"tiny-source": SamplingSettings(128, 128, 20, 1.0), "tiny-l2p": SamplingSettings(128, 128, 20, 2.0),
               "tiny-l2p-hr": SamplingSettings(512, 512, 20, 2.0)}


def save_tiny_hr_models(folder: Path) -> Path:
    """`folder/tiny-source`, `folder/tiny-l2p` (128 px native) and `folder/tiny-l2p-hr` (grown from it by
    `l2p.high_resolution.grow_for_high_resolution` at 4x the side, so 512 px native), one text encoder for all."""
    import tiny
    from l2p import L2PPipeline
    from l2p.high_resolution import grow_for_high_resolution

    if not (folder / "tiny-l2p-hr" / "model_index.json").is_file():
        tiny.source_pipeline().save_pretrained(folder / "tiny-source")
        pixel = L2PPipeline(L2PPipeline.default_scheduler(), tiny.text_encoder(), tiny.tokenizer(),
                            tiny.pixel_transformer(trained_grid=8))
        pixel.save_pretrained(folder / "tiny-l2p")
        hr = L2PPipeline(L2PPipeline.default_scheduler(), pixel.text_encoder, pixel.tokenizer,
                         grow_for_high_resolution(pixel.transformer, 4).eval())
        hr.save_pretrained(folder / "tiny-l2p-hr")
        for name, settings in HR_SAMPLING.items():
            write_sampling(folder / name, settings)
    return folder


def app_environment(work_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment for app.py: offline, quiet, on `port`, one thread unless L2P_TEST_THREADS says more."""
    threads = os.environ.get("L2P_TEST_THREADS", "1")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("L2P_")}
    environment.update(
        GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(work_dir / "gradio-tmp"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1",
    )
    environment.update(settings)
    return environment


@contextlib.contextmanager
def serve_app(work_dir: Path, timeout: float = 240.0, **settings: str):
    """Start app.py with the given L2P_* settings, yield its URL once it answers, stop it afterwards.

    The working directory is `work_dir`, so Gradio's caches land there and not in the repository.
    """
    port = free_port()
    log_path = work_dir / f"app-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(APP)], cwd=work_dir, env=app_environment(work_dir, port, **settings),
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"app.py did not answer within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_of(work_dir: Path) -> str:
    return "\n".join(path.read_text() for path in sorted(work_dir.glob("app-*.log")))
