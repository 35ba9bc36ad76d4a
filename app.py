"""L2P demo: prompt to pixels, and the pixel model side by side with its latent source, with what each costs.

Layout and event wiring only; everything else is `l2p.demo` (its text included). The models load once, here at
import (as ZeroGPU wants), from the configuration described in `l2p/demo/__init__.py` (environment variables or
the YAML file named by L2P_CONFIG); with none, the embedded tiny models in assets/ are served.

    python app.py                 # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, or --host / --port)
"""

import argparse


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the L2P demo.")
    parser.add_argument("--host", help="address to listen on (default: GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--check", action="store_true",
                        help="load the models and the cost model, print what would be served, and exit (0: configured "
                             "models served as asked; 3: served with a notice, e.g. fallen back to the embedded models)")
    return parser.parse_args(argv)


ARGUMENTS = parse_arguments() if __name__ == "__main__" else None  # Gradio's reload mode and Spaces import this file
if ARGUMENTS is not None and ARGUMENTS.check:
    # The check builds no page, so it runs before Gradio is imported: about half the app's start-up time.
    from l2p.demo.check import check

    raise SystemExit(check())

import spaces  # noqa: I001 - first of what serves, before anything touches CUDA (ZeroGPU); a no-op elsewhere

import dataclasses
import importlib.util
import logging

import gradio as gr
import pandas as pd

from l2p.demo import (
    ASPECT_RATIOS,
    AUTO_ROPE,
    COMPARE_FIELDS,
    CUSTOM,
    DYPE_RANGE,
    GENERATE_FIELDS,
    GUIDANCE_RANGE,
    IMAGES_RANGE,
    MAX_SEED,
    NATIVE,
    PRESET_HEADERS,
    ROPE_CHOICES,
    SHIFT_RANGE,
    STEPS_RANGE,
    Demo,
    DemoConfig,
    DemoError,
    Preview,
    Request,
    SourceDone,
    Waiting,
    configure_logging,
    history,
    results,
)

configure_logging()

CONFIG = DemoConfig.load()
DEMO = Demo.start(CONFIG)
DEFAULTS = DEMO.defaults
# A native high-resolution model is served (L2P_HR_MODEL, or the embedded one): Compare at its size shows three.
HAS_HR = DEMO.models.hr is not None
# Where the pixel model's folder starts guidance later than the first step (sampling.json's cfg_start), say so.
GUIDANCE_INFO = (f"The pixel model leaves its noisiest steps unguided (normalised time below "
                 f"{DEMO.models.pixel_cfg_start:g}, as its sampling.json says): guided there, it draws empty canvases."
                 if DEMO.models.pixel_cfg_start else None)

HEADER = (
    "# L2P: latent to pixel\n"
    "A pretrained latent diffusion transformer (Z-Image) turned into a pixel-space generator: no VAE, RGB "
    "patches straight into the DiT, and a small U-Net *Detailer Head* that paints the pixels. "
    "**Generate** draws with the pixel model, up to 4K and 8K zero-shot; **Compare** runs the latent source "
    "on the same prompt and seed and shows what each stage costs"
    + ("; at the HR size it adds the native high-resolution model." if HAS_HR else ".")
)
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


# -- input checks (run before the queue) and ZeroGPU durations; each gets the event's inputs, in the order of
# GENERATE_FIELDS / COMPARE_FIELDS, which is Request's ---------------------------------------------------------
def _validations(request: Request, kind: str, fields) -> list:
    """The checks Gradio runs before queueing: each field's problem, then (for a valid request) room in the queue,
    reported on the prompt (a validation message reaches page and API alike; an error raised here would reach
    API users as a bare "400 Bad Request")."""
    problems = DEMO.problems(request, kind)
    if not problems:
        try:
            DEMO.admit(request, kind)
        except DemoError as error:
            problems = {"prompt": str(error)}
    return [gr.validate(name not in problems, problems.get(name, "")) for name in fields]


def check_generate(*inputs):
    return _validations(Request.of(GENERATE_FIELDS, inputs), "generate", GENERATE_FIELDS)


def check_compare(*inputs):
    return _validations(Request.of(COMPARE_FIELDS, inputs), "compare", COMPARE_FIELDS)


def generate_seconds(request: Request):
    return DEMO.gpu_seconds(request, "generate")


def compare_seconds(request: Request):
    return DEMO.gpu_seconds(request, "compare")


# -- the runs on the device: ZeroGPU holds a GPU for these calls only, for the seconds their estimate asks; a run
# waits for its turn before (DEMO.queued), holding none ----------------------------------------------------------
@spaces.GPU(duration=generate_seconds)
def generate_on_device(request: Request):
    yield from DEMO.run(request, "generate")


@spaces.GPU(duration=compare_seconds)
def compare_on_device(request: Request):
    yield from DEMO.run(request, "compare")


# -- events ---------------------------------------------------------------------------------------------------
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
    shift: float = DEFAULTS.shift,
    dype_lambda_s: float = DEFAULTS.dype_lambda_s,
    dype_lambda_t: float = DEFAULTS.dype_lambda_t,
    width: int | None = None,
    height: int | None = None,
    num_images: int = 1,
):
    """Generate images from a prompt with the L2P pixel model (no VAE).

    Args:
        prompt: what to draw.
        negative_prompt: what to steer away from (used when guidance > 1).
        preset: long side: "native" (the model's own size), "1K", "2K", "4K" or "8K"; "hr" (the native size of the
            high-resolution model, where one is served: Generate draws it with the 1x model zero-shot); or "custom"
            for width x height.
        aspect_ratio: "1:1", "4:3", "3:4", "16:9" or "9:16".
        steps: denoising steps, 1 to 100.
        guidance: classifier-free guidance scale, 0 to 10 (off at 1 or below).
        seed: the noise seed, used when randomize_seed is false.
        randomize_seed: draw a new seed (returned with the image).
        rope: position scaling past the trained size: "auto", "none", "pi", "ntk", "yarn" or "dype".
        shift: the noise schedule's shift, 0.5 to 10 (the release samples with 3; the paper found 4 best at 4K).
        dype_lambda_s, dype_lambda_t: DyPE's scale and exponent (0 to 5; 2 and 2), used when DyPE applies.
        width, height: with preset "custom", the size in pixels (multiples of what both models accept, 16 for Z-Image).
        num_images: how many images, 1 to 4, one after another on seeds seed, seed + 1, ...

    Returns:
        The images (a gallery of PNGs, each captioned with its seed and carrying its own settings), the first
        image's seed, and a line about the run.
    """
    yield from _page_run(_generate(Request.of(GENERATE_FIELDS, (
        prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope, shift, dype_lambda_s,
        dype_lambda_t, width, height, num_images))))


def _page_run(outputs):
    """A run's outputs as the page takes them: when the run fails, the progress state is reset first (a failed run
    was not stopped: see `stopped`), and the demo's own errors are shown as Gradio errors."""
    try:
        yield from outputs
    except Exception as error:
        yield {progress: None}
        if isinstance(error, DemoError):
            raise gr.Error(str(error)) from None
        raise


def _generate(request: Request):
    """Generate's outputs: images, seed, details, and the run's progress (a State Stop reads; None when done)."""
    skip = gr.skip()
    for event in DEMO.queued(request, "generate", generate_on_device):
        if isinstance(event, Waiting):
            yield skip, skip, results.progress_line(event), event
        elif isinstance(event, Preview):  # its image is None for short runs (l2p.demo.runs.PREVIEW_MIN_RUN_S)
            images = skip if event.image is None else [event.image]
            yield images, skip, results.progress_line(event), dataclasses.replace(event, image=None)
        else:
            note = DEMO.vocabulary_note(request.prompt)
            yield (results.captioned_images(event), event.seed,
                   results.generate_details(event) + (f"\n\n{note}" if note else ""), None)


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
    shift: float = DEFAULTS.shift,
    dype_lambda_s: float = DEFAULTS.dype_lambda_s,
    dype_lambda_t: float = DEFAULTS.dype_lambda_t,
    width: int | None = None,
    height: int | None = None,
    source_steps: int = DEFAULTS.source_steps,
    source_guidance: float = DEFAULTS.source_guidance,
):
    """Run the latent source model and the L2P pixel model on the same prompt and seed, and measure both.

    Args:
        prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope, shift,
            dype_lambda_s, dype_lambda_t, width, height: as for generate (steps, guidance and shift are the pixel model's).
        source_steps: denoising steps of the latent source.
        source_guidance: guidance of the latent source, on the same neg + s (pos - neg) scale.

    At the native size of the high-resolution model, where one is served (preset "hr"), the native HR model runs
    third, with the pixel model's steps and guidance and its own noise shift.

    Returns:
        Both images (PNG) for a slider, each alone, the per-stage cost table, 100% crops of the same region,
        the images' radially averaged power spectra, the seed used, and a summary; where an HR model is served,
        also its image and crop (None at sizes other than its native one).
    """
    yield from _page_run(_compare(Request.of(COMPARE_FIELDS, (
        prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope, shift, dype_lambda_s,
        dype_lambda_t, width, height, source_steps, source_guidance))))


def _compare(request: Request):
    """Compare's outputs (see `_compare_outputs`), then the run's progress (a State Stop reads; None when done)."""
    skip = gr.skip()
    hr = (skip, skip) if HAS_HR else ()  # the HR model's image and crop
    for event in DEMO.queued(request, "compare", compare_on_device):
        if isinstance(event, Waiting):
            yield skip, skip, skip, skip, skip, skip, skip, skip, results.progress_line(event), *hr, event
        elif isinstance(event, Preview):
            yield (skip, skip, skip, skip, skip, skip, skip, skip, results.progress_line(event), *hr,
                   dataclasses.replace(event, image=None))
        elif isinstance(event, SourceDone):
            yield skip, event.image, skip, skip, skip, skip, skip, event.seed, results.progress_line(event), *hr, skip
        else:
            yield *_compare_outputs(event), None


def _compare_outputs(result):
    """A comparison's result, in the order of the Compare event's outputs."""
    headers, rows = Demo.cost_table(result)
    return (
        (result.source_image, result.pixel_image),
        result.source_image,
        result.pixel_image,
        pd.DataFrame(rows, columns=headers),
        result.crops["source"],
        result.crops["pixel"],
        pd.DataFrame(Demo.spectrum_rows(result)),
        result.seed,
        results.compare_summary(DEMO, result),
        *((result.hr_image, result.crops.get("hr")) if HAS_HR else ()),
    )


def example(prompt: str):
    """An example at the model's native size with a fixed seed, so its cached result is reproducible."""
    yield from _page_run(_generate(DEMO.example_request(prompt)))


def stopped(progress):
    """After a run: if Stop ended it (its progress is still set: runs that finish or fail reset it), where it
    stopped, in both tabs' messages, and no stale preview, image or seed."""
    if progress is None:
        return (gr.skip(),) * len(stop_outputs)
    line = results.stopped_line(progress)
    return None, None, line, None, None, None, None, line, *((None,) if HAS_HR else ()), None


def preset_table(aspect_ratio, steps, guidance, source_steps, source_guidance):
    table = results.preset_overview(DEMO, aspect_ratio, steps, guidance, source_steps, source_guidance)
    return gr.skip() if table is None else pd.DataFrame(table[1], columns=table[0])


def preset_size(preset, aspect_ratio):
    """Width and height follow the chosen preset, so the fields never show a size the run will not use, and Custom
    starts from the size last chosen; a preset or ratio the demo does not know leaves them (the run says why)."""
    try:
        return DEMO.size(preset, aspect_ratio) if preset != CUSTOM else (gr.skip(), gr.skip())
    except ValueError:
        return gr.skip(), gr.skip()


def run_summary(preset, aspect_ratio, steps, guidance, rope, source_steps, source_guidance, width=None, height=None,
                num_images=1):
    return results.run_line(DEMO, Request("", preset=preset, aspect_ratio=aspect_ratio, steps=steps, guidance=guidance,
                                  rope=rope, source_steps=source_steps, source_guidance=source_guidance,
                                  width=width, height=height, num_images=num_images))


def remember(visit, served):
    """This visitor's history with the run's images added, and what its gallery shows."""
    visit = history.remember(visit, served)
    return visit, history.gallery(visit)


def reuse(visit, selected: gr.SelectData):
    """The chosen history entry's settings back in the inputs (in GENERATE_FIELDS order), and a line saying so."""
    entry = visit[selected.index]
    values = history.reused(entry, DEMO.geometry)
    return *(values.get(name, gr.skip()) for name in GENERATE_FIELDS), history.reused_line(entry)


# -- layout ---------------------------------------------------------------------------------------------------
with gr.Blocks(title="L2P: latent to pixel", delete_cache=(3600, 3600)) as demo:
    gr.Markdown(HEADER)
    if DEMO.models.notice:
        gr.Markdown(results.notice_line(DEMO.models), elem_classes="l2p-notice")
    gr.Markdown(results.facts_line(DEMO), elem_classes="l2p-facts")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder=DEMO.examples[0], elem_id="prompt")
            vocabulary = gr.Markdown("", elem_id="vocabulary")
            with gr.Row():
                preset = gr.Dropdown(DEMO.preset_choices(), value=NATIVE, label="Resolution (long side)",
                                     allow_custom_value=True, elem_id="preset")
                # A dropdown that takes any value, so an unknown ratio reaches the validator and its message (a
                # Radio refuses it first, and API users would get a bare "400 Bad Request").
                aspect_ratio = gr.Dropdown(list(ASPECT_RATIOS), value="1:1", label="Aspect ratio", elem_id="aspect",
                                           allow_custom_value=True)
            with gr.Row():
                width = gr.Number(DEMO.geometry.native_side, precision=0, label="Width (preset Custom)", elem_id="width")
                height = gr.Number(DEMO.geometry.native_side, precision=0, label="Height (preset Custom)",
                                   elem_id="height")
            num_images = CheckedSlider(*IMAGES_RANGE, value=1, step=1, elem_id="num-images",
                                       label="Images per run (Generate; seeds seed, seed + 1, …)")
            summary = gr.Markdown(run_summary(NATIVE, "1:1", DEFAULTS.steps, DEFAULTS.guidance, "auto",
                                              DEFAULTS.source_steps, DEFAULTS.source_guidance), elem_id="summary")
            with gr.Row():
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate", scale=2)
                compare_button = gr.Button("Compare with latent", elem_id="compare", scale=2)
                stop_button = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, min_width=80)
            with gr.Accordion("Settings", open=False):
                negative_prompt = gr.Textbox("", label="Negative prompt", lines=1)
                steps = CheckedSlider(*STEPS_RANGE, value=DEFAULTS.steps, step=1, label="Steps", elem_id="steps")
                guidance = CheckedSlider(*GUIDANCE_RANGE, value=DEFAULTS.guidance, step=0.1,
                                         label="Guidance (neg + s·(pos − neg); off at 1 or below)",
                                         info=GUIDANCE_INFO)
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label=f"Seed (0 to {MAX_SEED})")
                    randomize_seed = gr.Checkbox(value=True, label="Randomize seed")
                rope = gr.Dropdown(list(ROPE_CHOICES), value="auto", allow_custom_value=True,
                                   label=f"RoPE extrapolation (auto: {AUTO_ROPE} past the trained size)")
                with gr.Accordion("Advanced", open=False):
                    shift = CheckedSlider(*SHIFT_RANGE, value=DEFAULTS.shift, step=0.1, elem_id="shift",
                                          label="Noise shift (the release samples with 3; 4 was best at 4K in the paper)")
                    with gr.Row():
                        dype_lambda_s = CheckedSlider(*DYPE_RANGE, value=DEFAULTS.dype_lambda_s, step=0.1,
                                                      label="DyPE scale λs")
                        dype_lambda_t = CheckedSlider(*DYPE_RANGE, value=DEFAULTS.dype_lambda_t, step=0.1,
                                                      label="DyPE exponent λt")
                gr.Markdown("Compare: the latent source's own settings")
                source_steps = CheckedSlider(*STEPS_RANGE, value=DEFAULTS.source_steps, step=1, label="Source steps",
                                             elem_id="source-steps")
                source_guidance = CheckedSlider(*GUIDANCE_RANGE, value=DEFAULTS.source_guidance, step=0.1,
                                                label="Source guidance (same scale)")
        with gr.Column(scale=3, min_width=400):
            with gr.Tabs() as tabs:
                with gr.Tab("Pixel model", id="generate"):
                    # type="filepath": what the history reads back (the served PNGs, with their settings).
                    images = gr.Gallery(label="Images", format="png", type="filepath", interactive=False, columns=2,
                                        object_fit="contain", buttons=["download", "fullscreen"], elem_id="images")
                    with gr.Row():
                        seed_used = gr.Number(label="Seed used", precision=0, interactive=False)
                    details = gr.Markdown(label="Details", elem_id="details")
                with gr.Tab("Latent vs pixel", id="compare"):
                    slider = gr.ImageSlider(label="Latent source ↔ pixel model", format="png",
                                            type="pil", buttons=["download", "fullscreen"], elem_id="slider")
                    compare_seed = gr.Number(label="Seed used", precision=0, interactive=False)
                    compare_summary = gr.Markdown(label="Summary")
                    costs = gr.Dataframe(label="Cost per stage", interactive=False, elem_id="costs")
                    with gr.Row():
                        source_image = gr.Image(label="Latent source (VAE decoded)", format="png", type="pil",
                                                interactive=False, buttons=["download"])
                        pixel_image = gr.Image(label="Pixel model (L2P)" + (", zero-shot at the HR size" if HAS_HR else ""),
                                               format="png", type="pil", interactive=False, buttons=["download"])
                        if HAS_HR:
                            hr_image = gr.Image(label=f"HR pixel model, native (at {DEMO.geometry.hr_side} px only)",
                                                format="png", type="pil", interactive=False, buttons=["download"],
                                                elem_id="hr-image")
                    with gr.Row():
                        source_crop = gr.Image(label="Latent source, crop at 100%", format="png", type="pil",
                                               interactive=False)
                        pixel_crop = gr.Image(label="Pixel model, crop at 100%", format="png", type="pil",
                                              interactive=False)
                        if HAS_HR:
                            hr_crop = gr.Image(label="HR pixel model, crop at 100%", format="png", type="pil",
                                               interactive=False)
                    spectrum = gr.LinePlot(x="cycles per pixel", y="power (dB)", color="image", elem_id="spectrum",
                                           label="Power spectrum")
                    gr.Markdown("Radially averaged power spectra of both images: the power at each spatial frequency, "
                                "up to 0.5 cycles per pixel. A VAE decoder loses the right-hand (high-frequency) end.")
            visit = gr.State([])  # this visitor's images (l2p.demo.history.Entry), per browser session
            history_gallery = gr.Gallery(label="This visit's images (choose one to reuse its settings)", columns=6,
                                         fit_columns=False, height=240, allow_preview=False, interactive=False,
                                         format="png",
                                         elem_id="history")
            history_note = gr.Markdown("", elem_id="history-note")
    presets_table = gr.Dataframe(
        preset_table("1:1", DEFAULTS.steps, DEFAULTS.guidance, DEFAULTS.source_steps, DEFAULTS.source_guidance),
        headers=PRESET_HEADERS, interactive=False, elem_id="presets",
        label="Every preset on this hardware, at this aspect ratio (estimates, rescaled by what the runs here measure)",
    )
    progress = gr.State(None)  # the running run's last Preview (l2p.demo.Preview, without its image), for Stop's message
    gr.Examples([[p] for p in DEMO.examples], inputs=[prompt], outputs=[images, seed_used, details, progress], fn=example,
                cache_examples=True, cache_mode="lazy", label="Examples (at the native size, seed 0)")

    shared_inputs = [prompt, negative_prompt, preset, aspect_ratio, steps, guidance, seed, randomize_seed, rope, shift,
                     dype_lambda_s, dype_lambda_t, width, height]
    generate_inputs = [*shared_inputs, num_images]  # GENERATE_FIELDS
    compare_inputs = [*shared_inputs, source_steps, source_guidance]  # COMPARE_FIELDS
    # Runs wait for their turn in the app's own queue (l2p.demo.admission), which tells each waiting visitor what is
    # ahead by this app's estimates; so Gradio starts every admitted run at once (its queue still caps the total).
    started_at_once = CONFIG.max_queue + CONFIG.concurrency
    generate_event = gr.on(
        [generate_button.click, prompt.submit], generate, generate_inputs, [images, seed_used, details, progress],
        api_name="generate", validator=check_generate, concurrency_id="device", concurrency_limit=started_at_once,
    )
    generate_event.success(remember, [visit, images], [visit, history_gallery], queue=False, api_visibility="private",
                           show_progress="hidden")
    history_gallery.select(reuse, visit, [*generate_inputs, history_note], queue=False, api_visibility="private",
                           show_progress="hidden")
    generate_button.click(lambda: gr.Tabs(selected="generate"), None, tabs, queue=False, api_visibility="private")
    hr_outputs = [hr_image, hr_crop] if HAS_HR else []  # after the summary, so the API's first outputs stay as they were
    compare_event = compare_button.click(
        compare, compare_inputs,
        [slider, source_image, pixel_image, costs, source_crop, pixel_crop, spectrum, compare_seed, compare_summary,
         *hr_outputs, progress],
        api_name="compare", validator=check_compare, concurrency_id="device", concurrency_limit=started_at_once,
    )
    compare_button.click(lambda: gr.Tabs(selected="compare"), None, tabs, queue=False, api_visibility="private")
    stop_outputs = [images, seed_used, details, slider, source_image, pixel_image, compare_seed, compare_summary,
                    *hr_outputs[:1], progress]
    stop_button.click(None, None, None, cancels=[generate_event, compare_event], queue=False, api_visibility="private")
    cost_inputs = [aspect_ratio, steps, guidance, source_steps, source_guidance]
    summary_inputs = [preset, aspect_ratio, steps, guidance, rope, source_steps, source_guidance, width, height, num_images]
    # The page keeps applying a stopped run's messages until its cancel request returns, and only then starts
    # what follows the run: the stopped line goes there, or a preview still on its way would overwrite it.
    for run_event in (generate_event, compare_event):
        run_event.then(stopped, progress, stop_outputs, queue=False, api_visibility="private", show_progress="hidden")
        # Each run rescales this machine's later estimates (l2p.demo.plan): the run line and the preset table show
        # them at once, not only when a setting next changes.
        run_event.then(run_summary, summary_inputs, summary, queue=False, api_visibility="private", show_progress="hidden")
        run_event.then(preset_table, cost_inputs, presets_table, queue=False, api_visibility="private",
                       show_progress="hidden")

    # A new visitor gets the estimates as they stand now, not as they stood when the page was built. One listener
    # serves the page load and the settings' changes, so it needs "always_last": gr.on's default ("once") drops a
    # change made while the load's answer is pending, and the page then describes the default preset, not the
    # one chosen.
    gr.on([demo.load, *(c.change for c in cost_inputs)], preset_table, cost_inputs, presets_table, queue=False,
          api_visibility="private", show_progress="hidden", trigger_mode="always_last")
    gr.on([preset.change, aspect_ratio.change], preset_size, [preset, aspect_ratio], [width, height], queue=False,
          api_visibility="private", show_progress="hidden")
    prompt.change(DEMO.vocabulary_note, prompt, vocabulary, queue=False, api_visibility="private", show_progress="hidden")
    gr.on([demo.load, *(c.change for c in summary_inputs)], run_summary, summary_inputs, summary, queue=False,
          api_visibility="private", show_progress="hidden", trigger_mode="always_last")

demo.queue(max_size=CONFIG.max_queue, default_concurrency_limit=CONFIG.concurrency)


def main(arguments: argparse.Namespace):
    installed = importlib.util.find_spec("mcp") is not None
    mcp = installed if CONFIG.mcp is None else CONFIG.mcp
    if mcp and not installed:
        logging.warning('L2P_MCP is set but the MCP extra is missing (pip install "gradio[mcp]"); serving without MCP')
        mcp = False
    demo.launch(server_name=arguments.host, server_port=arguments.port, mcp_server=mcp, css=CSS,
                footer_links=["api", "gradio", "settings"])


if __name__ == "__main__":
    main(ARGUMENTS)
