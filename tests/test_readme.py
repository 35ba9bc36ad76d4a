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


def test_space_front_matter_is_valid_yaml_with_what_spaces_read():
    import yaml

    text = README.read_text()
    assert text.startswith("---\n")
    card = yaml.safe_load(text.split("---\n")[1])
    assert card["sdk"] == "gradio" and card["app_file"] == "app.py" and len(card["short_description"]) <= 60
    assert card["preload_from_hub"] and card["startup_duration_timeout"] and "text-to-image" in card["tags"]
    assert card["sdk_version"].startswith("6.")  # requirements.txt: gradio>=6.31,<7
    # The Space's licence is the package's (pyproject.toml), and the repository ships its text.
    assert card["license"] == "apache-2.0" and 'license = "Apache-2.0"' in (README.parent / "pyproject.toml").read_text()
    assert "Apache License" in (README.parent / "LICENSE").read_text()
