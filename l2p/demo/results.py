"""What a run gives back, and how the page shows it: the results, the cost table, the spectrum's rows, and every
line of text the page writes about a run (numbers formatted for people)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..device import StageCost
from .analysis import high_frequency_share, spectrum_db


# -- what a run yields -----------------------------------------------------------------------------------------------
@dataclass
class Waiting:
    """A run waiting for its turn: the runs ahead of it in the app's queue and the estimated seconds until it
    starts (None when no run ahead has an estimate; `unknown` counts those without one)."""

    ahead: int
    seconds: float | None
    unknown: int = 0


@dataclass
class Preview:
    """Progress of a run: which pipeline, the step done, (for Generate) the current x0 estimate, and which of
    the run's images it is (`index` of `count`, from 1)."""

    pipeline: str
    step: int
    total: int
    image: Image.Image | None = None
    index: int = 1
    count: int = 1


@dataclass
class SourceDone:
    """Compare: the latent source's image is decoded; the pixel model runs next."""

    image: Image.Image
    seed: int


@dataclass
class GenerateResult:
    """A Generate run's images (each tagged with its own settings and seed), made one after another."""

    images: list[Image.Image]
    seeds: list[int]
    width: int
    height: int
    native: bool
    rope: str | None
    seconds: float  # all images
    estimate: object | None  # l2p.bench.costs.Estimate, for all images

    @property
    def image(self) -> Image.Image:
        return self.images[0]

    @property
    def seed(self) -> int:
        return self.seeds[0]


@dataclass
class CompareResult:
    """A comparison: the latent source and the pixel model, and at the HR model's native size the native HR model
    too (`hr_image`; its entries under "hr" in the dicts, its stages' pipeline "hr")."""

    source_image: Image.Image
    pixel_image: Image.Image
    seed: int
    width: int
    height: int
    stages: list[StageCost]
    weights: dict[str, int]  # pipeline -> bytes of its components (the shared text encoder in both)
    shares_text_encoder: bool
    steps: dict[str, int]
    rope: dict[str, str | None]
    native: dict[str, bool]
    crop_box: tuple[int, int, int, int]
    crop_factor: int
    crops: dict[str, Image.Image]
    spectra: dict[str, tuple[np.ndarray, np.ndarray]]
    estimates: dict[str, object] = field(default_factory=dict)
    hr_image: Image.Image | None = None
    hr_shares_text_encoder: bool = False  # the HR model used the pixel model's prompt encoding

    @property
    def pipelines(self) -> tuple[str, ...]:
        """The models compared, in the order they ran: ("source", "pixel"), then "hr" in a three-way comparison."""
        return ("source", "pixel", "hr") if self.hr_image is not None else ("source", "pixel")

    def stages_of(self, pipeline: str) -> list[StageCost]:
        """This pipeline's stages: its own, the shared ones, and for an HR model that reused the pixel model's
        prompt encoding, that encoding."""
        def owns(stage):
            if stage.pipeline in (pipeline, "shared"):
                return True
            return (pipeline == "hr" and self.hr_shares_text_encoder and stage.pipeline == "pixel"
                    and stage.stage == "text encoding")

        return [stage for stage in self.stages if owns(stage)]

    def total_seconds(self, pipeline: str) -> float:
        return sum(stage.seconds for stage in self.stages_of(pipeline))

    def peak_bytes(self, pipeline: str) -> int:
        """The highest memory peak measured during any of this pipeline's stages."""
        return max((s.peak_bytes for s in self.stages_of(pipeline)), default=0)

    def working_bytes(self, pipeline: str) -> int:
        """The most memory any of this pipeline's stages added over what was in use when it began."""
        return max((s.working_bytes for s in self.stages_of(pipeline)), default=0)


# -- numbers for people ---------------------------------------------------------------------------------------------
def mib(count: int | None) -> float | None:
    return None if count is None else round(count / 2**20, 1)


def format_bytes(count: int | None) -> str:
    if count is None:
        return "unknown"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(estimate) -> str:
    if estimate is None:
        return "no estimate"
    text = f"~{format_seconds(estimate.seconds)}, peak ~{format_bytes(estimate.peak_memory_bytes)}"
    if not estimate.fits:
        text += f" (over the {format_bytes(estimate.memory_limit_bytes)} here)"
    return text


def native_word(native: bool) -> str:
    return "native" if native else "zero-shot"


# -- tables -----------------------------------------------------------------------------------------------------------
PRESET_HEADERS = ["preset", "size", "for this model", "Generate: time", "Generate: peak memory", "Compare: time",
                  "Compare: peak memory"]
# One meaning per column: "weights" the bytes of the pipeline's components; "peak" the memory measured at its
# highest during the row (a total: during any of its stages); "working" what the row added over the memory in
# use when it began (a total: the most any stage added).
COST_HEADERS = ["pipeline", "stage", "time (s)", "ms / step", "weights (MiB)", "peak (MiB)", "working (MiB)"]
SPECTRUM_LABELS = {"source": "latent source (VAE decoded)", "pixel": "pixel (L2P)", "hr": "HR pixel (L2P, native)"}
# The cost table's name of each pipeline; in a three-way comparison the 1x pixel model runs zero-shot.
TABLE_NAMES = {"source": "latent", "pixel": "pixel", "hr": "HR pixel"}


def cost_table(result: CompareResult) -> tuple[list[str], list[list]]:
    """Headers and rows (see COST_HEADERS): per pipeline each stage, then its total."""
    rows = []
    for pipeline in result.pipelines:
        name = TABLE_NAMES[pipeline]
        for stage in result.stages_of(pipeline):
            label, per_step = stage.stage, None
            if stage.stage == "denoising":
                steps = result.steps[pipeline]
                label = f"denoising × {steps}"
                per_step = round(stage.seconds / steps * 1000, 1)
            if stage.pipeline == "shared" or stage.pipeline != pipeline:
                label += " (shared)"
            rows.append([name, label, round(stage.seconds, 3), per_step, None, mib(stage.peak_bytes), mib(stage.working_bytes)])
        if pipeline != "source":
            rows.append([name, "decode: none (no VAE)", 0.0, None, None, None, None])
        rows.append([name, "total", round(result.total_seconds(pipeline), 3), None, mib(result.weights[pipeline]),
                     mib(result.peak_bytes(pipeline)), mib(result.working_bytes(pipeline))])
    return list(COST_HEADERS), rows


def spectrum_rows(result: CompareResult) -> list[dict]:
    """Long-format rows (frequency, power in dB, which image) for a line plot."""
    rows = []
    for name, (frequencies, power) in result.spectra.items():
        for f, p in zip(frequencies, spectrum_db(power)):
            rows.append({"cycles per pixel": float(f), "power (dB)": float(p), "image": SPECTRUM_LABELS[name]})
    return rows


def high_frequency_shares(result: CompareResult) -> dict[str, float]:
    return {name: high_frequency_share(f, p) for name, (f, p) in result.spectra.items()}


def preset_overview(demo, aspect_ratio, steps, guidance, source_steps, source_guidance) -> tuple[list, list] | None:
    """The page's table of every preset (headers, rows); None until the settings are numbers."""
    numbers = [steps, guidance, source_steps, source_guidance]
    if not all(isinstance(n, (int, float)) for n in numbers):
        return None
    return list(PRESET_HEADERS), demo.preset_rows(aspect_ratio, *numbers)


# -- lines of text --------------------------------------------------------------------------------------------------
def _size_problem(plan) -> str | None:
    """What is wrong with a plan's size or RoPE strategy, if anything."""
    if plan.width is None or not plan.rope:
        return next(plan.problems[name] for name in ("preset", "aspect_ratio", "rope") if name in plan.problems)
    return None


def _run_words(plan, estimate) -> str:
    hr = " · Compare adds the native HR model" if plan.three_way else ""
    return (f"{plan.size_text} · {native_word(plan.native['pixel'])} · RoPE {plan.rope['pixel'] or 'plain'}{hr} · "
            f"{format_estimate(estimate)}")


def plan_line(plan) -> str:
    """One line about a planned run (an `l2p.demo.plan.Plan`): the size, native or zero-shot, the RoPE strategy and
    what it is expected to cost; or what is wrong with its size."""
    return _size_problem(plan) or _run_words(plan, plan.estimate)


def run_line(demo, request) -> str:
    """The page's line about the run its settings make: Generate's (all its images), and what Compare would cost."""
    plan = demo.plan(request, "compare")
    problem = _size_problem(plan)
    if problem:
        return problem
    generate = demo.plan(request, "generate")
    count = int(generate.request.num_images) if "num_images" not in generate.problems else 1
    estimate = generate.estimate if "num_images" not in generate.problems else plan.estimates.get("pixel")
    images = f" for {count} images" if count > 1 else ""
    return (f"**This run:** {_run_words(plan, estimate)}{images} · Compare: {format_estimate(plan.estimate)}"
            f"{rescale_words(demo.planner.time_scale)}")


def rescale_words(time_scale: dict[str, float]) -> str:
    """How the last runs here moved the time estimates (nothing before any run, or when they matched)."""
    moved = {name: scale for name, scale in time_scale.items() if abs(scale - 1.0) > 0.05}
    if not moved:
        return ""
    names = {"pixel": "pixel model", "source": "latent source", "hr": "HR model"}
    parts = ", ".join(f"{names[name]} ×{scale:.2f}" for name, scale in moved.items())
    return f" · times rescaled by the last run here ({parts})"


def waiting_line(event: Waiting) -> str:
    """What a visitor waiting for a turn reads: the runs ahead in this app's queue and, from this app's own
    estimates of them, how long until this one starts."""
    runs = f"{event.ahead} run{'' if event.ahead == 1 else 's'} ahead of you"
    if event.seconds is None:
        return f"Waiting: {runs} (no estimate for them here)."
    unknown = f", plus {event.unknown} without an estimate" if event.unknown else ""
    return f"Waiting: {runs}, about {format_seconds(event.seconds)} until yours starts{unknown}."


def progress_line(event: Preview | SourceDone | Waiting) -> str:
    """What the page says while a run waits or goes on."""
    if isinstance(event, Waiting):
        return waiting_line(event)
    if isinstance(event, SourceDone):
        return "Latent source done; the pixel model runs now."
    of_images = f" of image {event.index} of {event.count}" if event.count > 1 else ""
    if event.image is not None:
        return f"Step {event.step} of {event.total}{of_images} · the current clean-image estimate"
    who = {"source": "Latent source", "hr": "HR model"}.get(event.pipeline, "Pixel model")
    return f"{who}: step {event.step} of {event.total}{of_images}"


def stopped_line(progress: Preview | Waiting) -> str:
    """What the page says once a run is stopped: the last step it showed (or that it had not started)."""
    if isinstance(progress, Waiting):
        return "Stopped while waiting for its turn; it had not started."
    who = {"source": " of the latent source", "hr": " of the HR model"}.get(progress.pipeline, "")
    of_images = f" of image {progress.index} of {progress.count}" if progress.count > 1 else ""
    return f"Stopped at step {progress.step} of {progress.total}{who}{of_images}."


def generate_details(result: GenerateResult) -> str:
    status = "native for this model" if result.native else "zero-shot (past the trained size)"
    estimate = f" (estimated {format_seconds(result.estimate.seconds)})" if result.estimate is not None else ""
    seeds = (f"seed {result.seed}" if len(result.seeds) == 1
             else f"{len(result.seeds)} images, seeds {', '.join(map(str, result.seeds))}")
    return (f"**{result.width}×{result.height}** · {status} · RoPE {result.rope or 'plain'} · {seeds} · "
            f"took {format_seconds(result.seconds)}{estimate}")


def captioned_images(result: GenerateResult) -> list[tuple[Image.Image, str]]:
    """A Generate run's images for its gallery, each captioned with its seed (and which of the run's it is)."""
    count = len(result.images)
    return [(image, f"seed {seed}" + (f" ({index} of {count})" if count > 1 else ""))
            for index, (image, seed) in enumerate(zip(result.images, result.seeds), start=1)]


def compare_summary(demo, result: CompareResult) -> str:
    source_s, pixel_s = result.total_seconds("source"), result.total_seconds("pixel")
    ratio = source_s / pixel_s if pixel_s > 0 else float("inf")
    shares = high_frequency_shares(result)
    left, top, right, bottom = result.crop_box
    status = {k: native_word(v) for k, v in result.native.items()}
    estimates = [f"{name} {format_seconds(e.seconds)}" for name, e in result.estimates.items() if e is not None]
    memory = ("CUDA memory allocated by tensors" if demo.device.type == "cuda"
              else "this process's resident memory (RSS), sampled every 5 ms; it includes the web server")
    lines = [
        f"**{result.width}×{result.height}, seed {result.seed}.** Latent source ({status['source']}, RoPE "
        f"{result.rope['source'] or 'plain'}): {format_seconds(source_s)} in all. Pixel model ({status['pixel']}, RoPE "
        f"{result.rope['pixel'] or 'plain'}): {format_seconds(pixel_s)} in all, "
        f"{'%.1f× faster' % ratio if ratio >= 1 else '%.1f× slower' % (1 / ratio)} end to end.",
        f"- Estimated before the run: {', '.join(estimates) or 'no estimate'}.",
        f"- Text encoder: {'shared, so the prompt was encoded once for ' + ('all three' if result.hr_shares_text_encoder else 'both') if result.shares_text_encoder else 'one per pipeline'}.",
        f"- Weights: latent source {format_bytes(result.weights['source'])} (DiT + VAE + text encoder), pixel model "
        f"{format_bytes(result.weights['pixel'])} (DiT + Detailer Head + text encoder). *Peak* and *working* measure "
        f"{memory}: *peak* is the highest during the row (a total: during any of its stages), *working* what the row "
        f"added over what was in use when it began (a total: the most any stage added).",
        f"- Share of spectral power above 0.25 cycles/pixel: source {shares['source']:.1%}, pixel {shares['pixel']:.1%}"
        + (f", HR {shares['hr']:.1%}." if "hr" in shares else "."),
        f"- Crops: pixels ({left}, {top}) to ({right}, {bottom}), the most detailed region, at 100%"
        + (f", enlarged ×{result.crop_factor} with nearest-neighbour so each pixel stays a square." if result.crop_factor > 1 else "."),
    ]
    if result.hr_image is not None:
        lines.insert(1, hr_line(result))
    return "\n".join(lines)


def hr_line(result: CompareResult) -> str:
    """A three-way comparison's line about the native HR model against the other two."""
    hr_s = result.total_seconds("hr")

    def against(seconds: float) -> str:
        ratio = seconds / hr_s if hr_s > 0 else float("inf")
        return "%.1f× faster" % ratio if ratio >= 1 else "%.1f× slower" % (1 / ratio)

    peaks = {name: format_bytes(result.peak_bytes(name)) for name in result.pipelines}
    return (f"- HR model (native at this size, RoPE {result.rope['hr'] or 'plain'}, its own noise shift): "
            f"{format_seconds(hr_s)} in all, {against(result.total_seconds('source'))} than the latent source and "
            f"{against(result.total_seconds('pixel'))} than the 1x pixel model zero-shot; peak memory: latent "
            f"{peaks['source']}, 1x pixel {peaks['pixel']}, HR {peaks['hr']}. Weights: HR model "
            f"{format_bytes(result.weights['hr'])}; text encoder "
            f"{'the pixel model’s, prompt encoded once' if result.hr_shares_text_encoder else 'its own'}.")


def facts_line(demo) -> str:
    """The page's line of facts about what is loaded (`Demo.describe`)."""
    facts = demo.describe()
    return (
        f"Pixel model: {facts['pixel']} · Latent source: {facts['source']} · Models: {facts['origin']} · "
        f"Text encoder: {facts['text_encoder']} · Device: {facts['device']} · Estimates: {facts['estimates']}"
        + (f" · HR model: {facts['hr']}" if "hr" in facts else "")
    )


def vocabulary_line(unknown: list[str], known: list[str]) -> str:
    """What the embedded model cannot draw in a prompt: its words outside the toy world's vocabulary."""
    return (f"The embedded model does not know {', '.join(f'*{w}*' for w in unknown)}: it was trained on the toy "
            f"world's {len(known)} words only ({', '.join(known)}), so it cannot draw "
            f"{'it' if len(unknown) == 1 else 'them'}.")


def notice_line(models) -> str:
    """The page's notice about what was asked for and is not served (`LoadedModels.notice`)."""
    prefix = "**Serving the embedded tiny models.** " if models.fell_back else ""
    return prefix + (models.notice or "")
