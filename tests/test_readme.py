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
