"""End to end: `python app.py` in a subprocess on a free port, used through gradio_client as an API user would."""

import subprocess
import sys
import time

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import ValidationError
from PIL import Image

from browser.server import APP, app_environment, free_port, save_tiny_hr_models, save_tiny_models, serve_app

STEPS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("app")
    assets = save_tiny_models(work / "assets")
    # The configured model cannot be loaded (as when offline): the app serves the embedded ones and says why.
    with serve_app(work, L2P_ASSETS=str(assets), L2P_PIXEL_MODEL=str(work / "missing-model"), L2P_STEPS=str(STEPS)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def png(path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    return image


def first(images) -> str:
    """The path of a run's first image, from the gallery /generate returns."""
    return images[0]["image"]


def test_named_endpoints_where_only_the_prompt_is_required(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert {"/generate", "/compare"} <= set(api["named_endpoints"])
    for name in ("/generate", "/compare"):
        required = [p["parameter_name"] for p in api["named_endpoints"][name]["parameters"] if not p["parameter_has_default"]]
        assert required == ["prompt"], name


def test_generate_with_only_a_prompt(client):
    images, seed, details = client.predict(prompt="a red circle", api_name="/generate")
    assert len(images) == 1 and images[0]["caption"] == f"seed {seed}" and png(first(images)).size == (256, 256)
    assert isinstance(seed, int) and f"seed {seed}" in details and "native" in details


def test_generate_echoes_the_seed_and_honours_size_and_seed(client):
    one = client.predict(prompt="a blue square", aspect_ratio="16:9", seed=1234, randomize_seed=False, api_name="/generate")
    again = client.predict(prompt="a blue square", aspect_ratio="16:9", seed=1234, randomize_seed=False, api_name="/generate")
    assert one[1] == again[1] == 1234
    assert png(first(one[0])).size == (256, 144)
    assert png(first(one[0])).tobytes() == png(first(again[0])).tobytes()


def test_downloaded_pngs_carry_their_settings(client):
    """A PNG round trip: what the API hands out says, in its text chunks, how to make it again."""
    images, seed, _ = client.predict(prompt="a red circle", negative_prompt="a blue square", steps=STEPS, guidance=2.5,
                                     seed=42, randomize_seed=False, api_name="/generate")
    text = png(first(images)).text
    assert (text["prompt"], text["negative_prompt"], text["seed"], text["steps"], text["guidance"], text["size"]) == (
        "a red circle", "a blue square", "42", str(STEPS), "2.5", "256x256")
    assert text["model"].endswith("tiny-l2p") and text["rope"] == "none"
    assert text["parameters"].splitlines() == [
        "a red circle", "Negative prompt: a blue square",
        f"Steps: {STEPS}, Sampler: Euler (flow matching), CFG scale: 2.5, Seed: 42, Size: 256x256, "
        f"Model: {text['model']}, RoPE: none, Shift: 3",
    ]
    _, source, pixel, *_ = client.predict(prompt="a red circle", seed=3, randomize_seed=False, api_name="/compare")
    assert png(source).text["model"].endswith("tiny-source") and png(pixel).text["model"].endswith("tiny-l2p")
    assert png(source).text["seed"] == png(pixel).text["seed"] == "3"


def test_free_width_and_height(client):
    images, *_ = client.predict(prompt="a red circle", preset="custom", width=160, height=96, steps=STEPS, api_name="/generate")
    assert png(first(images)).size == (160, 96)
    with pytest.raises(ValidationError, match="width: Width 150 is not a multiple of 16 px .* nearest valid: 144 or 160"):
        client.predict(prompt="a red circle", preset="custom", width=150, height=96, api_name="/generate")


def test_advanced_settings_change_the_image_and_are_checked(client):
    def image(**settings):
        images, *_ = client.predict(prompt="a red circle", steps=STEPS, seed=8, randomize_seed=False, api_name="/generate",
                                    **settings)
        return png(first(images))

    default = image()
    assert image(shift=3.0).tobytes() == default.tobytes()  # the release's shift is the default
    shifted = image(shift=1.0)
    assert shifted.tobytes() != default.tobytes() and shifted.text["shift"] == "1"
    zero_shot = {"preset": "1K", "rope": "dype"}
    assert image(**zero_shot).tobytes() != image(**zero_shot, dype_lambda_s=0.5).tobytes()
    with pytest.raises(ValidationError, match="Shift must be between 0.5 and 10"):
        image(shift=50.0)


def test_several_images_per_run_each_png_with_its_own_seed(client):
    images, seed, details = client.predict(prompt="a red circle", steps=STEPS, seed=70, randomize_seed=False,
                                           num_images=3, api_name="/generate")
    assert seed == 70 and "3 images, seeds 70, 71, 72" in details
    assert [item["caption"] for item in images] == ["seed 70 (1 of 3)", "seed 71 (2 of 3)", "seed 72 (3 of 3)"]
    assert [png(item["image"]).text["seed"] for item in images] == ["70", "71", "72"]
    alone, *_ = client.predict(prompt="a red circle", steps=STEPS, seed=72, randomize_seed=False, api_name="/generate")
    assert png(first(alone)).tobytes() == png(images[2]["image"]).tobytes()  # the same image a one-image run makes


def test_compare_returns_both_images_the_seed_and_the_cost_table(client):
    pair, source, pixel, costs, source_crop, pixel_crop, spectrum, seed, summary = client.predict(
        prompt="a red circle and a blue square", seed=5, randomize_seed=False, api_name="/compare")
    assert seed == 5 and "seed 5" in summary
    assert len(pair) == 2 and png(pair[0]).size == png(pair[1]).size == (256, 256)
    assert png(source).size == png(pixel).size == (256, 256)
    assert png(source_crop).size == png(pixel_crop).size
    assert costs["headers"] == ["pipeline", "stage", "time (s)", "ms / step", "weights (MiB)", "peak (MiB)", "working (MiB)"]
    stages = {(row[0], row[1]): row for row in costs["data"]}
    for key in [("latent", "text encoding (shared)"), ("latent", f"denoising × {STEPS}"), ("latent", "VAE decode"),
                ("latent", "total"), ("pixel", f"denoising × {STEPS}"), ("pixel", "total")]:
        assert key in stages, key
    assert stages[("latent", "VAE decode")][2] > 0 and stages[("pixel", f"denoising × {STEPS}")][3] > 0
    assert stages[("latent", "total")][4] > 0 and stages[("latent", "VAE decode")][4] is None
    assert {row[2] for row in spectrum["data"]} == {"latent source (VAE decoded)", "pixel (L2P)"}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(prompt="   "), "prompt: Enter a prompt: it is only whitespace."),
        (dict(prompt="red " * 600), "prompt: The prompt is 600 tokens long; the text encoder reads at most 507 tokens"),
        (dict(prompt="a", preset="16K"), "preset: Unknown resolution preset '16K'"),
        (dict(prompt="a", steps=500), "steps: Steps must be a whole number from 1 to 100, got 500"),
        (dict(prompt="a", guidance=-1), "guidance: Guidance must be between 0 and 10, got -1"),
        (dict(prompt="a", seed=-3, randomize_seed=False), "seed: Seed must be a whole number"),
        (dict(prompt="a", aspect_ratio="2:1"), "aspect_ratio: Unknown aspect ratio '2:1'"),
        (dict(prompt="a", shift=0.1), "shift: Shift must be between 0.5 and 10, got 0.1"),
        (dict(prompt="a", num_images=0), "num_images: Images per run must be a whole number from 1 to 4, got 0."),
        (dict(prompt="a", num_images=5), "num_images: Images per run must be a whole number from 1 to 4, got 5."),
    ],
)
def test_bad_inputs_are_refused_before_the_queue_with_their_message(client, arguments, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        client.predict(**arguments, api_name="/generate")


def test_compare_checks_its_own_settings(client):
    with pytest.raises(ValidationError, match="source_steps: Source steps must be a whole number from 1 to 100, got 0"):
        client.predict(prompt="a", source_steps=0, api_name="/compare")


def test_still_serving_after_bad_inputs_and_a_cancelled_run(client):
    job = client.submit(prompt="a red circle", steps=100, api_name="/generate")
    deadline = time.monotonic() + 60
    while job.status().code.name != "ITERATING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.cancel()
    images, seed, _ = client.predict(prompt="a green triangle", seed=9, randomize_seed=False, api_name="/generate")
    assert seed == 9 and png(first(images)).size == (256, 256)


def test_the_page_says_why_the_configured_models_were_not_loaded(server):
    config = httpx.get(f"{server}/config", timeout=10).text
    assert "Serving the embedded tiny models." in config and "missing-model" in config
    assert "could not be loaded" in config
    assert "a red circle and a blue square" in config  # the toy world's examples


def test_without_models_the_app_exits_naming_the_build_command(tmp_path):
    environment = app_environment(tmp_path, free_port(), L2P_ASSETS=str(tmp_path / "no-assets"))
    done = subprocess.run([sys.executable, str(APP)], cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode != 0
    assert "python -m training.toy_assets" in done.stderr and "tiny-l2p" in done.stderr


def test_with_an_hr_model_compare_at_its_size_returns_three_images(tmp_path):
    """The app on a 128-px pair with its 512-px HR variant beside it (as the embedded assets are laid out): the HR
    preset is offered, and Compare there returns the HR model's image and crop after the usual outputs."""
    assets = save_tiny_hr_models(tmp_path / "assets")
    with serve_app(tmp_path, L2P_ASSETS=str(assets), L2P_STEPS=str(STEPS), L2P_SOURCE_STEPS=str(STEPS)) as url:
        assert "the HR model's native size (Compare: 3 models)" in httpx.get(f"{url}/config", timeout=10).text
        client = Client(url, verbose=False)
        outputs = client.predict(prompt="a red circle", preset="hr", seed=2, randomize_seed=False, api_name="/compare")
        pair, source, pixel, costs, source_crop, pixel_crop, spectrum, seed, summary, hr, hr_crop = outputs
        assert png(source).size == png(pixel).size == png(hr).size == (512, 512) and seed == 2
        assert png(hr).text["model"].endswith("tiny-l2p-hr") and png(hr_crop).size == png(pixel_crop).size
        totals = {row[0]: row for row in costs["data"] if row[1] == "total"}
        assert list(totals) == ["latent", "pixel", "HR pixel"] and all(row[2] > 0 and row[5] > 0 for row in totals.values())
        assert "- HR model (native at this size" in summary
        *_, hr, hr_crop = client.predict(prompt="a red circle", steps=1, source_steps=1, api_name="/compare")
        assert hr is None and hr_crop is None  # at other sizes Compare is the two-way one
        images, *_ = client.predict(prompt="a red circle", preset="hr", steps=1, api_name="/generate")
        assert png(first(images)).size == (512, 512)  # Generate draws the HR size with the 1x model zero-shot
