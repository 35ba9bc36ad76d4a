"""The demo's logic without its UI: configuration, loading the models once, cost estimates, input checks, and
the runs behind the Generate and Compare buttons. `app.py` lays these out in Gradio.

Which models are served is configuration, never something typed into the page: environment variables, or a
small YAML file named by `L2P_CONFIG` (environment variables win). With nothing configured the embedded tiny
models in `assets/` are served; if configured models cannot be loaded, the embedded ones are served and
`LoadedModels.notice` says why.

| variable | YAML key | meaning |
| --- | --- | --- |
| L2P_PIXEL_MODEL | pixel_model | an `L2PPipeline.from_pretrained` folder or Hub id |
| L2P_CHECKPOINT | checkpoint | a release single-file checkpoint (file, folder or Hub id) for `L2PPipeline.from_release` |
| L2P_CHECKPOINT_FILE | checkpoint_file | the file name inside a checkpoint folder or Hub repository |
| L2P_SOURCE_MODEL | source_model | the latent source, a `ZImagePipeline.from_pretrained` folder or Hub id |
| L2P_TEXT_ENCODER | text_encoder | where a release checkpoint's text encoder comes from (default: the source) |
| L2P_ASSETS | assets | the folder holding the embedded `tiny-source/` and `tiny-l2p/` |
| L2P_DEVICE, L2P_DTYPE | device, dtype | e.g. cuda / cpu, bfloat16 / float32 (default: cuda+bfloat16 if there is a GPU) |
| L2P_STEPS, L2P_GUIDANCE | steps, guidance | the pixel model's defaults (else its folder's sampling.json, else the release's 30, 2.0) |
| L2P_SOURCE_STEPS, L2P_SOURCE_GUIDANCE | source_steps, source_guidance | the source's defaults in Compare (else its folder's sampling.json, else Z-Image-Turbo's 9, 1.0) |
| L2P_BENCHMARKS | benchmarks | a `docs/benchmarks/*.json` to estimate costs from (else measured at start-up) |
| L2P_MAX_SECONDS | max_seconds | refuse runs estimated to take longer (default: no limit) |
| L2P_CONCURRENCY, L2P_MAX_QUEUE | concurrency, max_queue | runs at once per device (1), waiting runs (20) |
| L2P_MCP | mcp | 1 to also serve the endpoints as MCP tools |
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import math
import os
import queue
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from .compare import StageCost, matching_crops, measure, weight_bytes
from .presets import (
    ASPECT_RATIOS,
    NATIVE,
    PRESETS,
    ROPE_CHOICES,
    Geometry,
    image_size,
    is_native,
    preset_label,
    resolve_rope,
)
from .rope import rope_scaling
from .sampling import SamplingSettings, read_sampling
from .spectrum import high_frequency_share, radial_power_spectrum

log = logging.getLogger("l2p.demo")

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_SOURCE = "tiny-source"
EMBEDDED_PIXEL = "tiny-l2p"
BUILD_COMMAND = "python -m training.toy_assets"
SOURCE_REPO_ID = "Tongyi-MAI/Z-Image-Turbo"

# Defaults for folders without a sampling.json (the released models): L2P's release runs 30 steps at CFG 2.0;
# Z-Image-Turbo runs 9 steps without guidance (1.0 in L2P's convention).
RELEASE_STEPS, RELEASE_GUIDANCE = 30, 2.0
TURBO_STEPS, TURBO_GUIDANCE = 9, 1.0

MAX_SEED = 2**31 - 1
STEPS_RANGE = (1, 100)
GUIDANCE_RANGE = (0.0, 10.0)
MAX_SEQUENCE_LENGTH = 512  # Z-Image's text encoder reads at most this many tokens, chat template included
PREVIEW_SIDE = 512  # live previews are downscaled to this long side
# Progress reaches the page at most this often. Every update costs the server an image encode, a message and
# Python time that competes with the denoising loop, and the page a download; at toy speeds (~0.1 s a step)
# per-step updates made the app 40% slower than the bare pipeline (python -m l2p.app_overhead).
PREVIEW_INTERVAL_S = 1.0
CROP_SIDE = 128
# A word-level toy tokenizer has a few dozen words; Qwen3's has ~150k. Below this, the toy world's examples.
TOY_VOCABULARY_MAX = 1000

TOY_EXAMPLES = [
    "a red circle left of a blue square",
    "three yellow triangles on a black background",
    "a green square and a purple circle",
    "an orange triangle above a blue circle on a gray background",
    "two red squares",
    "a purple triangle right of a yellow square on a white background",
]
FULL_EXAMPLES = [
    "a lighthouse on a cliff at dusk, waves breaking on the rocks below, warm light in its windows",
    "macro photograph of a dragonfly wing, every vein sharp, morning dew, shallow depth of field",
    'a minimalist Swiss-style poster with the words "PIXELS, NOT LATENTS" in bold black letters on red',
    "aerial view of a dense old town at night, thousands of lit windows, narrow winding streets",
    "a tabby cat asleep on a stack of old books in a sunlit library, dust in the light",
]


class DemoError(Exception):
    """A message for the person using the demo (bad input, out of memory, a failed run)."""


class MissingAssets(SystemExit):
    """Neither configured nor embedded models could be loaded; the message says how to build them."""


class Cancelled(Exception):
    """The run was stopped by the user."""


# -- configuration --------------------------------------------------------------------------------------------
def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class DemoConfig:
    """Everything the demo can be told (see the module docstring); `DemoConfig.load()` reads it."""

    pixel_model: str | None = None
    checkpoint: str | None = None
    checkpoint_file: str | None = None
    source_model: str | None = None
    text_encoder: str | None = None
    assets: str = str(REPO_ROOT / "assets")
    device: str | None = None
    dtype: str | None = None
    steps: int | None = None
    guidance: float | None = None
    source_steps: int | None = None
    source_guidance: float | None = None
    benchmarks: str | None = None
    max_seconds: float | None = None
    concurrency: int = 1
    max_queue: int = 20
    mcp: bool = False
    examples: list[str] | None = None

    @property
    def configured(self) -> bool:
        """True when full-scale (or any non-embedded) models were asked for."""
        return any((self.pixel_model, self.checkpoint, self.source_model))

    @classmethod
    def load(cls, environ=None) -> "DemoConfig":
        """The YAML file named by L2P_CONFIG (if any), then L2P_* environment variables over it."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        path = environ.get("L2P_CONFIG")
        if path:
            import yaml

            try:
                with open(path) as handle:
                    loaded = yaml.safe_load(handle) or {}
            except OSError as error:
                raise SystemExit(f"L2P_CONFIG={path}: cannot read it ({error})") from None
            if not isinstance(loaded, dict):
                raise SystemExit(f"L2P_CONFIG={path}: expected a mapping of settings, got {type(loaded).__name__}")
            values.update(loaded)
        names = [f.name for f in dataclasses.fields(cls)]
        for name in names:
            variable = f"L2P_{name.upper()}"
            if environ.get(variable, "") != "":
                values[name] = environ[variable]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise SystemExit(f"unknown setting(s) {unknown} in {path}; known: {names}")
        return cls._coerce(values, source=path or "the environment")

    @classmethod
    def _coerce(cls, values: dict, source: str) -> "DemoConfig":
        types = {"steps": int, "source_steps": int, "concurrency": int, "max_queue": int,
                 "guidance": float, "source_guidance": float, "max_seconds": float}
        config = {}
        for name, value in values.items():
            try:
                if value is None:
                    config[name] = None
                elif name in types:
                    config[name] = types[name](value)
                elif name == "mcp":
                    config[name] = _flag(value)
                elif name == "examples":
                    config[name] = [str(v) for v in value] if isinstance(value, list) else [
                        line.strip() for line in str(value).split("|") if line.strip()
                    ]
                else:
                    config[name] = str(value)
            except (TypeError, ValueError):
                raise SystemExit(f"setting {name}={value!r} from {source} is not a valid {types[name].__name__}") from None
        return cls(**config)


# -- loading ----------------------------------------------------------------------------------------------
@dataclass
class LoadedModels:
    """The two pipelines the demo serves, where they came from, and why the configured ones are not used."""

    source: object  # diffusers.ZImagePipeline
    pixel: object  # l2p.L2PPipeline
    device: torch.device
    dtype: torch.dtype
    origin: str  # "embedded" or "configured"
    source_name: str
    pixel_name: str
    shares_text_encoder: bool
    notice: str | None = None  # why configured models were not loaded
    seconds: float = 0.0
    # How each folder is meant to run (its sampling.json), when it has one: the embedded models do.
    source_sampling: SamplingSettings | None = None
    pixel_sampling: SamplingSettings | None = None


def pick_device(config: DemoConfig) -> tuple[torch.device, torch.dtype]:
    if config.device:
        device = torch.device(config.device)
    else:
        zero_gpu = _flag(os.environ.get("SPACES_ZERO_GPU", ""))  # ZeroGPU: CUDA appears inside @spaces.GPU only
        device = torch.device("cuda" if torch.cuda.is_available() or zero_gpu else "cpu")
    if config.dtype:
        dtype = getattr(torch, config.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise SystemExit(f"L2P_DTYPE={config.dtype!r} is not a torch dtype (try bfloat16, float16, float32)")
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


def _comparable(config) -> dict:
    volatile = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash"}
    return {k: v for k, v in config.to_dict().items() if k not in volatile}


def _weights_digest(folder: Path, limit: int = 256 * 2**20) -> str | None:
    """sha256 of a small text encoder's weight files (None when there are none, or they are too big to hash)."""
    files = sorted((folder / "text_encoder").glob("*.safetensors"))
    if not files or sum(f.stat().st_size for f in files) > limit:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def can_share_text_encoder(source_location: str, pixel_location: str, source) -> bool:
    """Whether the pixel pipeline may reuse the source's text encoder instead of loading its own copy.

    A pixel folder without a text encoder must share; one with a different config must not; for small local
    encoders the weights are compared too. Hub ids are trusted to match (at full scale both are Z-Image's).
    """
    pixel_path = Path(pixel_location)
    if not pixel_path.is_dir():
        return True
    if not (pixel_path / "text_encoder" / "config.json").is_file():
        return True
    source_config = source.text_encoder.config
    if _comparable(type(source_config).from_pretrained(pixel_path / "text_encoder")) != _comparable(source_config):
        return False
    source_path = Path(source_location)
    if source_path.is_dir():
        source_digest, pixel_digest = _weights_digest(source_path), _weights_digest(pixel_path)
        if source_digest and pixel_digest:
            return source_digest == pixel_digest
    return True


def _load_pair(source_location: str, pixel_location: str | None, config: DemoConfig, device, dtype):
    from diffusers import ZImagePipeline

    from .pipeline_l2p import L2PPipeline
    from .transformer_l2p import L2PTransformer2DModel

    source = ZImagePipeline.from_pretrained(source_location, dtype=dtype)
    if pixel_location is not None:
        shared = can_share_text_encoder(source_location, pixel_location, source)
        extra = dict(text_encoder=source.text_encoder, tokenizer=source.tokenizer) if shared else {}
        pixel = L2PPipeline.from_pretrained(pixel_location, dtype=dtype, **extra)
        pixel_name = pixel_location
    else:
        checkpoint = config.checkpoint
        encoder_location = config.text_encoder or source_location
        shared = encoder_location == source_location
        if shared:
            transformer = L2PTransformer2DModel.from_single_file(checkpoint, config.checkpoint_file, torch_dtype=dtype)
            pixel = L2PPipeline(L2PPipeline.default_scheduler(), source.text_encoder, source.tokenizer, transformer)
        else:
            pixel = L2PPipeline.from_release(checkpoint, config.checkpoint_file, encoder_location, torch_dtype=dtype)
        pixel_name = f"{checkpoint}" + (f" ({config.checkpoint_file})" if config.checkpoint_file else "")
    for pipe in (source, pixel):
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
    return source, pixel, pixel_name, shared


def _sampling(location: str | None) -> SamplingSettings | None:
    return read_sampling(location) if location and Path(location).is_dir() else None


def load_models(config: DemoConfig) -> LoadedModels:
    """Load the configured pair, or the embedded pair (also when the configured one fails)."""
    from .checkpoint import RELEASE_REPO_ID

    device, dtype = pick_device(config)
    start = time.perf_counter()
    notice = None
    if config.configured:
        source_location = config.source_model or SOURCE_REPO_ID
        pixel_location = config.pixel_model
        if pixel_location is None and config.checkpoint is None:
            config = dataclasses.replace(config, checkpoint=RELEASE_REPO_ID)
        try:
            source, pixel, pixel_name, shared = _load_pair(source_location, pixel_location, config, device, dtype)
            return LoadedModels(source, pixel, device, dtype, "configured", source_location, pixel_name, shared,
                                seconds=time.perf_counter() - start, source_sampling=_sampling(source_location),
                                pixel_sampling=_sampling(pixel_location))
        except Exception as error:  # offline, missing files, wrong layout: fall back, and say why
            what = pixel_location or config.checkpoint
            notice = (f"The configured models (pixel: {what}, source: {source_location}) could not be loaded: "
                      f"{type(error).__name__}: {_first_line(error)}")
            log.warning("%s; falling back to the embedded tiny models", notice)
            gc.collect()
    assets = Path(config.assets)
    source_path, pixel_path = assets / EMBEDDED_SOURCE, assets / EMBEDDED_PIXEL
    missing = [str(p) for p in (source_path, pixel_path) if not (p / "model_index.json").is_file()]
    if missing:
        because = f"{notice}\n" if notice else ""
        raise MissingAssets(
            f"{because}The embedded tiny models are missing ({', '.join(missing)}). Build them with\n"
            f"    {BUILD_COMMAND}\n"
            f"or point the app at other models with L2P_PIXEL_MODEL / L2P_CHECKPOINT and L2P_SOURCE_MODEL "
            f"(see the README)."
        )
    source, pixel, pixel_name, shared = _load_pair(str(source_path), str(pixel_path), config, device, dtype)
    return LoadedModels(source, pixel, device, dtype, "embedded", _short(source_path), _short(pixel_path), shared,
                        notice=notice, seconds=time.perf_counter() - start, source_sampling=_sampling(str(source_path)),
                        pixel_sampling=_sampling(str(pixel_path)))


def _first_line(error: BaseException, limit: int = 400) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# -- cost model -------------------------------------------------------------------------------------------
def calibration_sizes(geometry: Geometry) -> list[tuple[int, int]]:
    """Half, one and two times the native side: quick, and enough to fit the size terms."""
    sides = sorted({max(geometry.multiple, round(geometry.native_side * f / geometry.multiple) * geometry.multiple)
                    for f in (0.5, 1.0, 2.0)})
    return [(side, side) for side in sides]


def benchmark_file(scale: str, device: torch.device, folder: Path = REPO_ROOT / "docs" / "benchmarks") -> Path | None:
    """`docs/benchmarks/<scale>-<device>.json` as `python -m l2p.bench` names it, if it exists."""
    from .bench import device_name

    path = folder / f"{scale}-{device_name(device)}.json"
    return path if path.is_file() else None


def load_cost_model(models: LoadedModels, geometry: Geometry, config: DemoConfig, scale: str):
    """(CostModel or None, a sentence saying where the estimates come from).

    In order: the benchmark file named by the configuration; the repository's benchmark for this scale
    ("tiny" or "full") and device; a quick measurement here (`CostModel.calibrate`). The memory limit is
    always this device's.
    """
    from .bench import device_memory_bytes
    from .costs import CostModel

    path = Path(config.benchmarks) if config.benchmarks else benchmark_file(scale, models.device)
    if path is not None:
        try:
            costs = CostModel.from_benchmarks(path)
            costs.memory_limit_bytes = device_memory_bytes(models.device) or costs.memory_limit_bytes
            return costs, f"fitted to {_short(path)}"
        except Exception as error:
            log.warning("cannot use the benchmarks %s (%s); measuring instead", path, error)
    if _flag(os.environ.get("SPACES_ZERO_GPU", "")):
        # No GPU outside @spaces.GPU: a start-up measurement would time the CPU.
        return None, "none: set L2P_BENCHMARKS to a benchmark file for this GPU"
    sizes = calibration_sizes(geometry)
    start = time.perf_counter()
    try:
        costs = CostModel.calibrate(models.source, models.pixel, sizes, steps=1)
    except Exception as error:
        log.warning("could not measure costs: %s", traceback.format_exc())
        return None, f"none: measuring at start-up failed ({type(error).__name__}: {_first_line(error)})"
    finally:
        release_memory(models.device)
    listed = ", ".join(f"{w}×{h}" for w, h in sizes)
    return costs, f"measured here at start-up ({listed}, 1 step each, {time.perf_counter() - start:.1f} s)"


def release_memory(device: torch.device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- requests and results ---------------------------------------------------------------------------------
@dataclass
class Request:
    """The inputs of one run, as the page and the API send them."""

    prompt: str
    negative_prompt: str = ""
    preset: str = NATIVE
    aspect_ratio: str = "1:1"
    steps: int = 30
    guidance: float = 2.0
    seed: int = 0
    randomize_seed: bool = False
    rope: str = "auto"
    source_steps: int | None = None
    source_guidance: float | None = None


@dataclass
class Preview:
    """Progress of a run: which pipeline, the step done, and (for Generate) the current x0 estimate."""

    pipeline: str
    step: int
    total: int
    image: Image.Image | None = None


@dataclass
class SourceDone:
    """Compare: the latent source's image is decoded; the pixel model runs next."""

    image: Image.Image
    seed: int


@dataclass
class GenerateResult:
    image: Image.Image
    seed: int
    width: int
    height: int
    native: bool
    rope: str | None
    seconds: float
    estimate: object | None  # l2p.costs.Estimate


@dataclass
class CompareResult:
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

    def total_seconds(self, pipeline: str) -> float:
        return sum(stage.seconds for stage in self.stages if stage.pipeline in (pipeline, "shared"))

    def peak_bytes(self, pipeline: str) -> int:
        """This pipeline's weights plus the most working memory any of its stages needed."""
        working = max((s.working_bytes for s in self.stages if s.pipeline in (pipeline, "shared")), default=0)
        return self.weights[pipeline] + working


class ProgressPacer:
    """Says when a run's progress is worth sending: at most once per `interval` seconds, never for the last
    step (the result follows at once), and for the first step only if it took an interval (large sizes)."""

    def __init__(self, total: int, interval: float = PREVIEW_INTERVAL_S):
        self.total, self.interval = total, interval
        self.last = time.perf_counter()

    def due(self, step: int) -> bool:
        now = time.perf_counter()
        if step >= self.total or now - self.last < self.interval:
            return False
        self.last = now
        return True


def x0_preview(x0: torch.Tensor, side: int = PREVIEW_SIDE) -> Image.Image:
    """The first image of an x0 batch in [-1, 1] as a PIL image, downscaled to `side` on its long side."""
    image = x0[:1].float()
    height, width = image.shape[-2:]
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = torch.nn.functional.interpolate(image, size=size, mode="area")
    array = ((image[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def spectrum_db(power: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(power, 1e-20))


# -- the demo ---------------------------------------------------------------------------------------------
class Demo:
    """The loaded models, their cost model, and one method per thing the page can do."""

    def __init__(self, models: LoadedModels, config: DemoConfig, costs=None, costs_note: str = ""):
        self.models = models
        self.config = config
        self.costs = costs
        self.costs_note = costs_note
        pixel = models.pixel.transformer.config
        source = models.source
        source_patch = source.transformer.config.all_patch_size[0]
        self.geometry = Geometry(pixel.patch_size, pixel.trained_grid, source.vae_scale_factor * source_patch)
        self.tokenizer = models.source.tokenizer
        self.toy = len(self.tokenizer) < TOY_VOCABULARY_MAX
        self.lock = threading.Lock()  # the pipelines (and their schedulers) run one request at a time
        self.preview_interval = PREVIEW_INTERVAL_S
        self.prompt_overhead = self._templated_length("")

    @classmethod
    def start(cls, config: DemoConfig) -> "Demo":
        models = load_models(config)
        demo = cls(models, config)
        demo.costs, demo.costs_note = load_cost_model(models, demo.geometry, config, "tiny" if demo.toy else "full")
        return demo

    # -- defaults and facts ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def defaults(self) -> Request:
        """The settings a page or API call starts from, unless configured: each folder's sampling.json (the
        embedded models have one), else the release's 30 steps at guidance 2 for the pixel model and
        Z-Image-Turbo's own 9 steps without guidance for the source. Guidance is in L2P's convention here, so a
        Z-Image sampling.json's guidance_scale s is shown as s + 1."""
        config, models = self.config, self.models
        pixel, source = models.pixel_sampling, models.source_sampling
        return Request(
            prompt="",
            steps=_or(config.steps, pixel.num_inference_steps if pixel else RELEASE_STEPS),
            guidance=_or(config.guidance, pixel.guidance_scale if pixel else RELEASE_GUIDANCE),
            source_steps=_or(config.source_steps, source.num_inference_steps if source else TURBO_STEPS),
            source_guidance=_or(config.source_guidance, source.guidance_scale + 1.0 if source else TURBO_GUIDANCE),
        )

    @property
    def examples(self) -> list[str]:
        if self.config.examples:
            return list(self.config.examples)
        return list(TOY_EXAMPLES if self.toy else FULL_EXAMPLES)

    def preset_choices(self) -> list[tuple[str, str]]:
        return [(preset_label(preset, self.geometry), preset) for preset in PRESETS]

    def size(self, preset: str, aspect_ratio: str) -> tuple[int, int]:
        return image_size(preset, aspect_ratio, self.geometry)

    def pixel_native(self, width: int, height: int) -> bool:
        return is_native(width, height, self.geometry.patch_size, self.geometry.trained_grid)

    def source_native(self, width: int, height: int) -> bool:
        return is_native(width, height, self.geometry.source_pixels_per_token, self.geometry.trained_grid)

    def describe(self) -> dict[str, str]:
        """Facts about what is loaded, for the page's header."""
        models, g = self.models, self.geometry
        return {
            "pixel": f"{models.pixel_name} (patch {g.patch_size}, trained grid {g.trained_grid} → native {g.native_side} px)",
            "source": f"{models.source_name} (latent, {g.source_pixels_per_token} px per token, native {g.source_native_side} px)",
            "origin": models.origin,
            "text_encoder": "shared by both pipelines" if models.shares_text_encoder else "one per pipeline",
            "device": f"{_device_name(models.device)}, {str(models.dtype).removeprefix('torch.')}",
            "estimates": self.costs_note,
            "notice": models.notice or "",
        }

    # -- estimates ------------------------------------------------------------------------------------------
    def _pixel_pipeline_name(self) -> str:
        if self.costs is not None and "pixel" not in self.costs.pipelines and "pixel_hr" in self.costs.pipelines:
            return "pixel_hr"
        return "pixel"

    def estimate(self, pipeline: str, width: int, height: int, steps: int, guidance: float):
        """An `l2p.costs.Estimate`, or None without a cost model. `pipeline` is "pixel" or "source"."""
        if self.costs is None:
            return None
        name = self._pixel_pipeline_name() if pipeline == "pixel" else "source"
        return self.costs.estimate(name, width, height, int(steps), cfg=float(guidance) > 1.0)

    def compare_estimate(self, width, height, steps, guidance, source_steps, source_guidance):
        """Both runs in a row: times add up, memory peaks at the larger of the two."""
        from .costs import Estimate

        pixel = self.estimate("pixel", width, height, steps, guidance)
        source = self.estimate("source", width, height, source_steps, source_guidance)
        if pixel is None or source is None:
            return None
        return Estimate(pixel.seconds + source.seconds, max(pixel.peak_memory_bytes, source.peak_memory_bytes),
                        pixel.memory_limit_bytes)

    def preset_rows(self, aspect_ratio: str, steps, guidance, source_steps=None, source_guidance=None) -> list[list]:
        """One row per preset: name, size, native or zero-shot, and what Generate and Compare would cost."""
        rows = []
        if aspect_ratio not in ASPECT_RATIOS:
            aspect_ratio = "1:1"
        source_steps = _or(source_steps, steps)
        source_guidance = _or(source_guidance, guidance)
        for preset in PRESETS:
            width, height = self.size(preset, aspect_ratio)
            generate = self.estimate("pixel", width, height, steps, guidance)
            compare = self.compare_estimate(width, height, steps, guidance, source_steps, source_guidance)
            row = ["Native" if preset == NATIVE else preset, f"{width}×{height}",
                   "native" if self.pixel_native(width, height) else "zero-shot"]
            for estimate in (generate, compare):
                if estimate is None:
                    row += ["?", "?"]
                else:
                    memory = format_bytes(estimate.peak_memory_bytes) + ("" if estimate.fits else " (too much)")
                    row += [format_seconds(estimate.seconds), memory]
            rows.append(row)
        return rows

    def run_summary(self, request: Request, kind: str = "generate") -> str:
        """One line: the size, native or zero-shot, the RoPE strategy and what this run is expected to cost."""
        try:
            width, height = self.size(request.preset, request.aspect_ratio)
            strategy = resolve_rope(request.rope, width, height, self.geometry.patch_size, self.geometry.trained_grid)
        except ValueError as error:
            return str(error)
        status = "native" if self.pixel_native(width, height) else "zero-shot"
        if kind == "compare":
            estimate = self.compare_estimate(width, height, request.steps, request.guidance,
                                             _or(request.source_steps, request.steps), _or(request.source_guidance, request.guidance))
        else:
            estimate = self.estimate("pixel", width, height, request.steps, request.guidance)
        return f"{width}×{height} · {status} · RoPE {strategy or 'plain'} · {format_estimate(estimate)}"

    def gpu_seconds(self, request: Request, kind: str = "generate") -> int:
        """Seconds to ask ZeroGPU for: the estimate with headroom, never under 20 s (start-up and transfers)."""
        try:
            width, height = self.size(request.preset, request.aspect_ratio)
            if kind == "compare":
                estimate = self.compare_estimate(width, height, request.steps, request.guidance,
                                                 _or(request.source_steps, request.steps), _or(request.source_guidance, request.guidance))
            else:
                estimate = self.estimate("pixel", width, height, request.steps, request.guidance)
        except (ValueError, TypeError):
            estimate = None
        if estimate is None:
            return 120
        return int(max(20, math.ceil(estimate.seconds * 1.5 + 10)))

    # -- input checks ---------------------------------------------------------------------------------------
    def _templated_length(self, text: str) -> int:
        templated = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        return len(self.tokenizer(templated, verbose=False).input_ids)

    def _check_prompt(self, text, name: str, required: bool) -> str | None:
        if text is None:
            text = ""
        if not isinstance(text, str):
            return f"The {name} must be text, got {type(text).__name__}."
        if required and not text.strip():
            return "Enter a prompt: it is empty." if not text else "Enter a prompt: it is only whitespace."
        length = self._templated_length(text) - self.prompt_overhead
        limit = MAX_SEQUENCE_LENGTH - self.prompt_overhead
        if length > limit:
            return (f"The {name} is {length} tokens long; the text encoder reads at most {limit} tokens of it "
                    f"({MAX_SEQUENCE_LENGTH} with its chat template). Shorten it by {length - limit} tokens.")
        return None

    def problems(self, request: Request, kind: str = "generate") -> dict[str, str]:
        """Field name -> what is wrong with it; empty when the request can run."""
        request = dataclasses.replace(request, source_steps=_or(request.source_steps, request.steps),
                                      source_guidance=_or(request.source_guidance, request.guidance))
        found: dict[str, str] = {}
        message = self._check_prompt(request.prompt, "prompt", required=True)
        if message:
            found["prompt"] = message
        message = self._check_prompt(request.negative_prompt, "negative prompt", required=False)
        if message:
            found["negative_prompt"] = message
        if request.preset not in PRESETS:
            found["preset"] = f"Unknown resolution preset {request.preset!r}; choose one of: {', '.join(PRESETS)}."
        if request.aspect_ratio not in ASPECT_RATIOS:
            found["aspect_ratio"] = (f"Unknown aspect ratio {request.aspect_ratio!r}; choose one of: "
                                     f"{', '.join(ASPECT_RATIOS)}.")
        if request.rope not in ROPE_CHOICES:
            found["rope"] = f"Unknown RoPE strategy {request.rope!r}; choose one of: {', '.join(ROPE_CHOICES)}."
        step_fields = [("steps", "Steps")]
        guidance_fields = [("guidance", "Guidance")]
        if kind == "compare":
            step_fields.append(("source_steps", "Source steps"))
            guidance_fields.append(("source_guidance", "Source guidance"))
        for name, label in step_fields:
            value = getattr(request, name)
            if not _whole(value) or not STEPS_RANGE[0] <= value <= STEPS_RANGE[1]:
                found[name] = f"{label} must be a whole number from {STEPS_RANGE[0]} to {STEPS_RANGE[1]}, got {value!r}."
        for name, label in guidance_fields:
            value = getattr(request, name)
            if not _number(value) or not GUIDANCE_RANGE[0] <= value <= GUIDANCE_RANGE[1]:
                found[name] = f"{label} must be between {GUIDANCE_RANGE[0]:g} and {GUIDANCE_RANGE[1]:g}, got {value!r}."
        if not request.randomize_seed and (not _whole(request.seed) or not 0 <= request.seed <= MAX_SEED):
            found["seed"] = f"Seed must be a whole number from 0 to {MAX_SEED}, got {request.seed!r}."
        if not ({"preset", "aspect_ratio", "steps", "guidance", "source_steps", "source_guidance"} & found.keys()):
            message = self._check_cost(request, kind)
            if message:
                found["preset"] = message
        return found

    def _check_cost(self, request: Request, kind: str) -> str | None:
        width, height = self.size(request.preset, request.aspect_ratio)
        if kind == "compare":
            estimates = {
                "the pixel model": self.estimate("pixel", width, height, request.steps, request.guidance),
                "the latent source": self.estimate("source", width, height, request.source_steps, request.source_guidance),
            }
        else:
            estimates = {"the pixel model": self.estimate("pixel", width, height, request.steps, request.guidance)}
        for who, estimate in estimates.items():
            if estimate is not None and not estimate.fits:
                return (f"{width}×{height} needs about {format_bytes(estimate.peak_memory_bytes)} of memory for "
                        f"{who}, more than this device's {format_bytes(estimate.memory_limit_bytes)}. "
                        f"Choose a smaller preset.")
        if self.config.max_seconds:
            total = sum(e.seconds for e in estimates.values() if e is not None)
            if total > self.config.max_seconds:
                return (f"{width}×{height} would take about {format_seconds(total)} here, over this app's limit "
                        f"of {format_seconds(self.config.max_seconds)}. Choose a smaller preset or fewer steps.")
        return None

    def checked(self, request: Request, kind: str = "generate") -> Request:
        """The request with numbers as their proper types and a seed drawn if asked; DemoError if invalid."""
        found = self.problems(request, kind)
        if found:
            raise DemoError(" ".join(found.values()))
        seed = random.randint(0, MAX_SEED) if request.randomize_seed else int(request.seed)
        return dataclasses.replace(
            request, steps=int(request.steps), guidance=float(request.guidance), seed=seed, randomize_seed=False,
            negative_prompt=request.negative_prompt or "",
            source_steps=int(_or(request.source_steps, request.steps)),
            source_guidance=float(_or(request.source_guidance, request.guidance)),
        )

    # -- runs -----------------------------------------------------------------------------------------------
    def generate(self, request: Request, cancel: threading.Event | None = None) -> Iterator[Preview | GenerateResult]:
        """Text to image with the pixel model: Previews (x0 estimates, paced by ProgressPacer), then the GenerateResult."""
        request = self.checked(request, "generate")
        width, height = self.size(request.preset, request.aspect_ratio)
        g = self.geometry
        strategy = resolve_rope(request.rope, width, height, g.patch_size, g.trained_grid)
        estimate = self.estimate("pixel", width, height, request.steps, request.guidance)

        def work(emit, cancel):
            pacer = ProgressPacer(request.steps, self.preview_interval)

            def on_step(pipe, step, timestep, tensors):
                if cancel.is_set():
                    pipe._interrupt = True
                if pacer.due(step + 1):
                    emit(Preview("pixel", step + 1, request.steps, x0_preview(tensors["x0"])))
                return {}

            start = time.perf_counter()
            image = self.models.pixel(
                request.prompt, negative_prompt=request.negative_prompt or None, height=height, width=width,
                num_inference_steps=request.steps, guidance_scale=request.guidance,
                generator=torch.Generator("cpu").manual_seed(request.seed), rope_scaling=strategy,
                callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["x0"],
            ).images[0]
            if cancel.is_set():
                raise Cancelled()
            return GenerateResult(image, request.seed, width, height, self.pixel_native(width, height), strategy,
                                  time.perf_counter() - start, estimate)

        yield from self._stream(work, cancel, f"{width}×{height}", estimate)

    def compare(self, request: Request, cancel: threading.Event | None = None) -> Iterator[Preview | SourceDone | CompareResult]:
        """The latent source, then the pixel model, on the same prompt and seed, each stage timed and measured."""
        request = self.checked(request, "compare")
        width, height = self.size(request.preset, request.aspect_ratio)
        g = self.geometry
        pixel_rope = resolve_rope(request.rope, width, height, g.patch_size, g.trained_grid)
        source_rope = resolve_rope(request.rope, width, height, g.source_pixels_per_token, g.trained_grid)
        estimates = {
            "source": self.estimate("source", width, height, request.source_steps, request.source_guidance),
            "pixel": self.estimate("pixel", width, height, request.steps, request.guidance),
        }
        estimate = self.compare_estimate(width, height, request.steps, request.guidance,
                                         request.source_steps, request.source_guidance)

        def work(emit, cancel):
            models, device = self.models, self.device
            source, pixel = models.source, models.pixel
            pixel_cfg, source_cfg = request.guidance > 1.0, request.source_guidance > 1.0
            stages: list[StageCost] = []

            def counting(name, total):
                pacer = ProgressPacer(total, self.preview_interval)

                def on_step(pipe, step, timestep, tensors):
                    if cancel.is_set():
                        pipe._interrupt = True
                    if pacer.due(step + 1):
                        emit(Preview(name, step + 1, total))
                    return {}
                return on_step

            def encode(pipe, owner, cfg):
                with measure(owner, "text encoding", device) as cost:
                    embeds = pipe.encode_prompt(request.prompt, device=device, do_classifier_free_guidance=cfg,
                                                negative_prompt=request.negative_prompt or None)
                stages.append(cost)
                return embeds

            if models.shares_text_encoder:
                source_embeds = pixel_embeds = encode(source, "shared", pixel_cfg or source_cfg)
            else:
                source_embeds = encode(source, "source", source_cfg)
                pixel_embeds = encode(pixel, "pixel", pixel_cfg)

            # The latent source: denoise to latents, then the VAE decode, timed apart. Z-Image's guidance w is
            # pos + w (pos - neg), so the pixel model's scale s (neg + s (pos - neg)) is w = s - 1.
            with measure("source", "denoising", device) as cost:
                with rope_scaling(source.transformer, source_rope, trained_grid=g.trained_grid):
                    latents = source(
                        prompt_embeds=source_embeds[0], negative_prompt_embeds=source_embeds[1] or None,
                        height=height, width=width, num_inference_steps=request.source_steps,
                        guidance_scale=max(0.0, request.source_guidance - 1.0),
                        generator=torch.Generator("cpu").manual_seed(request.seed), output_type="latent",
                        callback_on_step_end=counting("source", request.source_steps),
                    ).images
            stages.append(cost)
            if cancel.is_set():
                raise Cancelled()
            vae = source.vae
            with measure("source", "VAE decode", device) as cost:
                latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
                decoded = vae.decode(latents, return_dict=False)[0]
                source_image = source.image_processor.postprocess(decoded, output_type="pil")[0]
            stages.append(cost)
            del latents, decoded
            emit(SourceDone(source_image, request.seed))

            with measure("pixel", "denoising", device) as cost:
                # The prompt goes along with its embeddings only because Z-Image's encode_prompt (which
                # L2PPipeline reuses) needs a prompt list to pair negative embeddings with; nothing is re-encoded.
                pixel_image = pixel(
                    request.prompt, prompt_embeds=pixel_embeds[0], negative_prompt_embeds=pixel_embeds[1] or None,
                    height=height, width=width, num_inference_steps=request.steps, guidance_scale=request.guidance,
                    generator=torch.Generator("cpu").manual_seed(request.seed), rope_scaling=pixel_rope,
                    callback_on_step_end=counting("pixel", request.steps),
                ).images[0]
            stages.append(cost)
            if cancel.is_set():
                raise Cancelled()

            images = {"source": source_image, "pixel": pixel_image}
            box, factor, crops = matching_crops([source_image, pixel_image], size=min(CROP_SIDE, width // 2, height // 2))
            weights = {
                "source": weight_bytes(source.text_encoder, source.transformer, source.vae),
                "pixel": weight_bytes(pixel.text_encoder, pixel.transformer),
            }
            return CompareResult(
                source_image, pixel_image, request.seed, width, height, stages, weights, models.shares_text_encoder,
                steps={"source": request.source_steps, "pixel": request.steps},
                rope={"source": source_rope, "pixel": pixel_rope},
                native={"source": self.source_native(width, height), "pixel": self.pixel_native(width, height)},
                crop_box=box, crop_factor=factor, crops=dict(zip(images, crops)),
                spectra={name: radial_power_spectrum(image) for name, image in images.items()},
                estimates=estimates,
            )

        yield from self._stream(work, cancel, f"{width}×{height}", estimate)

    def _stream(self, work: Callable, cancel: threading.Event | None, size: str, estimate) -> Iterator:
        """Run `work(emit, cancel)` on a worker thread and yield what it emits, then its result.

        Closing this generator (Gradio does when a run is cancelled or the page goes away) sets `cancel`, which
        the pipelines' step callbacks turn into an interrupt at the end of the current step. The close does not
        wait for that (Gradio closes generators on its event loop); the worker keeps the lock until it has
        stopped, so the next run starts after it. Failures come out as DemoError with a message for the user,
        after the memory they held is released.
        """
        cancel = cancel or threading.Event()
        events: queue.Queue = queue.Queue()
        done = object()

        def target():
            try:
                with self.lock, torch.inference_mode():  # grad mode is per thread
                    if cancel.is_set():  # stopped while waiting for the previous run
                        raise Cancelled()
                    result = work(events.put, cancel)
                events.put((done, result, None))
            except BaseException as error:  # noqa: BLE001 - every failure goes back to the user as a message
                # A failed run's tensors stay referenced from its traceback's frames: clear their locals (the
                # traceback itself is kept for the log) and collect. A run that succeeded freed its tensors by
                # reference counting, and a full collection (0.1-0.3 s with Gradio and torch loaded) would be
                # pure overhead on every request.
                traceback.clear_frames(error.__traceback__)
                release_memory(self.device)
                events.put((done, None, error))

        worker = threading.Thread(target=target, name="l2p-run", daemon=True)
        worker.start()
        try:
            while True:
                event = events.get()
                if isinstance(event, tuple) and len(event) == 3 and event[0] is done:
                    worker.join()
                    _, result, error = event
                    if isinstance(error, Cancelled):
                        return
                    if error is not None:
                        raise self._explain(error, size, estimate) from error
                    yield result
                    return
                yield event
        finally:
            cancel.set()

    def _explain(self, error: BaseException, size: str, estimate) -> DemoError:
        if isinstance(error, DemoError):
            return error
        text = str(error)
        out_of_memory = isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(
            phrase in text.lower() for phrase in ("out of memory", "can't allocate memory", "cannot allocate memory")
        )
        if out_of_memory:
            expected = f" (the estimate was {format_bytes(estimate.peak_memory_bytes)})" if estimate is not None else ""
            return DemoError(f"Out of memory at {size} on {_device_name(self.device)}{expected}. The memory was released "
                             f"and the app is still running: try a smaller preset or fewer steps.")
        log.error("run failed:\n%s", "".join(traceback.format_exception(error)))
        return DemoError(f"The run failed ({type(error).__name__}: {_first_line(error)}). The app is still running; "
                         f"try again or change the settings.")

    # -- what a comparison shows ------------------------------------------------------------------------------
    @staticmethod
    def cost_table(result: CompareResult) -> tuple[list[str], list[list]]:
        """Headers and rows: per pipeline its weights, each stage, and the total (whose peak is the weights
        plus the most working memory any of its stages needed)."""
        headers = ["pipeline", "stage", "time (s)", "ms / step", "peak (MiB)", "working (MiB)"]
        rows = []
        for pipeline in ("source", "pixel"):
            name = "latent" if pipeline == "source" else "pixel"
            rows.append([name, "weights", None, None, _mib(result.weights[pipeline]), None])
            for stage in result.stages:
                if stage.pipeline not in (pipeline, "shared"):
                    continue
                label, per_step = stage.stage, None
                if stage.stage == "denoising":
                    steps = result.steps[pipeline]
                    label = f"denoising × {steps}"
                    per_step = round(stage.seconds / steps * 1000, 1)
                if stage.pipeline == "shared":
                    label += " (shared)"
                rows.append([name, label, round(stage.seconds, 3), per_step, _mib(stage.peak_bytes), _mib(stage.working_bytes)])
            if pipeline == "pixel":
                rows.append([name, "decode: none (no VAE)", 0.0, None, None, None])
            rows.append([name, "total", round(result.total_seconds(pipeline), 3), None, _mib(result.peak_bytes(pipeline)), None])
        return headers, rows

    @staticmethod
    def spectrum_rows(result: CompareResult) -> list[dict]:
        """Long-format rows (frequency, power in dB, which image) for a line plot."""
        rows = []
        labels = {"source": "latent source (VAE decoded)", "pixel": "pixel (L2P)"}
        for name, (frequencies, power) in result.spectra.items():
            for f, p in zip(frequencies, spectrum_db(power)):
                rows.append({"cycles per pixel": float(f), "power (dB)": float(p), "image": labels[name]})
        return rows

    @staticmethod
    def high_frequency_shares(result: CompareResult) -> dict[str, float]:
        return {name: high_frequency_share(f, p) for name, (f, p) in result.spectra.items()}


# -- formatting helpers -----------------------------------------------------------------------------------
def _or(value, fallback):
    return fallback if value is None else value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return _number(value) and float(value).is_integer()


def _mib(count: int | None) -> float | None:
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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    return str(device)
