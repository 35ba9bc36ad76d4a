"""The README's tiny library example runs exactly as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_library_example_runs_as_written(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "build_word_tokenizer" in block)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    from PIL import Image

    image = Image.open(tmp_path / "red-circle.png")
    assert image.size == (384, 256) and image.mode == "RGB"


def test_readme_embedded_model_example_runs_as_written(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(block for block in blocks if "read_sampling" in block)
    example = example.replace('"assets/', f'"{README.parent}/assets/')  # the README's paths are the checkout's
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    from PIL import Image

    from l2p.sampling import read_sampling

    image = Image.open(tmp_path / "embedded.png")
    assert image.size == read_sampling(README.parent / "assets" / "tiny-l2p").size
