"""Loading checkpoints in the release's single-file layout, and the errors for files that do not fit."""

import json

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

import tiny
from l2p import L2PTransformer2DModel

TINY_CONFIG = dict(patch_size=16, detailer_channels=[8, 8, 16, 16], trained_grid=16, **tiny.DIT)


def release_style_file(path, model):
    """Write a model's tensors as the release does: one flat file, frozen middle blocks fp32, the rest bf16."""
    state = {}
    for key, tensor in model.state_dict().items():
        middle = key.startswith(("layers.1.", "layers.2."))
        state[key] = tensor.clone().contiguous() if middle else tensor.to(torch.bfloat16).contiguous()
    save_file(state, str(path))
    return state


@pytest.fixture()
def checkpoint(tmp_path):
    model = tiny.pixel_transformer(seed=4)
    path = tmp_path / "model-1k-merge.safetensors"
    return path, release_style_file(path, model)


def test_release_layout_with_mixed_dtypes_loads_and_matches(checkpoint):
    path, state = checkpoint
    model = L2PTransformer2DModel.from_single_file(path, config=TINY_CONFIG)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], tensor.float()), key
    as_bf16 = L2PTransformer2DModel.from_single_file(path, config=TINY_CONFIG, torch_dtype=torch.bfloat16)
    assert {p.dtype for p in as_bf16.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32), torch.tensor([0.5]), [torch.randn(3, tiny.TEXT_DIM)]).sample
    assert torch.isfinite(out).all()


def test_folder_and_config_folder_are_accepted(checkpoint, tmp_path):
    path, _ = checkpoint
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps(TINY_CONFIG))
    model = L2PTransformer2DModel.from_single_file(path.parent, config=config_dir)
    assert model.config.dim == tiny.DIT["dim"]
    with pytest.raises(FileNotFoundError, match="no other.safetensors in folder"):
        L2PTransformer2DModel.from_single_file(path.parent, filename="other.safetensors", config=TINY_CONFIG)


def test_truncated_file_gives_a_clear_error(checkpoint):
    path, _ = checkpoint
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors checkpoint \\(truncated or corrupt\\?\\)"):
        L2PTransformer2DModel.from_single_file(path, config=TINY_CONFIG)


def test_renamed_key_is_reported_as_missing_and_unexpected(checkpoint):
    path, state = checkpoint
    state["local_decoder.outconv.weight"] = state.pop("local_decoder.out_conv.weight")
    save_file(state, str(path))
    with pytest.raises(ValueError) as error:
        L2PTransformer2DModel.from_single_file(path, config=TINY_CONFIG)
    message = str(error.value)
    assert "1 missing keys: local_decoder.out_conv.weight" in message
    assert "1 unexpected keys: local_decoder.outconv.weight" in message


def test_wrong_shape_is_reported_with_both_shapes(checkpoint):
    path, state = checkpoint
    state["all_x_embedder.16-1.weight"] = torch.zeros(64, 192, dtype=torch.bfloat16)
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"1 wrong-shape keys: all_x_embedder.16-1.weight \(file \(64, 192\), model \(64, 768\)\)"):
        L2PTransformer2DModel.from_single_file(path, config=TINY_CONFIG)


def test_full_size_default_config_reports_a_tiny_file_as_mismatched(checkpoint):
    path, _ = checkpoint
    with pytest.raises(ValueError, match="does not match the model's layout.*pass its config"):
        L2PTransformer2DModel.from_single_file(path)


def test_hub_id_offline_says_what_failed_and_how_to_use_a_local_file(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError) as error:
        L2PTransformer2DModel.from_single_file("zhen-nan/L2P")
    message = str(error.value)
    assert "could not fetch model-1k-merge.safetensors from the Hub repository zhen-nan/L2P" in message
    assert "pass its local path instead" in message


def test_missing_local_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing file or folder nor a Hub repository id"):
        L2PTransformer2DModel.from_single_file(tmp_path / "nothing" / "here.safetensors")


def test_release_pipeline_assembles_from_a_checkpoint_and_a_zimage_folder(checkpoint, tmp_path):
    from l2p import L2PPipeline

    path, _ = checkpoint
    source_dir = tmp_path / "z-image"
    tiny.source_pipeline().save_pretrained(source_dir)
    pipe = L2PPipeline.from_release(path, text_encoder_source=source_dir, config=TINY_CONFIG)
    image = pipe("a red circle", height=32, width=48, num_inference_steps=2).images[0]
    assert image.size == (48, 32)
