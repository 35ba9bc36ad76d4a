"""The demo's logic without its UI: configuration, loading the models once, cost estimates, input checks, and
the runs behind the Generate and Compare buttons. `app.py` lays these out in Gradio.

Which models are served is configuration, never something typed into the page: environment variables, or a
small YAML file named by `L2P_CONFIG` (environment variables win). With nothing configured the embedded tiny
models in `assets/` are served; if configured models cannot be loaded, the embedded ones are served and
`LoadedModels.notice` says why, naming the setting of the part that failed (the pixel model's own files are read
before the source's). `python app.py --check` loads everything, prints what would be served and exits (0, or 3
with a notice); a mistake in the configuration itself (bad YAML, an unknown setting, a value of the wrong type)
stops it with one line naming the setting and the fix.

| variable | YAML key | meaning |
| --- | --- | --- |
| L2P_PIXEL_MODEL | pixel_model | an `L2PPipeline.from_pretrained` folder or Hub id |
| L2P_CHECKPOINT | checkpoint | a release single-file checkpoint (file, folder or Hub id) for `L2PPipeline.from_release` |
| L2P_CHECKPOINT_FILE | checkpoint_file | the file name inside a checkpoint folder or Hub repository |
| L2P_SOURCE_MODEL | source_model | the latent source, a `ZImagePipeline.from_pretrained` folder or Hub id |
| L2P_HR_MODEL | hr_model | a native high-resolution variant of the pixel model (`l2p.high_resolution`), an `L2PPipeline.from_pretrained` folder or Hub id: Compare at its native size runs it as a third model (default: the embedded `tiny-l2p-hr/`, when the embedded pair is served and it exists; none otherwise). If it cannot be loaded, the notice names this setting and everything else is served |
| L2P_TEXT_ENCODER | text_encoder | where a release checkpoint's text encoder comes from (default: the source) |
| L2P_ASSETS | assets | the folder holding the embedded `tiny-source/`, `tiny-l2p/` and (optional) `tiny-l2p-hr/` |
| L2P_DEVICE, L2P_DTYPE | device, dtype | e.g. cuda / cpu, bfloat16 / float32 (default: cuda+bfloat16 if there is a GPU; a device this machine lacks falls back to the CPU, with a notice) |
| L2P_STEPS, L2P_GUIDANCE | steps, guidance | the pixel model's defaults (else its folder's sampling.json, else the release's 30, 2.0) |
| L2P_SOURCE_STEPS, L2P_SOURCE_GUIDANCE | source_steps, source_guidance | the source's defaults in Compare (else its folder's sampling.json, or the pixel model's where the two sampling.json agree; else Z-Image-Turbo's 9, 1.0) |
| L2P_BENCHMARKS | benchmarks | a `docs/benchmarks/*.json` to estimate costs from (else measured at start-up) |
| L2P_MAX_SECONDS | max_seconds | refuse runs estimated to take longer, before they queue (default: 120 on a CPU or ZeroGPU, 600 on a dedicated GPU; 0: no limit) |
| L2P_GPU_MAX_SECONDS | gpu_max_seconds | the most a ZeroGPU call asks for (120); each asks for its run's estimate with headroom, up to this, and on ZeroGPU no run may be estimated past it |
| L2P_CONCURRENCY, L2P_MAX_QUEUE | concurrency, max_queue | runs at once per device (1), waiting runs (20; counted by `admission`, as Gradio's own check lets bursts through) |
| L2P_MCP | mcp | serve the endpoints as MCP tools too (default: on when `gradio[mcp]` is installed; 0: off) |

Modules, one concept each:

| module | holds |
| --- | --- |
| `config` | `DemoConfig`: the settings above |
| `check` | the start-up check behind `python app.py --check`, which builds no page (and imports no Gradio) |
| `loading` | loading the models once (configured, else embedded; the optional HR model) and the cost model (`l2p.bench.costs`) |
| `presets` | resolution presets, aspect ratios, RoPE choices and the `Geometry` of a loaded pair |
| `plan` | `Request`, and `Plan`: a request resolved once (problems, size, RoPE strategies, estimates for all its images) |
| `runs` | the Generate and Compare runs themselves: pipeline calls, paced progress, stages measured |
| `worker` | one run at a time on a worker thread: streaming, cancelling, failures as messages |
| `admission` | the app's own queue: runs accepted (the limit, counted in the validator), whose turn it is, what is ahead of a waiting run |
| `metadata` | the settings a downloaded PNG carries as text chunks, and reading them back |
| `history` | a visitor's gallery of this visit's images with their settings, and the inputs that remake one |
| `results` | what runs give back, the cost and preset tables, and every line of text the page shows |
| `analysis` | 1:1 crops of the most detailed region and radially averaged power spectra |
| `service` | `Demo`: the loaded models and one method per thing the page can ask for |
"""

from .analysis import detail_box, high_frequency_share, matching_crops, radial_power_spectrum
from .check import check, configure_logging
from .config import DemoConfig
from .errors import Cancelled, DemoError, MissingAssets
from .loading import BUILD_COMMAND, LoadedModels, load_cost_model, load_models
from .plan import (
    COMPARE_FIELDS, DYPE_RANGE, GENERATE_FIELDS, GUIDANCE_RANGE, IMAGES_RANGE, MAX_SEED, SHIFT_RANGE, STEPS_RANGE, Plan,
    Request, seeds_of,
)
from .presets import ASPECT_RATIOS, AUTO_ROPE, CUSTOM, HR, NATIVE, PRESETS, ROPE_CHOICES, Geometry, image_size, is_native, preset_label, resolve_rope
from .results import (
    PRESET_HEADERS,
    CompareResult,
    GenerateResult,
    Preview,
    SourceDone,
    Waiting,
    format_bytes,
    format_estimate,
    format_seconds,
)
from .runs import PREVIEW_INTERVAL_S, ProgressPacer, x0_preview
from .service import Demo

__all__ = [
    "ASPECT_RATIOS", "BUILD_COMMAND", "CUSTOM", "HR", "COMPARE_FIELDS", "GENERATE_FIELDS", "GUIDANCE_RANGE", "MAX_SEED", "NATIVE",
    "AUTO_ROPE", "DYPE_RANGE", "IMAGES_RANGE", "PRESETS", "PRESET_HEADERS", "PREVIEW_INTERVAL_S", "ROPE_CHOICES", "SHIFT_RANGE", "STEPS_RANGE", "Cancelled", "CompareResult",
    "check", "configure_logging", "Demo", "DemoConfig", "DemoError", "GenerateResult", "Geometry", "LoadedModels", "MissingAssets", "Plan",
    "Preview", "ProgressPacer", "Request", "SourceDone", "Waiting", "detail_box",
    "format_bytes", "format_estimate", "format_seconds", "high_frequency_share", "image_size",
    "is_native", "load_cost_model", "load_models", "matching_crops", "preset_label",
    "radial_power_spectrum", "resolve_rope", "seeds_of", "x0_preview",
]
