"""The library as a package: dependencies in step with requirements.txt, installed and used outside the repo,
saved folders that name the package, Hub ids from a local cache, model cards."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

import tiny
from l2p import L2PPipeline

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("-r")}


def canonical(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower().replace("_", "-")


def test_requirements_are_the_package_dependencies_and_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = set(project["dependencies"]).union(*(set(v) for k, v in extras.items() if k != "dev"))
    assert {canonical(r) for r in requirement_lines(ROOT / "requirements.txt")} == {canonical(r) for r in runtime}
    assert {canonical(r) for r in requirement_lines(ROOT / "requirements-dev.txt")} == {canonical(r) for r in extras["dev"]}
    assert {"app", "train", "dev"} <= set(extras)


def test_installed_package_loads_the_embedded_model_outside_the_repo(tmp_path):
    """`pip install` of a copy of what ships (pyproject, README, l2p/), then a fresh interpreter elsewhere."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "l2p", source / "l2p", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)],
        check=True, capture_output=True, text=True,
    )
    assert (site / "l2p" / "pipeline_l2p.py").is_file() and not (site / "training").exists()
    (metadata,) = site.glob("l2p-*.dist-info/METADATA")
    assert "License-Expression: Apache-2.0" in metadata.read_text()  # the same licence as the Space card's
    script = f"""
import torch, l2p
from l2p import L2PPipeline
assert l2p.__file__.startswith({str(site)!r}), l2p.__file__
pipe = L2PPipeline.from_pretrained({str(ROOT / "assets" / "tiny-l2p")!r})
image = pipe("a red circle", height=128, width=128, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
print(image.size)
"""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(128, 128)")


def generate(pipe, seed=0):
    return pipe("a red circle", height=64, width=64, num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    pipe = tiny.pixel_pipeline(seed=3)
    folder = tmp_path_factory.mktemp("saved")
    pipe.save_pretrained(folder, base_model="Tongyi-MAI/Z-Image-Turbo")
    return pipe, folder


def test_saved_folder_names_the_package_and_carries_a_model_card(saved):
    pipe, folder = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["transformer"] == ["l2p", "L2PTransformer2DModel"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "Tongyi-MAI/Z-Image-Turbo"
    assert card.data.pipeline_tag == "text-to-image" and "l2p" in card.data.tags
    assert "L2PPipeline.from_pretrained" in card.text and "trust_remote_code" in card.text
    np.testing.assert_array_equal(generate(L2PPipeline.from_pretrained(folder)), generate(pipe))


def test_folders_saved_before_the_package_still_load(saved, tmp_path):
    pipe, folder = saved
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    index = json.loads((old / "model_index.json").read_text())
    index["transformer"] = ["l2p.transformer_l2p", "L2PTransformer2DModel"]
    (old / "model_index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(generate(L2PPipeline.from_pretrained(old)), generate(pipe))


def test_hub_id_loads_from_the_local_cache_offline(saved, tmp_path, monkeypatch):
    """The Hub cache layout (models--owner--name/snapshots/<commit>, refs/main) as huggingface_hub writes it."""
    pipe, folder = saved
    repo = tmp_path / "hub" / "models--someone--tiny-l2p"
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = L2PPipeline.from_pretrained("someone/tiny-l2p", cache_dir=tmp_path / "hub")
    np.testing.assert_array_equal(generate(loaded), generate(pipe))
    with pytest.raises(Exception, match="someone/absent|offline|cache"):
        L2PPipeline.from_pretrained("someone/absent", cache_dir=tmp_path / "hub")
