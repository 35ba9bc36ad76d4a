"""L2P demo: prompt to pixels, and the pixel model side by side with its latent source, with what each costs.

Layout, events and formatting only; everything else is `l2p.demo`. The models load once, here at import
(as ZeroGPU wants), from the configuration described in `l2p/demo.py` (environment variables or the YAML
file named by L2P_CONFIG); with none, the embedded tiny models in assets/ are served.

    python app.py                 # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, or --host / --port)
"""

import spaces  # noqa: I001 - first, before anything touches CUDA (ZeroGPU); a no-op elsewhere

import argparse
import importlib.util
import inspect
import logging

import gradio as gr
import pandas as pd

from l2p.demo import (
    GUIDANCE_RANGE,
    MAX_SEED,
    STEPS_RANGE,
    CompareResult,
    Demo,
    DemoConfig,
    DemoError,
    Preview,
    Request,
    SourceDone,
    format_bytes,
    format_estimate,
    format_seconds,
)
from l2p.presets import ASPECT_RATIOS, NATIVE, ROPE_CHOICES

logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("l2p").setLevel(logging.INFO)

CONFIG = DemoConfig.load()
DEMO = Demo.start(CONFIG)
DEFAULTS = DEMO.defaults

GENERATE_FIELDS = ["prompt", "negative_prompt", "preset", "aspect_ratio", "steps", "guidance", "seed", "randomize_seed", "rope"]
COMPARE_FIELDS = [*GENERATE_FIELDS, "source_steps", "source_guidance"]
PRESET_HEADERS = ["preset", "size", "for this model", "Generate: time", "Generate: peak memory", "Compare: time",
                  "Compare: peak memory"]

CSS = """
.l2p-notice { border-left: 4px solid #d97706; padding: 0.25em 0.75em; background: rgba(217, 119, 6, 0.08); }
.l2p-facts { font-size: 0.9em; opacity: 0.85; }
"""


def CheckedSlider(*args, **kwargs) -> gr.Slider:
    """A slider that leaves range checks to the event's validator, whose message names the setting (the slider's
    own check would answer an API call first, naming no setting). Not a subclass: Gradio writes a .pyi stub
    next to any module that defines a component class."""
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider


# -- input checks (run before the queue) ----------------------------------------------------------------------
def _checks(fields, kind, values):
    problems = DEMO.problems(Request(**dict(zip(fields, values))), kind)
    return [gr.validate(name not in problems, problems.get(name, "")) for name in fields]


def check_generate(prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope):
    return _checks(GENERATE_FIELDS, "generate", locals().values())


def check_compare(prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope,
                  source_steps, source_guidance):
    return _checks(COMPARE_FIELDS, "compare", locals().values())


# -- ZeroGPU durations: from the request's cost estimate -------------------------------------------------------
def _request(function, args, kwargs) -> Request:
    """The Request a call of `generate` or `compare` stands for, defaults filled in."""
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return Request(**bound.arguments)


def generate_seconds(*args, **kwargs):
    return DEMO.gpu_seconds(_request(generate, args, kwargs), "generate")


def compare_seconds(*args, **kwargs):
    return DEMO.gpu_seconds(_request(compare, args, kwargs), "compare")


# -- events ---------------------------------------------------------------------------------------------------
@spaces.GPU(duration=generate_seconds)
def generate(
    prompt: str,
    negative_prompt: str = "",
    preset: str = NATIVE,
    aspect_ratio: str = "1:1",
    steps: int = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
    seed: int = 0,
    randomize_seed: bool = True,
    rope: str = "auto",
):
    """Generate an image from a prompt with the L2P pixel model (no VAE).

    Args:
        prompt: what to draw.
        negative_prompt: what to steer away from (used when guidance > 1).
        preset: long side: "native" (the model's own size), "1K", "2K", "4K" or "8K".
        aspect_ratio: "1:1", "4:3", "3:4", "16:9" or "9:16".
        steps: denoising steps, 1 to 100.
        guidance: classifier-free guidance scale, 0 to 10 (off at 1 or below).
        seed: the noise seed, used when randomize_seed is false.
        randomize_seed: draw a new seed (returned with the image).
        rope: position scaling past the trained size: "auto", "none", "pi", "ntk", "yarn" or "dype".

    Returns:
        The image (PNG), the seed used, and a line about the run.
    """
    yield from _generate(Request(**dict(zip(GENERATE_FIELDS, locals().values()))))


def _generate(request: Request):
    try:
        for event in DEMO.generate(request):
            if isinstance(event, Preview):
                yield event.image, gr.skip(), f"Step {event.step} of {event.total} · the current clean-image estimate"
            else:
                yield event.image, event.seed, _generate_details(event)
    except DemoError as error:
        raise gr.Error(str(error)) from None


@spaces.GPU(duration=compare_seconds)
def compare(
    prompt: str,
    negative_prompt: str = "",
    preset: str = NATIVE,
    aspect_ratio: str = "1:1",
    steps: int = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
    seed: int = 0,
    randomize_seed: bool = True,
    rope: str = "auto",
    source_steps: int = DEFAULTS.source_steps,
    source_guidance: float = DEFAULTS.source_guidance,
):
    """Run the latent source model and the L2P pixel model on the same prompt and seed, and measure both.

    Args:
        prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope: as for
            generate (steps and guidance are the pixel model's).
        source_steps: denoising steps of the latent source.
        source_guidance: guidance of the latent source, on the same neg + s (pos - neg) scale.

    Returns:
        Both images (PNG) for a slider, each alone, the per-stage cost table, 100% crops of the same region,
        both images' radially averaged power spectra, the seed used, and a summary.
    """
    request = Request(**dict(zip(COMPARE_FIELDS, locals().values())))
    skip = gr.skip()
    try:
        for event in DEMO.compare(request):
            if isinstance(event, Preview):
                who = "Latent source" if event.pipeline == "source" else "Pixel model"
                yield skip, skip, skip, skip, skip, skip, skip, skip, f"{who}: step {event.step} of {event.total}"
            elif isinstance(event, SourceDone):
                yield skip, event.image, skip, skip, skip, skip, skip, event.seed, "Latent source done; the pixel model runs now."
            else:
                yield _compare_outputs(event)
    except DemoError as error:
        raise gr.Error(str(error)) from None


@spaces.GPU(duration=generate_seconds)
def example(prompt: str):
    """An example at the model's native size with a fixed seed, so its cached result is reproducible."""
    yield from _generate(Request(prompt, steps=DEFAULTS.steps, guidance=DEFAULTS.guidance))


def preset_table(aspect_ratio, steps, guidance, source_steps, source_guidance):
    numbers = [steps, guidance, source_steps, source_guidance]
    if not all(isinstance(n, (int, float)) for n in numbers):
        return gr.skip()
    return pd.DataFrame(DEMO.preset_rows(aspect_ratio, *numbers), columns=PRESET_HEADERS)


def run_summary(preset, aspect_ratio, steps, guidance, rope, source_steps, source_guidance):
    request = Request("", preset=preset, aspect_ratio=aspect_ratio, steps=steps, guidance=guidance, rope=rope,
                      source_steps=source_steps, source_guidance=source_guidance)
    try:
        generate_line = DEMO.run_summary(request, "generate")
        compare_line = format_estimate(DEMO.compare_estimate(
            *DEMO.size(preset, aspect_ratio), steps, guidance, source_steps, source_guidance))
    except (ValueError, TypeError) as error:
        return f"{error}"
    return f"**This run:** {generate_line} · Compare: {compare_line}"


# -- formatting -----------------------------------------------------------------------------------------------
def _generate_details(result) -> str:
    status = "native for this model" if result.native else "zero-shot (past the trained size)"
    estimate = f" (estimated {format_seconds(result.estimate.seconds)})" if result.estimate is not None else ""
    return (f"**{result.width}×{result.height}** · {status} · RoPE {result.rope or 'plain'} · seed {result.seed} · "
            f"took {format_seconds(result.seconds)}{estimate}")


def _compare_outputs(result: CompareResult):
    headers, rows = Demo.cost_table(result)
    spectrum = pd.DataFrame(Demo.spectrum_rows(result))
    return (
        (result.source_image, result.pixel_image),
        result.source_image,
        result.pixel_image,
        pd.DataFrame(rows, columns=headers),
        result.crops["source"],
        result.crops["pixel"],
        spectrum,
        result.seed,
        _compare_summary(result),
    )


def _compare_summary(result: CompareResult) -> str:
    source_s, pixel_s = result.total_seconds("source"), result.total_seconds("pixel")
    ratio = source_s / pixel_s if pixel_s > 0 else float("inf")
    shares = Demo.high_frequency_shares(result)
    left, top, right, bottom = result.crop_box
    status = {k: "native" if v else "zero-shot" for k, v in result.native.items()}
    estimates = [f"{name} {format_seconds(e.seconds)}" for name, e in result.estimates.items() if e is not None]
    memory = ("CUDA memory allocated by tensors" if DEMO.device.type == "cuda"
              else "this process's resident memory (RSS), sampled every 5 ms; it includes the web server")
    return "\n".join([
        f"**{result.width}×{result.height}, seed {result.seed}.** Latent source ({status['source']}, RoPE "
        f"{result.rope['source'] or 'plain'}): {format_seconds(source_s)} in all. Pixel model ({status['pixel']}, RoPE "
        f"{result.rope['pixel'] or 'plain'}): {format_seconds(pixel_s)} in all, "
        f"{'%.1f× faster' % ratio if ratio >= 1 else '%.1f× slower' % (1 / ratio)} end to end.",
        f"- Estimated before the run: {', '.join(estimates) or 'no estimate'}.",
        f"- Text encoder: {'shared, so the prompt was encoded once for both' if result.shares_text_encoder else 'one per pipeline'}.",
        f"- Weights: latent source {format_bytes(result.weights['source'])} (DiT + VAE + text encoder), pixel model "
        f"{format_bytes(result.weights['pixel'])} (DiT + Detailer Head + text encoder). Memory columns measure {memory}; "
        f"*working* is the peak minus what was in use when the stage began; a total's peak is the weights plus the "
        f"most working memory of its stages.",
        f"- Share of spectral power above 0.25 cycles/pixel: source {shares['source']:.1%}, pixel {shares['pixel']:.1%}.",
        f"- Crops: pixels ({left}, {top}) to ({right}, {bottom}), the most detailed region, at 100%"
        + (f", enlarged ×{result.crop_factor} with nearest-neighbour so each pixel stays a square." if result.crop_factor > 1 else "."),
    ])


def _header() -> str:
    return (
        "# L2P: latent to pixel\n"
        "A pretrained latent diffusion transformer (Z-Image) turned into a pixel-space generator: no VAE, RGB "
        "patches straight into the DiT, and a small U-Net *Detailer Head* that paints the pixels. "
        "**Generate** draws with the pixel model, up to 4K and 8K zero-shot; **Compare** runs the latent source "
        "on the same prompt and seed and shows what each stage costs."
    )


def _facts() -> str:
    facts = DEMO.describe()
    return (
        f"Pixel model: {facts['pixel']} · Latent source: {facts['source']} · Models: {facts['origin']} · "
        f"Text encoder: {facts['text_encoder']} · Device: {facts['device']} · Estimates: {facts['estimates']}"
    )


# -- layout ---------------------------------------------------------------------------------------------------
with gr.Blocks(title="L2P: latent to pixel", delete_cache=(3600, 3600)) as demo:
    gr.Markdown(_header())
    if DEMO.models.notice:
        gr.Markdown(f"**Serving the embedded tiny models.** {DEMO.models.notice}", elem_classes="l2p-notice")
    gr.Markdown(_facts(), elem_classes="l2p-facts")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder=DEMO.examples[0], elem_id="prompt")
            with gr.Row():
                preset = gr.Dropdown(DEMO.preset_choices(), value=NATIVE, label="Resolution (long side)",
                                     allow_custom_value=True, elem_id="preset")
                aspect_ratio = gr.Radio(list(ASPECT_RATIOS), value="1:1", label="Aspect ratio", elem_id="aspect")
            summary = gr.Markdown(run_summary(NATIVE, "1:1", DEFAULTS.steps, DEFAULTS.guidance, "auto",
                                              DEFAULTS.source_steps, DEFAULTS.source_guidance))
            with gr.Row():
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate", scale=2)
                compare_button = gr.Button("Compare with latent", elem_id="compare", scale=2)
                stop_button = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, min_width=80)
            with gr.Accordion("Settings", open=False):
                negative_prompt = gr.Textbox("", label="Negative prompt", lines=1)
                steps = CheckedSlider(*STEPS_RANGE, value=DEFAULTS.steps, step=1, label="Steps")
                guidance = CheckedSlider(*GUIDANCE_RANGE, value=DEFAULTS.guidance, step=0.1,
                                         label="Guidance (neg + s·(pos − neg); off at 1 or below)")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label=f"Seed (0 to {MAX_SEED})")
                    randomize_seed = gr.Checkbox(value=True, label="Randomize seed")
                rope = gr.Dropdown(list(ROPE_CHOICES), value="auto", allow_custom_value=True,
                                   label="RoPE extrapolation (auto: DyPE past the trained size)")
                gr.Markdown("Compare: the latent source's own settings")
                source_steps = CheckedSlider(*STEPS_RANGE, value=DEFAULTS.source_steps, step=1, label="Source steps")
                source_guidance = CheckedSlider(*GUIDANCE_RANGE, value=DEFAULTS.source_guidance, step=0.1,
                                                label="Source guidance (same scale)")
        with gr.Column(scale=3, min_width=400):
            with gr.Tabs() as tabs:
                with gr.Tab("Pixel model", id="generate"):
                    image = gr.Image(label="Image", format="png", type="pil", interactive=False,
                                     buttons=["download", "fullscreen"], elem_id="image")
                    with gr.Row():
                        seed_used = gr.Number(label="Seed used", precision=0, interactive=False)
                    details = gr.Markdown(label="Details")
                with gr.Tab("Latent vs pixel", id="compare"):
                    slider = gr.ImageSlider(label="Latent source ↔ pixel model", format="png",
                                            type="pil", buttons=["download", "fullscreen"], elem_id="slider")
                    compare_seed = gr.Number(label="Seed used", precision=0, interactive=False)
                    compare_summary = gr.Markdown(label="Summary")
                    costs = gr.Dataframe(label="Cost per stage", interactive=False, elem_id="costs")
                    with gr.Row():
                        source_image = gr.Image(label="Latent source (VAE decoded)", format="png", type="pil",
                                                interactive=False, buttons=["download"])
                        pixel_image = gr.Image(label="Pixel model (L2P)", format="png", type="pil",
                                               interactive=False, buttons=["download"])
                    with gr.Row():
                        source_crop = gr.Image(label="Latent source, crop at 100%", format="png", type="pil",
                                               interactive=False)
                        pixel_crop = gr.Image(label="Pixel model, crop at 100%", format="png", type="pil",
                                              interactive=False)
                    spectrum = gr.LinePlot(x="cycles per pixel", y="power (dB)", color="image", elem_id="spectrum",
                                           label="Power spectrum")
                    gr.Markdown("Radially averaged power spectra of both images: the power at each spatial frequency, "
                                "up to 0.5 cycles per pixel. A VAE decoder loses the right-hand (high-frequency) end.")
    presets_table = gr.Dataframe(
        preset_table("1:1", DEFAULTS.steps, DEFAULTS.guidance, DEFAULTS.source_steps, DEFAULTS.source_guidance),
        headers=PRESET_HEADERS, interactive=False, label="Every preset on this hardware, at this aspect ratio (estimates)",
    )
    gr.Examples([[p] for p in DEMO.examples], inputs=[prompt], outputs=[image, seed_used, details], fn=example,
                cache_examples=True, cache_mode="lazy", label="Examples (at the native size, seed 0)")

    generate_inputs = [prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope]
    compare_inputs = [*generate_inputs, source_steps, source_guidance]
    generate_event = gr.on(
        [generate_button.click, prompt.submit], generate, generate_inputs, [image, seed_used, details],
        api_name="generate", validator=check_generate, concurrency_id="device", concurrency_limit=CONFIG.concurrency,
    )
    generate_button.click(lambda: gr.Tabs(selected="generate"), None, tabs, queue=False, api_visibility="private")
    compare_event = compare_button.click(
        compare, compare_inputs,
        [slider, source_image, pixel_image, costs, source_crop, pixel_crop, spectrum, compare_seed, compare_summary],
        api_name="compare", validator=check_compare, concurrency_id="device", concurrency_limit=CONFIG.concurrency,
    )
    compare_button.click(lambda: gr.Tabs(selected="compare"), None, tabs, queue=False, api_visibility="private")
    stop_button.click(None, None, None, cancels=[generate_event, compare_event], queue=False, api_visibility="private")

    cost_inputs = [aspect_ratio, steps, guidance, source_steps, source_guidance]
    gr.on([c.change for c in cost_inputs], preset_table, cost_inputs, presets_table, queue=False,
          api_visibility="private", show_progress="hidden")
    summary_inputs = [preset, aspect_ratio, steps, guidance, rope, source_steps, source_guidance]
    gr.on([c.change for c in summary_inputs], run_summary, summary_inputs, summary, queue=False,
          api_visibility="private", show_progress="hidden")

demo.queue(max_size=CONFIG.max_queue, default_concurrency_limit=CONFIG.concurrency)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve the L2P demo.")
    parser.add_argument("--host", help="address to listen on (default: GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT, else 7860)")
    args = parser.parse_args(argv)
    mcp = CONFIG.mcp
    if mcp and importlib.util.find_spec("mcp") is None:
        logging.warning('L2P_MCP is set but the MCP extra is missing (pip install "gradio[mcp]"); serving without MCP')
        mcp = False
    demo.launch(server_name=args.host, server_port=args.port, mcp_server=mcp, css=CSS, footer_links=["api", "gradio", "settings"])


if __name__ == "__main__":
    main()
