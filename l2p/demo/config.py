"""What the demo can be told: `DemoConfig`, from the YAML file named by `L2P_CONFIG` and `L2P_*` environment
variables (they win). The settings are listed in `l2p.demo`'s docstring."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import first_line

REPO_ROOT = Path(__file__).resolve().parents[2]


def flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def on_zero_gpu() -> bool:
    """A ZeroGPU Space: CUDA appears inside `@spaces.GPU` calls only, so there is no GPU at start-up."""
    return flag(os.environ.get("SPACES_ZERO_GPU", ""))


# The run-time limit where none is configured: a shared CPU or a ZeroGPU slice serves many visitors one run at a
# time, so one long run must not hold everyone behind it; a dedicated GPU gets more room for 4K and 8K.
SHARED_PLATFORM_MAX_SECONDS = 120.0
DEDICATED_GPU_MAX_SECONDS = 600.0
# The most a `@spaces.GPU` call asks ZeroGPU for (L2P_GPU_MAX_SECONDS). ZeroGPU's maximum duration is not
# officially documented and depends on the visitor: reports in Spaces discussions put it at 300 s for logged-in
# visitors and lower for anonymous ones (Spaces commonly cap at 120 s for them). A request above a visitor's
# maximum is refused outright, so the default is the low one.
ZERO_GPU_MAX_SECONDS = 120.0


def run_time_limit(configured: float | None, device_type: str, gpu_max_seconds: float = ZERO_GPU_MAX_SECONDS
                   ) -> tuple[float | None, str]:
    """Seconds a run may be estimated to take (None: no limit), and the setting that says so (for refusals).

    `configured`: L2P_MAX_SECONDS; 0 turns it off. On ZeroGPU no run may be estimated past what a GPU call can
    ask for (`gpu_max_seconds`, L2P_GPU_MAX_SECONDS): ZeroGPU would abort it midway."""
    if configured is not None:
        limit = configured if configured > 0 else None
    elif device_type == "cpu" or on_zero_gpu():
        limit = SHARED_PLATFORM_MAX_SECONDS
    else:
        limit = DEDICATED_GPU_MAX_SECONDS
    if on_zero_gpu() and (limit is None or limit > gpu_max_seconds):
        return gpu_max_seconds, "L2P_GPU_MAX_SECONDS, what a ZeroGPU call may ask for"
    return limit, "L2P_MAX_SECONDS"


@dataclass
class DemoConfig:
    """Everything the demo can be told (see `l2p.demo`); `DemoConfig.load()` reads it."""

    pixel_model: str | None = None
    checkpoint: str | None = None
    checkpoint_file: str | None = None
    source_model: str | None = None
    hr_model: str | None = None  # None: the embedded tiny-l2p-hr/ beside the embedded pair, when it exists
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
    gpu_max_seconds: float = ZERO_GPU_MAX_SECONDS
    concurrency: int = 1
    max_queue: int = 20
    mcp: bool | None = None  # None: on when the MCP extra (gradio[mcp]) is installed
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
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = getattr(error, "problem", None) or first_line(error)
                raise SystemExit(f"L2P_CONFIG={path}: not valid YAML ({problem}{where}); fix the file, or unset L2P_CONFIG") from None
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
            raise SystemExit(f"L2P_CONFIG={path}: unknown setting(s) {unknown}; remove or rename them (known: {', '.join(names)})")
        return cls._coerce(values, source=path or "the environment")

    @classmethod
    def _coerce(cls, values: dict, source: str) -> "DemoConfig":
        types = {"steps": int, "source_steps": int, "concurrency": int, "max_queue": int,
                 "guidance": float, "source_guidance": float, "max_seconds": float, "gpu_max_seconds": float}
        config = {}
        for name, value in values.items():
            try:
                if value is None:
                    config[name] = None
                elif name in types:
                    config[name] = types[name](value)
                elif name == "mcp":
                    config[name] = flag(value)
                elif name == "examples":
                    config[name] = [str(v) for v in value] if isinstance(value, list) else [
                        line.strip() for line in str(value).split("|") if line.strip()
                    ]
                else:
                    config[name] = str(value)
            except (TypeError, ValueError):
                raise SystemExit(f"setting {name}={value!r} from {source} is not a valid {types[name].__name__}") from None
        return cls(**config)
