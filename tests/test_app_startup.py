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


def scenarios(work) -> dict[str, dict]:
    """Every start-up this module checks: a name and the settings (beside the embedded models) it starts with.
    Writes the faulty files the settings name."""
    (work / "bad.yaml").write_text("steps: 4\nguidance: [2.0\n")
    (work / "unknown.yaml").write_text("steps: 4\nstepz: 8\n")
    (work / "model.ckpt").write_bytes(b"\x80\x04not really a pickle")
    (work / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    checkpoint = checkpoint_folder(work)
    source = str(work / "assets" / "tiny-source")
    return {
        "no fault": {},
        "bad yaml": {"L2P_CONFIG": str(work / "bad.yaml")},
        "unknown setting": {"L2P_CONFIG": str(work / "unknown.yaml")},
        "absent device": {"L2P_DEVICE": "cuda:7"},
        "no such device": {"L2P_DEVICE": "gpu"},
        "pickle": {"L2P_CHECKPOINT": str(work / "model.ckpt")},
        "absent checkpoint": {"L2P_CHECKPOINT": str(work / "absent.safetensors")},
        "corrupt checkpoint": {"L2P_CHECKPOINT": str(work / "corrupt.safetensors")},
        "checkpoint folder": {"L2P_CHECKPOINT": str(checkpoint), "L2P_SOURCE_MODEL": source},
        "other text encoder": {"L2P_CHECKPOINT": str(checkpoint), "L2P_SOURCE_MODEL": source,
                               "L2P_TEXT_ENCODER": str(other_text_encoder(work))},
        "absent hr model": {"L2P_HR_MODEL": str(work / "no-such-hr-model")},
    }


@pytest.fixture(scope="module")
def checks(work):
    """name -> (exit code, stdout's `name: value` lines as a dict, stderr) of `python app.py --check` for each
    scenario. They start together: each is ~20 s, most of it imports on one core, so this saves minutes."""
    running = {}
    for name, settings in scenarios(work).items():
        environment = app_environment(work, 0, L2P_ASSETS=str(work / "assets"), **settings)
        running[name] = subprocess.Popen([sys.executable, str(APP), "--check"], cwd=work, env=environment,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=600)
        facts = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
        results[name] = process.returncode, facts, stderr
    return results


def checkpoint_folder(work):
    """A release-layout checkpoint of the tiny pixel model, with its config.json beside it."""
    pixel = tiny.pixel_pipeline().transformer
    folder = work / "checkpoint"
    folder.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in pixel.state_dict().items()}, folder / "model-1k-merge.safetensors")
    (folder / "config.json").write_text(json.dumps(dict(pixel.config)))
    return folder


def other_text_encoder(work):
    """A text encoder folder whose features are 48 wide (the tiny models read 32)."""
    other = work / "other-encoder"
    encoder = tiny.text_encoder()
    encoder.config.hidden_size = 48  # a different width: rebuild it at that width
    from transformers import Qwen3Model

    Qwen3Model(encoder.config).save_pretrained(other / "text_encoder")
    tiny.tokenizer().save_pretrained(other / "tokenizer")
    return other


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_no_fault_serves_the_models_without_a_notice(checks):
    code, facts, _ = checks["no fault"]
    assert code == 0 and facts["origin"] == "embedded" and facts["notice"] == ""


def test_malformed_yaml_names_the_file_line_and_fix(work, checks):
    code, _, stderr = checks["bad yaml"]
    line = last_line(stderr)
    assert code == 1 and "Traceback" not in stderr
    assert line.startswith(f"L2P_CONFIG={work / 'bad.yaml'}: not valid YAML") and "line 3" in line and "fix the file" in line


def test_unknown_setting_is_named_with_the_known_ones(checks):
    code, _, stderr = checks["unknown setting"]
    assert code == 1 and "Traceback" not in stderr
    assert "unknown setting(s) ['stepz']" in last_line(stderr) and "steps" in last_line(stderr)


def test_a_device_this_machine_lacks_falls_back_to_the_cpu_with_a_notice(checks):
    code, facts, stderr = checks["absent device"]
    assert code == SERVED_WITH_NOTICE and "Traceback" not in stderr
    assert facts["device"].startswith("CPU") and "L2P_DEVICE=cuda:7 is not available" in facts["notice"]
    code, _, stderr = checks["no such device"]
    assert code == 1 and "L2P_DEVICE='gpu' is not a device" in last_line(stderr)


def test_a_pickle_checkpoint_is_refused_by_name(work, checks):
    code, facts, _ = checks["pickle"]
    assert code == SERVED_WITH_NOTICE and facts["origin"] == "embedded"
    notice = facts["notice"]
    assert f"L2P_CHECKPOINT={work / 'model.ckpt'}" in notice and "pickle files are never loaded" in notice and "safetensors" in notice


def test_a_missing_or_corrupt_checkpoint_is_what_the_notice_blames(work, checks):
    code, facts, _ = checks["absent checkpoint"]
    assert code == SERVED_WITH_NOTICE
    assert f"L2P_CHECKPOINT={work / 'absent.safetensors'}" in facts["notice"] and "Z-Image-Turbo" not in facts["notice"]
    code, facts, _ = checks["corrupt checkpoint"]
    corrupt = work / "corrupt.safetensors"
    assert f"L2P_CHECKPOINT={corrupt}" in facts["notice"] and "not a readable safetensors checkpoint" in facts["notice"]
    assert "Z-Image-Turbo" not in facts["notice"] and facts["notice"].endswith(").")  # whole, not cut off


def test_a_checkpoint_folder_with_its_config_is_served(checks):
    code, facts, _ = checks["checkpoint folder"]
    assert code == 0 and facts["origin"] == "configured"


def test_a_text_encoder_that_does_not_match_is_named(work, checks):
    code, facts, _ = checks["other text encoder"]
    assert code == SERVED_WITH_NOTICE and facts["origin"] == "embedded"
    other = work / "other-encoder"
    assert f"L2P_TEXT_ENCODER={other}" in facts["notice"] and "48-wide features" in facts["notice"] and "reads 32" in facts["notice"]


def test_a_bad_hr_model_is_one_line_naming_the_setting_and_the_pair_is_served(work, checks):
    code, facts, stderr = checks["absent hr model"]
    missing = work / "no-such-hr-model"
    assert code == SERVED_WITH_NOTICE and facts["origin"] == "embedded" and "Traceback" not in stderr
    assert facts["notice"].startswith(f"The high-resolution model could not be loaded (L2P_HR_MODEL={missing}: ")
    assert "hr" not in facts  # served without one
