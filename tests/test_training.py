"""training/: config checks, multi-process synthesis and training under accelerate, exact resume, merge."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import tiny
from l2p import L2PPipeline, L2PTransformer2DModel
from l2p.high_resolution import grow_for_high_resolution
from l2p.sampling import read_sampling
from l2p.transformer_l2p import dit_noise_level
from training.config import ConfigError, load_config, to_dict
from training.toy_data import border_weights, object_weights, to_tensor
from training.train import TrainConfig, run, validate

ROOT = Path(__file__).resolve().parent.parent
CPU_CONFIG = ROOT / "training" / "configs" / "accelerate" / "cpu.yaml"


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("source")
    tiny.source_pipeline().save_pretrained(folder)
    return folder


def pixel_overrides(source_dir, output_dir, **extra):
    values = {
        "output_dir": output_dir, "max_steps": 6, "seed": 3, "model.kind": "pixel", "model.source": source_dir,
        "model.detailer_channels": "[8,8,16,16]", "model.trained_grid": 4, "model.n_shallow": 1,
        "data.kind": "toy", "data.resolution": 64, "optim.batch_size": 2, "optim.lr": "1e-3",
        "checkpoint_every": 2, "log_every": 1, "sample_steps": 2, "threads": 1,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def environment():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def test_border_weights_ring_every_objects_border_on_both_sides_and_nothing_else():
    from scipy import ndimage
    from l2p.toyworld.render import render_prompt

    images = torch.stack([to_tensor(render_prompt(p, 256, seed=s)) for s, p in enumerate(["a square", "three circles"])])
    weights = border_weights(images, 10.0)
    assert set(weights.unique().tolist()) == {1.0, 11.0}
    radius = 256 // 64
    for objects, ring in zip((object_weights(images, 1.0) > 1)[:, 0].numpy(), (weights > 1)[:, 0].numpy()):
        outline = objects & ~ndimage.binary_erosion(objects)
        assert outline.any() and ring[outline].all()  # every border pixel, inside and out
        near = ndimage.binary_dilation(outline, iterations=radius, structure=np.ones((3, 3)))
        assert not ring[~near].any()  # the object's interior and the background beyond the ring keep weight 1


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["data.kind=imagefolder", "data.path=/nonexistent/corpus"], "data.path"),
        (["model.source=/nonexistent/source"], "model.source"),
        (["model.n_shallow=3"], "model.n_shallow"),
        (["model.prediction_type=epsilon"], "model.prediction_type"),
        (["model.also_frozen=[layers]"], "model.also_frozen"),
        (["model.init=scratch", "model.also_frozen=[t_embedder]"], "model.also_frozen"),
        (["model.colour=red"], "model.colour"),
        (["optim.lr=fast"], "optim.lr"),
        (["optim.decay_steps=7"], "optim.decay_steps"),
        (["log_with=comet"], "log_with"),
        (["data.kind=dataset"], "data.path"),
        (["flow.align_steps=100"], "flow.align_steps"),  # a warm start of nothing: align_weight is 0
        (["flow.object_weight_steps=100"], "flow.object_weight_steps"),  # the same: object_weight is 0
        (["optim.warm_start_lr=1e-3"], "optim.warm_start_lr"),  # a rate for a warm start there is not
        (["flow.align_to=vae"], "flow.align_to"),
        (["flow.align_weight=1", "flow.align_to=base"], "flow.align_to"),  # a transfer has no 1x base to align to
        (["flow.align_noise=same"], "flow.align_noise"),
        (["flow.warm_start_fade=100"], "flow.warm_start_fade"),  # the fade of a warm start there is not
        (["flow.border_weight=-1"], "flow.border_weight"),
        (["model.kind=latent", "flow.border_weight=4"], "flow.border_weight"),  # latents have no borders to find
        (["checkpoint_every=0"], "checkpoint_every"),  # once crashed the first step with a division by zero
        (["sample_cfg_start=1.5"], "sample_cfg_start"),
        (["model.kind=latent", "sample_cfg_start=0.1"], "sample_cfg_start"),  # ZImagePipeline has no guidance interval
    ],
)
def test_bad_configs_fail_before_any_work_naming_the_field(source_dir, tmp_path, overrides, field):
    base = pixel_overrides(source_dir, tmp_path / "run")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(load_config(TrainConfig, None, base + overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, n_shallow", [("depth-2", 2), ("depth-3", 3)])
def test_the_depth_ablation_is_the_shipped_transfer_but_for_its_trained_depth(name, n_shallow):
    # A paired comparison: a recipe change to transfer.yaml that the ablation configs miss would compare two recipes.
    toy = ROOT / "training" / "configs" / "toy"
    transfer = to_dict(load_config(TrainConfig, toy / "transfer.yaml"))
    ablation = to_dict(load_config(TrainConfig, toy / f"{name}.yaml"))
    assert ablation["model"].pop("n_shallow") == n_shallow
    transfer["model"].pop("n_shallow")
    assert ablation.pop("output_dir") == f"runs/toy/{name}"
    transfer.pop("output_dir")
    assert ablation == transfer


LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG), "--num_processes", "2", "-m"]


def run_until_killed(command, killed_dir, checkpoint="checkpoint-0000002"):
    """Start a training command, kill it (its whole process group) once `checkpoint` exists, then resume it."""
    process = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 180
    while not (killed_dir / checkpoint).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "checkpoint-0000006").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout


def assert_same_tensors(expected_dir, got_dir, names):
    for name in names:
        expected, got = load_file(str(expected_dir / name)), load_file(str(got_dir / name))
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), (name, key)


@pytest.mark.parametrize("kind", ["pixel", "latent"])
def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(source_dir, tmp_path, kind):
    # The latent (toy source) run also keeps an EMA and a semantic-alignment probe, both restored on resume.
    extra = {"ema_decay": 0.9} if kind == "pixel" else {"model.kind": "latent", "ema_decay": 0.9, "flow.semantic_weight": 1.0}
    straight = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "straight", **extra)))
    run_until_killed([sys.executable, "-m", "training.train", *pixel_overrides(source_dir, tmp_path / "killed", **extra)], tmp_path / "killed")
    files = ["trainable.safetensors", "ema.safetensors"] + (["semantic-probe.safetensors"] if kind == "latent" else [])
    assert_same_tensors(straight, tmp_path / "killed" / "checkpoint-0000006", files)
    # The checkpoint's layout (training.checkpoints): accelerate's own state beside the trained tensors, no staging left.
    state = straight / "accelerate"
    assert (state / "model.safetensors").is_file() and (state / "optimizer.bin").is_file()
    assert not list(straight.parent.glob(".checkpoint-*"))


def test_two_process_run_killed_and_resumed_ends_bit_identical(source_dir, two_process_corpus, tmp_path):
    # On the corpus two processes synthesized: two-process training also reads an imagefolder corpus.
    args = {"ema_decay": 0.9, "log_with": "none", "data.kind": "imagefolder", "data.path": two_process_corpus}
    straight = subprocess.run(LAUNCH + ["training.train", *pixel_overrides(source_dir, tmp_path / "straight", **args)],
                              cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_until_killed(LAUNCH + ["training.train", *pixel_overrides(source_dir, tmp_path / "killed", **args)], tmp_path / "killed")
    final = "checkpoint-0000006"
    assert_same_tensors(tmp_path / "straight" / final, tmp_path / "killed" / final, ["trainable.safetensors", "ema.safetensors"])
    # Each process's RNG state is part of the checkpoint.
    assert sorted(p.name for p in (tmp_path / "killed" / final / "accelerate").glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]


def test_gradient_accumulation_takes_the_same_step_as_one_large_batch(source_dir, tmp_path):
    # batch 1 x 2 micro-batches draws, noises and averages the same items as one batch of 2.
    split_args = {"optim.batch_size": 1, "optim.gradient_accumulation_steps": 2}
    whole = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "whole", max_steps=2, checkpoint_every=1, log_with="none")))
    split = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "split", max_steps=2, log_with="none", **split_args)))
    expected, got = load_file(str(whole / "trainable.safetensors")), load_file(str(split / "trainable.safetensors"))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    after_one = load_file(str(tmp_path / "whole" / "checkpoint-0000001" / "trainable.safetensors"))
    assert any(not torch.allclose(after_one[key], expected[key]) for key in expected), "the second step changed nothing"


def test_tensorboard_log_holds_loss_lr_throughput_and_sample_images(source_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "run", max_steps=4, sample_every=2)))
    events = EventAccumulator(str(next((tmp_path / "run" / "logs" / "train").glob("events.out.tfevents.*")).parent)).Reload()
    tags = events.Tags()
    assert {"loss", "lr", "steps_per_s", "samples_per_s"} <= set(tags["scalars"])
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3, 4]
    assert events.Scalars("lr")[-1].value == pytest.approx(1e-3)
    assert all(event.value > 0 for event in events.Scalars("samples_per_s"))
    assert "samples" in tags["images"] and [event.step for event in events.Images("samples")] == [2, 4, 4]


def test_fsdp_config_on_a_cpu_machine_is_refused_rather_than_run_unsharded(source_dir, tmp_path):
    # accelerate sets FSDP up only on an accelerator device; on a CPU it would quietly run plain data parallel.
    fsdp = ROOT / "training" / "configs" / "accelerate" / "8gpu-fsdp.yaml"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(fsdp), "--num_processes", "2", "-m"]
    result = subprocess.run(launch + ["training.train", *pixel_overrides(source_dir, tmp_path / "run")],
                            cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "asks for FSDP but accelerate set up MULTI_CPU" in result.stderr
    assert not (tmp_path / "run" / "checkpoint-0000002").exists()


def test_frozen_middle_stays_frozen_and_merge_writes_a_loadable_release_file(source_dir, tmp_path):
    from training.merge import merge

    last = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "run", max_steps=2)))
    trained = load_file(str(last / "trainable.safetensors"))
    assert not any(key.startswith(("layers.1.", "layers.2.")) for key in trained)
    assert any(key.startswith("local_decoder.") for key in trained)
    merge(last, tmp_path / "merged.safetensors", tmp_path / "pipeline")

    config = L2PPipeline.from_pretrained(tmp_path / "pipeline").transformer.config
    loaded = L2PTransformer2DModel.from_single_file(tmp_path / "merged.safetensors", config=dict(config))
    for key, tensor in trained.items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    source = tiny.source_pipeline()
    torch.testing.assert_close(loaded.state_dict()["layers.1.attention.to_q.weight"], source.transformer.state_dict()["layers.1.attention.to_q.weight"])
    pipe = L2PPipeline.from_pretrained(tmp_path / "pipeline")
    image = pipe("a red circle", height=64, width=64, num_inference_steps=2).images[0]
    assert image.size == (64, 64)

    # Score against step: each checkpoint loaded into the merged pipeline; the last one is the merged model.
    from training.evaluate import evaluate_checkpoints, evaluate_toy

    rows = evaluate_checkpoints(tmp_path / "run", tmp_path / "pipeline", n_prompts=6, steps=2, out=tmp_path / "curve")
    assert [row["step"] for row in rows] == [2]
    final = evaluate_toy(tmp_path / "pipeline", n_prompts=6, steps=2)
    for key in ("overall", "background_match", "count_match", "edge_width_px"):
        assert rows[-1][key] == pytest.approx(final[key], nan_ok=True), key
    assert json.loads((tmp_path / "curve" / "curve.json").read_text())["curve"] == rows
    # Zero-shot past the trained grid with a RoPE strategy, recorded with the scores; a latent folder has none.
    plain, scaled = (evaluate_toy(tmp_path / "pipeline", n_prompts=2, steps=2, size=128, rope=rope) for rope in (None, "pi"))
    assert scaled["rope"] == "pi" and plain["rope"] is None and scaled["size"] == [128, 128]
    with pytest.raises(ValueError, match="applies to L2P pipelines"):
        evaluate_toy(ROOT / "assets" / "tiny-source", n_prompts=1, rope="pi")
    # A sampling shift for the evaluation only: recorded with the scores, a different noise schedule (so different
    # images), and refused for a latent folder, whose pipeline takes none per call.
    default, shifted = (evaluate_toy(tmp_path / "pipeline", n_prompts=4, steps=2, shift=shift) for shift in (None, 0.5))
    assert shifted["shift"] == 0.5 and default["shift"] is None
    assert shifted["edge_width_px"] != pytest.approx(default["edge_width_px"])
    assert evaluate_checkpoints(tmp_path / "run", tmp_path / "pipeline", n_prompts=4, steps=2, shift=0.5)[-1]["edge_width_px"] == pytest.approx(shifted["edge_width_px"])
    with pytest.raises(ValueError, match="applies to L2P pipelines"):
        evaluate_toy(ROOT / "assets" / "tiny-source", n_prompts=1, shift=1.0)
    # Where guidance starts: the run's sample_cfg_start (0 here) unless merge is given one; written to sampling.json,
    # used and recorded by the evaluation, and refused for a latent folder.
    assert read_sampling(tmp_path / "pipeline").cfg_start == 0.0
    merge(last, None, tmp_path / "guided-later", cfg_start=0.5)
    assert read_sampling(tmp_path / "guided-later").cfg_start == 0.5
    # (The tiny random model barely listens to its prompt, so guidance hardly shows in its images: what the
    # argument does to images is tested on the shipped model, in test_pipeline_arguments.py.)
    assert evaluate_toy(tmp_path / "guided-later", n_prompts=2, steps=2)["cfg_start"] == 0.5
    assert evaluate_toy(tmp_path / "pipeline", n_prompts=2, steps=2, cfg_start=0.25)["cfg_start"] == 0.25
    with pytest.raises(ValueError, match="cfg_start applies to L2P pipelines"):
        evaluate_toy(ROOT / "assets" / "tiny-source", n_prompts=1, cfg_start=0.5)
    # One-step denoising with the checkpoint laid over the merged pipeline is the merged pipeline's own; laid
    # over a model it does not belong to, it is refused.
    from training.evaluate import evaluate_denoising

    overlaid = evaluate_denoising(tmp_path / "pipeline", checkpoint=last, n_images=2, sigmas=(0.5,), size=64)
    assert overlaid["levels"] == evaluate_denoising(tmp_path / "pipeline", n_images=2, sigmas=(0.5,), size=64)["levels"]
    with pytest.raises(ValueError, match="lacks"):
        evaluate_denoising(ROOT / "assets" / "tiny-source", checkpoint=last, n_images=1)
    with pytest.raises(ValueError, match="lacks"):
        evaluate_checkpoints(tmp_path / "run", ROOT / "assets" / "tiny-source", n_prompts=1, steps=1)


def test_scratch_baseline_trains_every_weight_and_its_checkpoint_alone_rebuilds_the_model(source_dir, tmp_path):
    last = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "run", max_steps=2, **{"model.init": "scratch"})))
    trained = load_file(str(last / "trainable.safetensors"))
    transferred = L2PTransformer2DModel.from_source(
        tiny.source_pipeline().transformer, patch_size=16, detailer_channels=[8, 8, 16, 16], trained_grid=4
    )
    assert set(trained) == {name for name, _ in transferred.named_parameters()}
    # The middle blocks are random and trained, not the source's.
    source_q = transferred.state_dict()["layers.1.attention.to_q.weight"]
    assert not torch.allclose(trained["layers.1.attention.to_q.weight"], source_q)

    from training.checkpoints import load_trained

    load_trained(transferred, last)  # over a transfer-initialised model, as `evaluate toy-curve` does
    for name, tensor in transferred.state_dict().items():
        if name in trained:
            assert torch.equal(tensor, trained[name]), name


def test_summary_compares_what_runs_trained_and_their_losses_at_common_steps(source_dir, tmp_path):
    import csv

    from l2p import freeze_for_transfer
    from training.summary import markdown, summarize

    for name, init in (("transfer", "source"), ("scratch", "scratch")):
        run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / name, max_steps=4, **{"model.init": init})))
    transfer, scratch = (summarize(tmp_path / name, at=[2, 4, 8], window=2) for name in ("transfer", "scratch"))

    model = L2PTransformer2DModel.from_source(
        tiny.source_pipeline().transformer, patch_size=16, detailer_channels=[8, 8, 16, 16], trained_grid=4
    )
    total = sum(p.numel() for p in model.parameters())
    assert transfer["trainable"] == freeze_for_transfer(model, 1) and transfer["fraction"] == transfer["trainable"] / total
    assert scratch["trainable"] == total and scratch["fraction"] == 1.0 and scratch["n_shallow"] == "all"
    logged = [float(row["loss"]) for row in csv.DictReader(open(tmp_path / "transfer" / "log.csv"))]
    assert transfer["loss"][4] == pytest.approx(sum(logged[2:4]) / 2)
    assert transfer["loss"][8] is None  # the run never got there
    table = markdown([transfer, scratch], window=2)
    assert "| transfer | source | 1 |" in table and "| scratch | scratch | all |" in table


def test_schedules_warm_up_then_hold_decay_to_a_tenth_or_end_with_a_linear_decay():
    from training.train import OptimConfig, learning_rate

    optim = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine")
    assert learning_rate(optim, 0, 100) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + __import__("math").cos(0))))
    assert learning_rate(optim, 50, 100) == pytest.approx(0.55)
    assert learning_rate(optim, 100, 100) == pytest.approx(0.1)
    assert learning_rate(OptimConfig(lr=1.0), 70, 100) == 1.0  # constant, the release's recipe
    # A decay over the last steps: the same rates as the constant run before them, then linearly to zero.
    decaying = OptimConfig(lr=1.0, decay_steps=40)
    assert [learning_rate(decaying, step, 100) for step in (0, 60, 80, 99)] == pytest.approx([1.0, 1.0, 0.5, 0.025])
    # A warm start at its own rate, warmed up like any start, then the run's own rate from its first plain step.
    warm = OptimConfig(lr=0.1, warm_start_lr=1.0, warmup_steps=10)
    assert [learning_rate(warm, step, 100, warm_start_steps=30) for step in (4, 29, 30, 99)] == pytest.approx([0.5, 1.0, 0.1, 0.1])
    assert learning_rate(warm, 29, 100) == pytest.approx(0.1)  # no warm start: its rate is never used
    # Its end faded over 4 steps: the rate falls by a fifth of the gap a step and is the run's own from step 34.
    assert ([learning_rate(warm, step, 100, warm_start_steps=30, fade_steps=4) for step in (29, 30, 31, 33, 34, 99)]
            == pytest.approx([1.0, 0.82, 0.64, 0.28, 0.1, 0.1]))


@pytest.fixture(scope="module")
def two_process_corpus(source_dir, tmp_path_factory):
    """A corpus synthesized by two processes under accelerate (5 prompts x 2 seeds at 64 px)."""
    from training.prompts import toy_prompts

    work = tmp_path_factory.mktemp("two-process-corpus")
    prompts, corpus = work / "prompts.jsonl", work / "corpus"
    assert toy_prompts(5, seed=0, out=prompts) == 5
    synth = subprocess.run(
        LAUNCH + ["training.synthesize", f"source={source_dir}", f"prompts={prompts}", f"output_dir={corpus}",
                  "seeds_per_prompt=2", "height=64", "width=64", "steps=2", "batch_size=2", "threads=1"],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300,
    )
    assert synth.returncode == 0, synth.stderr[-3000:]
    return corpus


def test_two_cpu_processes_synthesize_disjoint_shards(two_process_corpus):
    corpus = two_process_corpus
    shards = [set((corpus / f"rendered-by-process-{rank}.txt").read_text().split()) for rank in range(2)]
    records = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 10 and shards[0] and shards[1]
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == {r["file_name"] for r in records}
    assert all((corpus / r["file_name"]).is_file() for r in records)


def test_vae_evaluation_measures_how_much_the_shipped_vae_widens_borders(tmp_path):
    from training.evaluate import evaluate_vae

    result = evaluate_vae(ROOT / "assets" / "tiny-source" / "vae", n_images=4, out=tmp_path)  # at the native size of its sampling.json
    assert result["psnr_db"] > 25
    assert result["edge_width_px_renders"] < 1.5  # antialiased vector drawing
    assert result["edge_width_px_reconstructions"] > 2 * result["edge_width_px_renders"]
    assert json.loads((tmp_path / "scores.json").read_text())["psnr_db"] == result["psnr_db"]
    assert (tmp_path / "reconstruction.png").is_file()


def test_token_probes_read_each_blocks_tokens_on_the_renders_grid_and_score_what_they_hold():
    """Probes see every block's image tokens, labelled on the same token grid as the model's (a latent source's
    tokens cover VAE factor x patch pixels); a probe reads a class that is in the tokens, and not one that is not."""
    from training.semantic import NUM_CLASSES
    from training.token_probes import block_tokens, probe_scores

    pipe = tiny.source_pipeline()
    tokens, labels = block_tokens(pipe, n_images=3, sigma=0.5, resolution=64, batch=2)
    assert list(tokens) == ["refiner"] + [f"block {i}" for i in range(len(pipe.transformer.layers))]
    assert labels.shape == (3, 16)  # 64 px / (VAE factor 8 x patch 2) = 4 x 4 tokens
    assert all(t.shape[:2] == (3, 16) for t in tokens.values())
    assert (labels < 3).any() and (labels >= 3).any()  # backgrounds and objects
    torch.manual_seed(0)
    classes = torch.randint(NUM_CLASSES, (48, 16))
    readable = torch.nn.functional.one_hot(classes, 32).float() + 0.1 * torch.randn(48, 16, 32)
    scores = probe_scores(readable, classes, n_train=32)
    assert scores["all"] == 1.0 and scores["objects"] == 1.0 and scores["object_colour"] == 1.0
    unreadable = probe_scores(torch.randn(48, 16, 32), classes, n_train=32)
    assert unreadable["objects"] < 0.3


def test_token_noise_share_is_what_the_noise_draws_add_to_a_blocks_tokens(source_dir, tmp_path):
    """Tokens that ignore the noise have share 0, tokens that are nothing else about 1; a source's block-0 tokens
    do not vary between draws without noise and do near pure noise."""
    from training.token_noise import evaluate_token_noise, noise_share

    torch.manual_seed(0)
    assert noise_share(torch.randn(1, 6, 4, 8).expand(4, -1, -1, -1)) == 0.0
    assert 0.8 < noise_share(torch.randn(4, 6, 4, 8)) < 1.2
    result = evaluate_token_noise(source_dir, sigmas=(0.0, 0.99), n_images=3, draws=3, size=64, out=tmp_path)
    clean, noisy = (level["noise_share"] for level in result["levels"])
    assert clean < 1e-6 and noisy > 0.05
    assert json.loads((tmp_path / "token-noise.json").read_text())["levels"] == result["levels"]


def test_corpora_load_through_datasets_as_imagefolder_or_parquet_with_aspect_buckets(tmp_path):
    from datasets import Dataset, Image as ImageFeature
    from PIL import Image

    from training.data import DatasetCorpus

    folder = tmp_path / "corpus"
    (folder / "images").mkdir(parents=True)
    rows = []
    for index, size in enumerate([(64, 64), (64, 64), (128, 64)]):
        Image.new("RGB", size, (index * 80, 0, 0)).save(folder / "images" / f"{index}.png")
        rows.append({"file_name": f"images/{index}.png", "prompt": f"prompt {index}", "seed": 100 + index})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    corpus = DatasetCorpus(folder, pixel_budget=64 * 64, multiple=16)
    assert len(corpus) == 3 and sorted(corpus.buckets) == [(64, 64), (80, 32)]  # 2:1 at about 64^2 pixels (90x45), floored to 16
    items = [item for step in range(20) for item in corpus.batch(step, 0, 2)]
    assert {(item.prompt, item.seed) for item in items} == {(r["prompt"], r["seed"]) for r in rows}
    assert all(len({item.load().size for item in corpus.batch(step, 0, 2)}) == 1 for step in range(20))  # one size a batch

    # A published corpus with its own column names, as parquet shards (data.kind: dataset).
    shards = tmp_path / "published" / "data"
    shards.mkdir(parents=True)
    table = Dataset.from_dict({"jpg": [str(folder / r["file_name"]) for r in rows], "caption": [r["prompt"] for r in rows],
                               "noise_seed": [r["seed"] for r in rows]}).cast_column("jpg", ImageFeature())
    table.to_parquet(str(shards / "train-00000.parquet"))
    published = DatasetCorpus(tmp_path / "published", 64 * 64, 16, image_column="jpg", caption_column="caption", seed_column="noise_seed")
    assert sorted(published.buckets) == sorted(corpus.buckets)
    assert published.item(2, (80, 32)).load().size == (80, 32)
    with pytest.raises(ValueError, match=r"no column\(s\) \['image', 'prompt', 'seed'\].*data.image_column"):
        DatasetCorpus(tmp_path / "published", 64 * 64, 16)


def test_merge_push_to_hub_offline_writes_everything_and_says_how_to_push(source_dir, tmp_path):
    """(Trained with the head predicting x0, a config value, not a tensor: the merged pipeline keeps it.)"""
    last = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "run", max_steps=2, ema_decay=0.5, log_with="none",
                                                              **{"model.prediction_type": "sample"})))
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"overall": 0.5, "single_object": 0.75, "prompts": 6}))
    command = [sys.executable, "-m", "training.merge", "--checkpoint", str(last), "--file", str(tmp_path / "merged.safetensors"),
               "--pipeline", str(tmp_path / "pipeline"), "--scores", str(scores), "--push-to-hub", "someone/l2p-toy"]
    result = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not pushed" in result.stdout and "HF_HUB_OFFLINE" in result.stdout
    assert f"hf upload someone/l2p-toy {tmp_path / 'pipeline'} ." in result.stdout
    assert (tmp_path / "merged.safetensors").is_file()
    card = (tmp_path / "pipeline" / "README.md").read_text()
    assert 'L2PPipeline.from_pretrained("someone/l2p-toy")' in card
    assert "**2 steps**" in card and "the EMA (decay 0.5)" in card and "| 0.500 | 0.750 |" in card
    assert "The Detailer Head's output means x0 (`prediction_type: sample`)" in card
    # The merged weights are the run's EMA, unless --raw asks for the raw ones.
    merged_pipeline = L2PPipeline.from_pretrained(tmp_path / "pipeline")
    assert merged_pipeline.transformer.config.prediction_type == "sample"
    # Laid over a pixel model that predicts velocity (as `evaluate toy-curve` does over its base), the checkpoint
    # brings its own prediction type.
    from training.checkpoints import load_trained

    velocity = L2PTransformer2DModel.from_config({**merged_pipeline.transformer.config, "prediction_type": "velocity"})
    load_trained(velocity, last)
    assert velocity.config.prediction_type == "sample"
    merged = merged_pipeline.transformer.state_dict()
    for key, tensor in load_file(str(last / "ema.safetensors")).items():
        assert torch.equal(merged[key], tensor), key
    from training.merge import merge

    merge(last, None, tmp_path / "raw", ema=False)
    raw = L2PPipeline.from_pretrained(tmp_path / "raw").transformer.state_dict()
    trained = load_file(str(last / "trainable.safetensors"))
    assert all(torch.equal(raw[key], tensor) for key, tensor in trained.items())
    raw_card = (tmp_path / "raw" / "README.md").read_text()
    assert "the raw trained weights" in raw_card
    assert f'L2PPipeline.from_pretrained("{tmp_path / "raw"}")' in raw_card  # the folder, not where it was staged


def test_training_memory_plan_adds_up_from_the_real_parameter_counts_and_the_readme_shows_it():
    from training.memory_plan import markdown, plan

    result = plan()
    assert result["counts"]["model"] == pytest.approx(6.17e9, rel=0.005)
    assert result["counts"]["trainable"] == pytest.approx(2.55e9, rel=0.01)
    for name in ("DeepSpeed ZeRO-2", "FSDP v2 (full shard)"):
        rows = {k: v for k, v in result[name].items() if k != "total"}
        assert result[name]["total"] == pytest.approx(sum(rows.values()))
        assert result[name]["total"] < 0.9 * 80
    assert result["FSDP v2 (full shard)"]["total"] < result["DeepSpeed ZeRO-2"]["total"]
    assert markdown(result) in (ROOT / "README.md").read_text()  # regenerate with python -m training.memory_plan


def test_bf16_units_are_read_from_the_cpu_flags():
    from l2p.device import cpu_has_bf16_units

    assert cpu_has_bf16_units("flags : fpu sse2 avx2 avx512f amx_bf16 amx_tile")
    assert cpu_has_bf16_units("flags : fpu avx512f avx512_bf16")
    assert not cpu_has_bf16_units("flags : fpu sse2 avx2 avx512f avx512bw")


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_it():
    from training.precision import resolve_mixed_precision

    assert resolve_mixed_precision("auto", "cpu", "flags : fpu avx2 amx_bf16 amx_tile") == "bf16"
    assert resolve_mixed_precision("auto", "cpu", "flags : fpu sse2 avx2") == "no"  # emulated bf16: 15x slower
    assert resolve_mixed_precision("bf16", "cpu", "flags : fpu sse2 avx2") == "bf16"  # an explicit choice stands
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        resolve_mixed_precision("bfloat16", "cpu")


def test_trainer_holds_the_text_encoder_in_the_asked_dtype_and_drops_the_copied_source_dit(source_dir, tmp_path):
    from accelerate import Accelerator

    from training.train import Trainer

    config = load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "run", **{"model.text_encoder_dtype": "bfloat16"}))
    trainer = Trainer(config, Accelerator(cpu=True))
    assert trainer.source.transformer is None  # its weights live on in the pixel model
    assert {p.dtype for p in trainer.source.text_encoder.parameters()} == {torch.bfloat16}
    features = trainer.caption_features(["a red circle"])[0]
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


def test_new_modules_of_the_transfer_can_learn_at_a_multiple_of_the_rate(source_dir, tmp_path):
    from accelerate import Accelerator

    from training.train import Trainer

    config = load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "run", **{"optim.new_module_lr_scale": 10}))
    trainer = Trainer(config, Accelerator(cpu=True))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train_step()
    source_group, new_group = trainer.optimizer.param_groups
    assert new_group["lr"] == pytest.approx(10 * source_group["lr"])
    names = {id(p): name for name, p in trainer.model.named_parameters()}
    new_names = {names[id(p)] for p in new_group["params"]}
    assert new_names and all(name.startswith(("all_x_embedder.", "local_decoder.")) for name in new_names)
    assert all(not names[id(p)].startswith(("all_x_embedder.", "local_decoder.")) for p in source_group["params"])
    assert all(not torch.equal(before[name], p) for name, p in trainer.model.named_parameters() if name in new_names)
    with pytest.raises(ConfigError, match="new_module_lr_scale"):
        validate(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "bad", **{"optim.new_module_lr_scale": 0})))


@pytest.mark.parametrize("init", ["scratch", "source"])
def test_the_latent_source_starts_fresh_or_continues_the_folders_own_dit(source_dir, tmp_path, init):
    """`model.init: scratch` trains the toy source from nothing; `source` anneals an already trained one."""
    from accelerate import Accelerator
    from diffusers import ZImageTransformer2DModel

    from training.train import Trainer

    config = load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "run", **{"model.kind": "latent", "model.init": init}))
    trainer = Trainer(config, Accelerator(cpu=True))
    folder = ZImageTransformer2DModel.from_pretrained(source_dir, subfolder="transformer").state_dict()
    model = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    assert model.keys() == folder.keys()
    assert all(torch.equal(model[name], folder[name]) for name in folder) == (init == "source")
    with pytest.raises(ConfigError, match="model.init"):
        validate(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "bad", **{"model.kind": "latent", "model.init": "pixel"})))


def test_token_alignment_targets_the_sources_tokens_at_the_block_and_trains_only_the_pixel_model(source_dir, tmp_path):
    """flow.align_weight: the source's forward stops at the aligned block and gives its output there; the loss is
    zero for the source's own tokens and its gradient reaches the pixel model's front, never the frozen source.
    A run with it trains and checkpoints the same tensors as one without; it is refused where there is no source."""
    from training.alignment import SourceAlignment
    from training.flow import predict

    source = tiny.source_pipeline().transformer
    pixel = L2PTransformer2DModel.from_source(source, patch_size=16, detailer_channels=[8, 8, 16, 16], trained_grid=4)
    torch.manual_seed(0)
    latents_t, t = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.6])  # 4x4 tokens of latent patch 2
    captions = [torch.randn(5, tiny.TEXT_DIM), torch.randn(9, tiny.TEXT_DIM)]
    expected = []
    handle = source.layers[0].register_forward_hook(lambda module, inputs, output: expected.append(output))
    with torch.no_grad():
        predict(source, latents_t, t, captions, latent=True)  # the source's whole forward, block 0's output kept
    handle.remove()
    seen = []
    source.layers[1].register_forward_pre_hook(lambda *args: seen.append(1))
    alignment = SourceAlignment(pixel, source, block=0)
    targets = alignment.targets(latents_t, t, captions)
    assert seen == [] and not targets.requires_grad  # stopped at block 0
    torch.testing.assert_close(targets, expected[0])
    predict(pixel, torch.randn(2, 3, 64, 64), t, captions, latent=False)  # the same token grid in pixels
    loss = alignment.loss(targets)
    loss.backward()
    assert loss.item() > 0 and pixel.all_x_embedder["16-1"].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in source.parameters())
    alignment._pixel_tokens = targets.clone()
    assert alignment.loss(targets).item() == 0.0

    plain = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "plain", max_steps=2, log_with="none")))
    aligned = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "aligned", max_steps=2, log_with="none",
                                                                 **{"flow.align_weight": 1.0})))
    trained = {name: load_file(str(folder / "trainable.safetensors")) for name, folder in (("plain", plain), ("aligned", aligned))}
    assert set(trained["plain"]) == set(trained["aligned"])
    assert any(not torch.equal(trained["plain"][k], trained["aligned"][k]) for k in trained["plain"])  # the loss changed the step
    shared = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "shared", max_steps=2, log_with="none",
                                                                **{"flow.align_weight": 1.0, "flow.align_noise": "shared"})))
    shared = load_file(str(shared / "trainable.safetensors"))
    assert any(not torch.equal(shared[k], trained["aligned"][k]) for k in shared)  # the teacher saw other noise
    with pytest.raises(ConfigError, match="flow.align_weight"):
        validate(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "bad", **{"flow.align_weight": 1.0,
                                                                                                  "model.init": "scratch"})))


def test_the_sources_decoded_estimate_as_a_target_runs_the_teacher_to_its_end(source_dir, tmp_path):
    """flow.teach_weight: the teacher's forward runs through instead of stopping at the aligned block, giving the
    same tokens there and the source's whole output; a run with it trains other weights than the alignment alone,
    the card names it, and it is refused without the source as the alignment's teacher."""
    from training.alignment import SourceAlignment
    from training.flow import predict
    from training.merge import loss_clauses

    source = tiny.source_pipeline().transformer
    pixel = L2PTransformer2DModel.from_source(source, patch_size=16, detailer_channels=[8, 8, 16, 16], trained_grid=4)
    torch.manual_seed(0)
    latents_t, t = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.6])
    captions = [torch.randn(5, tiny.TEXT_DIM), torch.randn(9, tiny.TEXT_DIM)]
    with torch.no_grad():
        expected = predict(source, latents_t, t, captions, latent=True)
    alignment = SourceAlignment(pixel, source, block=0)
    tokens, output = alignment.targets(latents_t, t, captions, whole=True)
    torch.testing.assert_close(tokens, alignment.targets(latents_t, t, captions))
    torch.testing.assert_close(output, expected)

    common = {"max_steps": 2, "log_with": "none", "checkpoint_every": 2, "flow.align_weight": 1.0}
    aligned, taught = (load_file(str(run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / name, **common, **extra)))
                                     / "trainable.safetensors")) for name, extra in (("aligned", {}), ("taught", {"flow.teach_weight": 1.0})))
    assert any(not torch.equal(aligned[k], taught[k]) for k in aligned)
    card = loss_clauses({"align_weight": 1.0, "align_steps": 1000, "teach_weight": 2.0})
    assert "clean estimate pulled toward the source's, drawn by its VAE (weight 2, not the paper's recipe) for the first 1000 steps" in card
    with pytest.raises(ConfigError, match="flow.teach_weight"):
        validate(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "bad", **{"flow.teach_weight": 1.0})))


def test_shared_alignment_noise_follows_the_vae_and_stays_the_unit_gaussian_the_teacher_was_trained_with():
    """flow.align_noise: shared: each VAE cell's pixel noise becomes its latent noise through the orthonormal map
    nearest the VAE's own (a linear 'VAE' with orthonormal rows is recovered), after area-averaging for an HR
    model's wider tokens, and what comes out is white unit noise, as the source's training noise was."""
    from training.alignment import noise_map, teacher_noise

    generator = torch.Generator().manual_seed(0)
    vae = torch.linalg.qr(torch.randn(3 * 8 * 8, 16, generator=generator)).Q.T.reshape(16, 3, 8, 8)
    pixels = torch.randn(64, 3, 64, 64, generator=generator) * 0.3 + 0.2
    fitted = noise_map(pixels, 1.7 * F.conv2d(pixels, vae, stride=8) - 0.4)  # standardised: scaled and shifted
    flat = fitted.reshape(16, -1)
    assert torch.allclose(flat @ flat.T, torch.eye(16), atol=1e-5)  # orthonormal rows
    assert (flat * vae.reshape(16, -1)).sum(1).min() > 0.95  # each latent channel's pixel direction found
    noise = teacher_noise(torch.randn(256, 3, 64, 64, generator=generator), 2, fitted)  # an HR shrink of 2, then the map
    assert noise.shape == (256, 16, 4, 4)
    channels = noise.transpose(0, 1).reshape(16, -1)
    assert torch.allclose(channels @ channels.T / channels.shape[1], torch.eye(16), atol=0.05)
    assert teacher_noise(torch.ones(1, 3, 8, 8), 4, None).eq(4).all()  # no map (a pixel teacher): averaged, scaled


def test_an_hr_model_aligns_to_its_1x_base_which_it_starts_as(tmp_path):
    """flow.align_to: base: the teacher is the 1x pixel model an HR variant grows from, fed the image shrunk to its
    side in pixels, noised with the HR noise averaged as the grown embedder averages it, at the noise level that
    leaves (the trainer's recipe). The grown model hands its frozen blocks the base's own tokens for an image whose
    patches are flat at the HR scale, so the loss starts at zero there and grows as the image gets detail the base
    cannot see. The model card names the teacher."""
    from training.alignment import SourceAlignment, teacher_noise
    from training.flow import noised, predict
    from training.merge import loss_clauses

    base = tiny.pixel_transformer(seed=2, patch_size=16, trained_grid=4).eval()
    grown = grow_for_high_resolution(base, 2).eval()
    alignment = SourceAlignment(grown, base, block=0, latent=False)
    torch.manual_seed(0)
    small, sigma, noise = torch.randn(2, 3, 64, 64), torch.tensor([0.7, 0.2]), torch.randn(2, 3, 128, 128)
    captions = [torch.randn(5, base.config.cap_feat_dim), torch.randn(9, base.config.cap_feat_dim)]
    teacher_sigma = dit_noise_level(sigma, grown.config.noise_pooling)[0]
    targets = alignment.targets(noised(small, teacher_noise(noise, 2, None), teacher_sigma), 1 - teacher_sigma, captions)
    image = F.interpolate(small, scale_factor=2, mode="nearest")
    with torch.no_grad():
        predict(grown, noised(image, noise, sigma), 1 - sigma, captions, latent=False)
        assert alignment.loss(targets).item() < 1e-10
        predict(grown, noised(image + torch.randn(2, 3, 128, 128), noise, sigma), 1 - sigma, captions, latent=False)
        assert alignment.loss(targets).item() > 0.01
    card = loss_clauses({"align_weight": 1.0, "align_steps": 800, "align_to": "base"})
    assert "token alignment to its 1x base model's tokens" in card and "source" not in card


def test_an_hr_run_grows_its_model_with_the_runs_prediction_type():
    """model.prediction_type reaches an HR variant (init: pixel) as it reaches a transfer: the grown model predicts
    what the run says, not what its 1x base did (a merge sets the run's type, so training must have used it too)."""
    from training.train import ModelConfig, initial_pixel_model

    base = tiny.pixel_transformer(seed=2, patch_size=16, trained_grid=4).eval()
    grown = {kind: initial_pixel_model(ModelConfig(init="pixel", patch_size=32, prediction_type=kind,
                                                   detailer_channels=None), None, base).eval()
             for kind in ("velocity", "blend")}
    assert base.config.prediction_type == grown["velocity"].config.prediction_type == "velocity"
    assert grown["blend"].config.prediction_type == "blend"
    x, t = torch.randn(1, 3, 128, 128), torch.tensor([0.4])
    captions = [torch.randn(5, base.config.cap_feat_dim)]
    with torch.no_grad():
        velocity, blend = (grown[kind](x, t, captions, return_dict=False)[0] for kind in ("velocity", "blend"))
    assert not torch.allclose(velocity[0], blend[0])  # the same weights, read as a different output


def test_a_faded_warm_start_trains_between_its_abrupt_end_and_no_end(source_dir, tmp_path):
    """flow.warm_start_fade: the step after the warm start still carries part of the alignment and the weighting
    (so the weights differ from an abrupt end and from the warm start kept on), and the card says so."""
    common = {"max_steps": 2, "log_with": "none", "checkpoint_every": 2, "flow.align_weight": 1.0, "flow.object_weight": 1.0,
              "optim.warm_start_lr": "2e-3"}
    def trained(name, **extra):
        return load_file(str(run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / name, **common, **extra)))
                             / "trainable.safetensors"))
    ends = {"abrupt": {"flow.align_steps": 1, "flow.object_weight_steps": 1},
            "faded": {"flow.align_steps": 1, "flow.object_weight_steps": 1, "flow.warm_start_fade": 3},
            "kept": {"flow.align_steps": 2, "flow.object_weight_steps": 2}}
    weights = {name: trained(name, **extra) for name, extra in ends.items()}
    for other in ("abrupt", "kept"):
        assert any(not torch.equal(weights["faded"][k], weights[other][k]) for k in weights["faded"]), other
    from training.merge import loss_clauses

    card = loss_clauses({"align_weight": 1.0, "align_steps": 1000, "object_weight": 4.0, "object_weight_steps": 1000,
                         "warm_start_fade": 300})
    assert card.count("for the first 1000 steps, fading out over 300 more") == 2, card


@pytest.mark.parametrize("weight, steps, warm_lr, card_texts", [
    ("flow.align_weight", "flow.align_steps", "2e-3",
     ["token alignment to the source's tokens (weight 1, not the paper's recipe) for the first 1 steps (a warm start), "
      "then the velocity MSE alone", "AdamW lr 0.001 after a warm start at 0.002"]),
    ("flow.object_weight", "flow.object_weight_steps", None,
     ["off-background pixels weighted 1 + 1 in the MSE (not the paper's recipe) for the first 1 steps"]),
])
def test_warm_start_is_a_run_resumed_with_the_plain_loss(source_dir, tmp_path, weight, steps, warm_lr, card_texts):
    """flow.align_steps / flow.object_weight_steps (and optim.warm_start_lr): one run adds its extra loss (at its own
    rate) for its first steps and then trains with the paper's plain loss alone, the same weights as a run stopped
    there and resumed without it (how the warm start was measured before it was one setting); and not the weights of
    a run with it throughout."""
    common = {"max_steps": 2, "log_with": "none", "checkpoint_every": 1, weight: 1.0}
    warm_rate, first_rate = ({"optim.warm_start_lr": warm_lr}, {"optim.lr": warm_lr}) if warm_lr else ({}, {})
    warm = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "warm", **common, **warm_rate, **{steps: 1})))
    run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "split", **{**common, **first_rate, "max_steps": 1})))
    split = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "split", **{**common, weight: 0.0})),
                resume=True)
    throughout = run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / "throughout", **common)))
    trained = {name: load_file(str(folder / "trainable.safetensors")) for name, folder in
               (("warm", warm), ("split", split), ("throughout", throughout))}
    assert split.name == warm.name == "checkpoint-0000002"
    assert all(torch.equal(trained["warm"][k], trained["split"][k]) for k in trained["warm"])
    assert any(not torch.equal(trained["warm"][k], trained["throughout"][k]) for k in trained["warm"])
    from training.merge import merge

    merge(warm, None, tmp_path / "pipeline")
    card = (tmp_path / "pipeline" / "README.md").read_text()
    assert all(text in card for text in card_texts), card


def test_a_border_weighted_run_trains_otherwise_than_a_plain_one_and_its_card_says_so(source_dir, tmp_path):
    """flow.border_weight reaches the loss (the same batches and noise, other weights after one step)."""
    common = {"max_steps": 1, "log_with": "none", "checkpoint_every": 1}
    def trained(name, **extra):
        return load_file(str(run(load_config(TrainConfig, None, pixel_overrides(source_dir, tmp_path / name, **common, **extra)))
                             / "trainable.safetensors"))
    plain, ringed = trained("plain"), trained("ringed", **{"flow.border_weight": 10.0})
    assert any(not torch.equal(plain[k], ringed[k]) for k in plain)
    from training.merge import loss_clauses

    assert "border weighted 1 + 10 more in the MSE (not the paper's recipe) throughout" in loss_clauses({"border_weight": 10.0})
