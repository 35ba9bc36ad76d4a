"""Loading once, at start-up: the two pipelines the demo serves (configured, else embedded), the optional native
high-resolution variant of the pixel model (L2P_HR_MODEL, else the embedded one beside the embedded pair), and the
cost model the estimates come from (a benchmark file, else a quick measurement here)."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import RELEASE_REPO_ID, SOURCE_REPO_ID
from ..device import device_memory_bytes, device_name, release_memory
from ..sampling import SamplingSettings, read_sampling
from .config import REPO_ROOT, DemoConfig, on_zero_gpu
from .errors import MissingAssets, first_line
from .presets import Geometry

log = logging.getLogger("l2p.demo")

EMBEDDED_SOURCE = "tiny-source"
EMBEDDED_PIXEL = "tiny-l2p"
EMBEDDED_HR = "tiny-l2p-hr"
BUILD_COMMAND = "python -m training.toy_assets"
BENCHMARKS = REPO_ROOT / "docs" / "benchmarks"


# -- the models ---------------------------------------------------------------------------------------------------
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
    notice: str | None = None  # why configured models were not loaded, or the configured device not used
    fell_back: bool = False  # configured models were asked for, and the embedded ones are served instead
    seconds: float = 0.0
    # How each folder is meant to run (its sampling.json), when it has one: the embedded models do.
    source_sampling: SamplingSettings | None = None
    pixel_sampling: SamplingSettings | None = None
    # Where the pixel pipeline's text encoder was read from (its folder, or the source / L2P_TEXT_ENCODER for a
    # release checkpoint): what an HR model's own text encoder is compared with.
    encoder_location: str | None = None
    # The native high-resolution variant of the pixel model (l2p.L2PPipeline), when one is served.
    hr: object | None = None
    hr_name: str | None = None
    hr_shares_text_encoder: bool = False  # it reuses the pixel pipeline's text encoder
    hr_sampling: SamplingSettings | None = None

    # Where each pixel pipeline's guidance starts (its sampling.json's cfg_start, L2PPipeline's argument): every run
    # and image tag reads it here, so a folder without a sampling.json is guided from the first step everywhere.
    @property
    def pixel_cfg_start(self) -> float:
        return self.pixel_sampling.cfg_start if self.pixel_sampling else 0.0

    @property
    def hr_cfg_start(self) -> float:
        return self.hr_sampling.cfg_start if self.hr_sampling else 0.0


def pick_device(config: DemoConfig) -> tuple[torch.device, torch.dtype, str | None]:
    """(device, dtype, a notice when the configured device is missing here and the CPU is used instead)."""
    notice = None
    if config.device:
        try:
            device = torch.device(config.device)
        except RuntimeError:
            raise SystemExit(f"L2P_DEVICE={config.device!r} is not a device: use cpu, cuda, cuda:1 or mps") from None
        if not device_available(device):
            notice = f"L2P_DEVICE={config.device} is not available on this machine; running on the CPU instead."
            log.warning("%s", notice)
            device = torch.device("cpu")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() or on_zero_gpu() else "cpu")
    if config.dtype:
        dtype = getattr(torch, config.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise SystemExit(f"L2P_DTYPE={config.dtype!r} is not a torch dtype (try bfloat16, float16, float32)")
    else:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype, notice


def device_available(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return on_zero_gpu() or (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count())
    backend = getattr(torch.backends, device.type, None)
    return bool(backend and backend.is_available())


class LoadFailure(Exception):
    """One configured part (named by its setting) could not be loaded; the message says which and why."""


def attempt(part: str, load):
    """`load()`, with any failure re-raised as a LoadFailure naming `part` (e.g. "L2P_CHECKPOINT=...")."""
    try:
        return load()
    except Exception as error:  # offline, missing files, wrong layout, pickles: each said in one sentence
        raise LoadFailure(f"{part}: {first_line(error, limit=600)}") from error


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


def _load_pair(source_location: str, pixel_location: str | None, config: DemoConfig, device, dtype, origin: str,
               start: float, names: tuple[str, str] | None = None, notice: str | None = None,
               settings: dict[str, str] | None = None) -> LoadedModels:
    """Load a source and a pixel pipeline (a folder or Hub id, or with `pixel_location` None the release
    checkpoint `config.checkpoint`), sharing the text encoder where they can. `start`: when loading began.

    The pixel side's own files are read first, so a failure there is reported as such, not as a failure of
    a source it never reached; `settings` names each part for the messages (part -> "L2P_...=value")."""
    from diffusers import ZImagePipeline

    from ..pipeline_l2p import L2PPipeline
    from ..transformer_l2p import L2PTransformer2DModel

    label = {"checkpoint": f"checkpoint {config.checkpoint}", "pixel": f"pixel model {pixel_location}",
             "source": f"source {source_location}", "text_encoder": f"text encoder {config.text_encoder}", **(settings or {})}
    if pixel_location is None:
        # A checkpoint folder may carry its model's config.json (one of another size than the release's).
        own_config = config.checkpoint if (Path(config.checkpoint) / "config.json").is_file() else None
        transformer = attempt(label["checkpoint"], lambda: L2PTransformer2DModel.from_single_file(
            config.checkpoint, config.checkpoint_file, torch_dtype=dtype, config=own_config))
    else:
        transformer = attempt(label["pixel"], lambda: L2PTransformer2DModel.from_pretrained(
            pixel_location, subfolder="transformer", torch_dtype=dtype))
    source = attempt(label["source"], lambda: ZImagePipeline.from_pretrained(source_location, dtype=dtype))
    if pixel_location is not None:
        shared = can_share_text_encoder(source_location, pixel_location, source)
        extra = dict(text_encoder=source.text_encoder, tokenizer=source.tokenizer) if shared else {}
        pixel = attempt(label["pixel"], lambda: L2PPipeline.from_pretrained(pixel_location, dtype=dtype, transformer=transformer, **extra))
        pixel_name = pixel_location
        encoder_location = source_location if shared else pixel_location
    else:
        encoder_location = config.text_encoder or source_location
        shared = encoder_location == source_location
        if shared:
            text_encoder, tokenizer = source.text_encoder, source.tokenizer
        else:
            text_encoder, tokenizer = attempt(label["text_encoder"], lambda: L2PPipeline.text_encoder_from(encoder_location, dtype))
        check_caption_width(transformer, text_encoder, label["source" if shared else "text_encoder"])
        pixel = L2PPipeline(L2PPipeline.default_scheduler(), text_encoder.eval(), tokenizer, transformer)
        pixel_name = f"{config.checkpoint}" + (f" ({config.checkpoint_file})" if config.checkpoint_file else "")
    for pipe in (source, pixel):
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
    source_name, pixel_name = names or (source_location, pixel_name)
    return LoadedModels(source, pixel, device, dtype, origin, source_name, pixel_name, shared, notice=notice,
                        seconds=time.perf_counter() - start, source_sampling=_sampling(source_location),
                        pixel_sampling=_sampling(pixel_location), encoder_location=encoder_location)


def check_caption_width(transformer, text_encoder, part: str) -> None:
    """A text encoder whose features the checkpoint cannot read fails here, by name, not in the first run."""
    width, expected = text_encoder.config.hidden_size, transformer.config.cap_feat_dim
    if width != expected:
        raise LoadFailure(
            f"{part}: its text encoder gives {width}-wide features but the checkpoint reads {expected} "
            f"(cap_feat_dim); use the text encoder the model was trained with (L2P_TEXT_ENCODER)"
        )


def _sampling(location: str | None) -> SamplingSettings | None:
    return read_sampling(location) if location and Path(location).is_dir() else None


def load_models(config: DemoConfig) -> LoadedModels:
    """Load the configured pair, or the embedded pair (also when the configured one fails)."""
    device, dtype, device_notice = pick_device(config)
    start = time.perf_counter()
    notice = None
    if config.configured:
        source_location = config.source_model or SOURCE_REPO_ID
        pixel_location = config.pixel_model
        if pixel_location is None and config.checkpoint is None:
            config = dataclasses.replace(config, checkpoint=RELEASE_REPO_ID)
        settings = configured_settings(config, source_location)
        try:
            models = _load_pair(source_location, pixel_location, config, device, dtype, "configured", start,
                                notice=device_notice, settings=settings)
            return load_hr_model(config, models)
        except LoadFailure as failure:  # offline, missing files, wrong layout: fall back, and say why
            notice = f"The configured models could not be loaded ({failure})."
            log.warning("%s Falling back to the embedded tiny models.", notice)
            gc.collect()
    fell_back = notice is not None
    notice = " ".join(n for n in (device_notice, notice) if n) or None
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
    models = _load_pair(str(source_path), str(pixel_path), config, device, dtype, "embedded", start,
                        names=(short_path(source_path), short_path(pixel_path)), notice=notice)
    return load_hr_model(config, dataclasses.replace(models, fell_back=fell_back))


def load_hr_model(config: DemoConfig, models: LoadedModels) -> LoadedModels:
    """`models` with the native high-resolution variant of its pixel model added: L2P_HR_MODEL, else the embedded
    `tiny-l2p-hr/` when the embedded pair is served and the folder exists, else none (`models` unchanged).

    It reuses the pixel pipeline's text encoder where the two are the same (`can_share_text_encoder`). A failure
    is one sentence in `models.notice`, naming L2P_HR_MODEL; everything else is served as it was."""
    if config.hr_model:
        location, name, part = config.hr_model, config.hr_model, f"L2P_HR_MODEL={config.hr_model}"
    else:
        folder = Path(config.assets) / EMBEDDED_HR
        if models.origin != "embedded" or not (folder / "model_index.json").is_file():
            return models
        location, name = str(folder), short_path(folder)
        part = f"the embedded {name} (L2P_HR_MODEL unset; set it to another folder, or remove this one)"
    start = time.perf_counter()
    try:
        hr, shared = _load_hr(location, models, part)
    except LoadFailure as failure:
        notice = (f"The high-resolution model could not be loaded ({failure}); Compare runs the latent source and "
                  f"the pixel model only.")
        log.warning("%s", notice)
        gc.collect()
        return dataclasses.replace(models, notice=" ".join(n for n in (models.notice, notice) if n))
    return dataclasses.replace(models, hr=hr, hr_name=name, hr_shares_text_encoder=shared,
                               hr_sampling=_sampling(location), seconds=models.seconds + time.perf_counter() - start)


def _load_hr(location: str, models: LoadedModels, part: str):
    """(the HR pipeline on the served device, whether it shares the pixel pipeline's text encoder); LoadFailure
    naming `part` when it cannot be read or is no high-resolution variant of the served pixel model."""
    from ..pipeline_l2p import L2PPipeline
    from ..transformer_l2p import L2PTransformer2DModel

    dtype = models.dtype
    transformer = attempt(part, lambda: L2PTransformer2DModel.from_pretrained(location, subfolder="transformer",
                                                                              torch_dtype=dtype))
    geometry = Geometry.of(models.source, models.pixel)
    side, base = transformer.native_side, geometry.native_side
    if side <= base:
        raise LoadFailure(f"{part}: its native size is {side} px, not larger than the pixel model's {base} px, so it "
                          f"is no high-resolution variant of it")
    if side % geometry.multiple:
        raise LoadFailure(f"{part}: its native size {side} px is not a multiple of {geometry.multiple} px, so the "
                          f"latent source and the pixel model cannot run at it")
    shared = attempt(part, lambda: can_share_text_encoder(models.encoder_location or "", location, models.pixel))
    extra = dict(text_encoder=models.pixel.text_encoder, tokenizer=models.pixel.tokenizer) if shared else {}
    hr = attempt(part, lambda: L2PPipeline.from_pretrained(location, dtype=dtype, transformer=transformer, **extra))
    check_caption_width(hr.transformer, hr.text_encoder, part)
    hr.to(models.device)
    hr.set_progress_bar_config(disable=True)
    return hr, shared


def configured_settings(config: DemoConfig, source_location: str) -> dict[str, str]:
    """Each configured part as the setting that names it, for the messages."""
    source = f"L2P_SOURCE_MODEL={config.source_model}" if config.source_model else f"the default source {source_location} (L2P_SOURCE_MODEL)"
    file = f" (L2P_CHECKPOINT_FILE={config.checkpoint_file})" if config.checkpoint_file else ""
    return {
        "pixel": f"L2P_PIXEL_MODEL={config.pixel_model}",
        "checkpoint": f"L2P_CHECKPOINT={config.checkpoint}{file}",
        "source": source,
        "text_encoder": f"L2P_TEXT_ENCODER={config.text_encoder}",
    }


def short_path(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# -- the cost model -------------------------------------------------------------------------------------------------
def calibration_sizes(geometry: Geometry) -> list[tuple[int, int]]:
    """Half, one and two times the native side: quick, and enough to fit the size terms."""
    sides = sorted({max(geometry.multiple, round(geometry.native_side * f / geometry.multiple) * geometry.multiple)
                    for f in (0.5, 1.0, 2.0)})
    return [(side, side) for side in sides]


def benchmark_file(scale: str, device: torch.device, folder: Path = BENCHMARKS) -> Path | None:
    """`docs/benchmarks/<scale>-<device>.json` as `python -m l2p.bench` names it, if it exists."""
    path = folder / f"{scale}-{device_name(device)}.json"
    return path if path.is_file() else None


def load_cost_model(models: LoadedModels, geometry: Geometry, config: DemoConfig, scale: str):
    """(CostModel or None, a sentence saying where the estimates come from).

    In order: the benchmark file named by the configuration; the repository's benchmark for this scale
    ("tiny" or "full") and device; a quick measurement here (`CostModel.calibrate`). The memory limit is
    always this device's.
    """
    from ..bench.costs import CostModel

    path = Path(config.benchmarks) if config.benchmarks else benchmark_file(scale, models.device)
    if path is not None:
        try:
            costs = CostModel.from_benchmarks(path)
            costs.memory_limit_bytes = device_memory_bytes(models.device) or costs.memory_limit_bytes
            return costs, f"fitted to {short_path(path)}"
        except Exception as error:
            log.warning("cannot use the benchmarks %s (%s); measuring instead", path, error)
    if on_zero_gpu():
        # No GPU outside @spaces.GPU: a start-up measurement would time the CPU.
        return None, "none: set L2P_BENCHMARKS to a benchmark file for this GPU"
    sizes = calibration_sizes(geometry)
    start = time.perf_counter()
    try:
        costs = CostModel.calibrate(models.source, models.pixel, sizes, steps=1)
    except Exception as error:
        log.warning("could not measure costs: %s", traceback.format_exc())
        return None, f"none: measuring at start-up failed ({type(error).__name__}: {first_line(error)})"
    finally:
        release_memory()
    listed = ", ".join(f"{w}×{h}" for w, h in sizes)
    return costs, f"measured here at start-up ({listed}, 1 step each, {time.perf_counter() - start:.1f} s)"
