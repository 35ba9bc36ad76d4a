"""Start-up faults, as a Space owner meets them: `python app.py --check` in a subprocess with a configuration
mistake gives one line that names the setting and the fix, and the app serves what it can instead."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import save_file

import tiny
from browser.server import APP, app_environment, save_tiny_models

SERVED_WITH_NOTICE = 3  # app.py --check: models served, with a notice


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    save_tiny_models(folder / "assets")
    return folder


def check(work, **settings):
    """(exit code, stdout's `name: value` lines as a dict, stderr) of `python app.py --check`."""
    environment = app_environment(work, 0, L2P_ASSETS=str(work / "assets"), **settings)
    result = subprocess.run([sys.executable, str(APP), "--check"], cwd=work, env=environment, capture_output=True,
                            text=True, timeout=300)
    facts = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    return result.returncode, facts, result.stderr


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_no_fault_serves_the_models_without_a_notice(work):
    code, facts, _ = check(work)
    assert code == 0 and facts["origin"] == "embedded" and facts["notice"] == ""


def test_malformed_yaml_names_the_file_line_and_fix(work):
    config = work / "bad.yaml"
    config.write_text("steps: 4\nguidance: [2.0\n")
    code, _, stderr = check(work, L2P_CONFIG=str(config))
    line = last_line(stderr)
    assert code == 1 and "Traceback" not in stderr
    assert line.startswith(f"L2P_CONFIG={config}: not valid YAML") and "line 3" in line and "fix the file" in line


def test_unknown_setting_is_named_with_the_known_ones(work):
    config = work / "unknown.yaml"
    config.write_text("steps: 4\nstepz: 8\n")
    code, _, stderr = check(work, L2P_CONFIG=str(config))
    assert code == 1 and "Traceback" not in stderr
    assert "unknown setting(s) ['stepz']" in last_line(stderr) and "steps" in last_line(stderr)


def test_a_device_this_machine_lacks_falls_back_to_the_cpu_with_a_notice(work):
    code, facts, stderr = check(work, L2P_DEVICE="cuda:7")
    assert code == SERVED_WITH_NOTICE and "Traceback" not in stderr
    assert facts["device"].startswith("CPU") and "L2P_DEVICE=cuda:7 is not available" in facts["notice"]
    code, _, stderr = check(work, L2P_DEVICE="gpu")
    assert code == 1 and "L2P_DEVICE='gpu' is not a device" in last_line(stderr)


def test_a_pickle_checkpoint_is_refused_by_name(work):
    pickle = work / "model.ckpt"
    pickle.write_bytes(b"\x80\x04not really a pickle")
    code, facts, _ = check(work, L2P_CHECKPOINT=str(pickle))
    assert code == SERVED_WITH_NOTICE and facts["origin"] == "embedded"
    notice = facts["notice"]
    assert f"L2P_CHECKPOINT={pickle}" in notice and "pickle files are never loaded" in notice and "safetensors" in notice


def test_a_missing_or_corrupt_checkpoint_is_what_the_notice_blames(work):
    code, facts, _ = check(work, L2P_CHECKPOINT=str(work / "absent.safetensors"))
    assert code == SERVED_WITH_NOTICE
    assert f"L2P_CHECKPOINT={work / 'absent.safetensors'}" in facts["notice"] and "Z-Image-Turbo" not in facts["notice"]
    corrupt = work / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    code, facts, _ = check(work, L2P_CHECKPOINT=str(corrupt))
    assert f"L2P_CHECKPOINT={corrupt}" in facts["notice"] and "not a readable safetensors checkpoint" in facts["notice"]
    assert "Z-Image-Turbo" not in facts["notice"] and facts["notice"].endswith(").")  # whole, not cut off


@pytest.fixture(scope="module")
def checkpoint_folder(work):
    """A release-layout checkpoint of the tiny pixel model, with its config.json beside it."""
    pixel = tiny.pixel_pipeline().transformer
    folder = work / "checkpoint"
    folder.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in pixel.state_dict().items()}, folder / "model-1k-merge.safetensors")
    (folder / "config.json").write_text(json.dumps(dict(pixel.config)))
    return folder


def test_a_checkpoint_folder_with_its_config_is_served(work, checkpoint_folder):
    code, facts, _ = check(work, L2P_CHECKPOINT=str(checkpoint_folder), L2P_SOURCE_MODEL=str(work / "assets" / "tiny-source"))
    assert code == 0 and facts["origin"] == "configured"


def test_a_text_encoder_that_does_not_match_is_named(work, checkpoint_folder):
    other = work / "other-encoder"
    if not other.exists():
        encoder = tiny.text_encoder()
        encoder.config.hidden_size = 48  # a different width: rebuild it at that width
        from transformers import Qwen3Model

        Qwen3Model(encoder.config).save_pretrained(other / "text_encoder")
        tiny.tokenizer().save_pretrained(other / "tokenizer")
    code, facts, _ = check(work, L2P_CHECKPOINT=str(checkpoint_folder), L2P_SOURCE_MODEL=str(work / "assets" / "tiny-source"),
                           L2P_TEXT_ENCODER=str(other))
    assert code == SERVED_WITH_NOTICE and facts["origin"] == "embedded"
    assert f"L2P_TEXT_ENCODER={other}" in facts["notice"] and "48-wide features" in facts["notice"] and "reads 32" in facts["notice"]


def test_a_bad_hr_model_is_one_line_naming_the_setting_and_the_pair_is_served(work):
    missing = work / "no-such-hr-model"
    code, facts, stderr = check(work, L2P_HR_MODEL=str(missing))
    assert code == SERVED_WITH_NOTICE and facts["origin"] == "embedded" and "Traceback" not in stderr
    assert facts["notice"].startswith(f"The high-resolution model could not be loaded (L2P_HR_MODEL={missing}: ")
    assert "hr" not in facts  # served without one
