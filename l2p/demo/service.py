"""`Demo`: the loaded models, their cost model, and one method per thing the page can ask for."""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from typing import Iterator

import torch

from ..device import device_label
from ..sampling import RELEASE_SAMPLING, TURBO_SAMPLING, l2p_guidance
from ..tokenizer import ROLE_WORDS
from . import results
from .admission import Admissions
from .config import DemoConfig, run_time_limit
from .errors import DemoError
from .loading import LoadedModels, load_cost_model, load_models
from .plan import Plan, Planner, Request
from .presets import ASPECT_RATIOS, CUSTOM, Geometry, image_size, preset_label, preset_name
from .results import CompareResult, GenerateResult, Preview, SourceDone, Waiting
from .runs import PREVIEW_INTERVAL_S, PREVIEW_MIN_RUN_S, compare_run, generate_run
from .worker import explain_failure, stream

WAIT_UPDATE_S = 1.0  # how often a waiting run says what is ahead of it

# A word-level toy tokenizer has a few dozen words; Qwen3's has ~150k. Below this, the toy world's examples.
TOY_VOCABULARY_MAX = 1000

# Sentences of the toy grammar (l2p.toyworld.FORMS), five of its six categories: what the embedded models learnt.
TOY_EXAMPLES = [
    "a red circle and a blue square",
    "three triangles on a black background",
    "a yellow triangle",
    "a triangle above a circle on a gray background",
    "a square and a circle",
    "a green square on a white background",
]
FULL_EXAMPLES = [
    "a lighthouse on a cliff at dusk, waves breaking on the rocks below, warm light in its windows",
    "macro photograph of a dragonfly wing, every vein sharp, morning dew, shallow depth of field",
    'a minimalist Swiss-style poster with the words "PIXELS, NOT LATENTS" in bold black letters on red',
    "aerial view of a dense old town at night, thousands of lit windows, narrow winding streets",
    "a tabby cat asleep on a stack of old books in a sunlit library, dust in the light",
]


def _or(value, fallback):
    return fallback if value is None else value


class Demo:
    """The loaded models, their cost model, and one method per thing the page can do."""

    def __init__(self, models: LoadedModels, config: DemoConfig, costs=None, costs_note: str = ""):
        self.models = models
        self.config = config
        self.costs_note = costs_note
        self.geometry = Geometry.of(models.source, models.pixel, models.hr)
        self.tokenizer = models.source.tokenizer
        self.toy = len(self.tokenizer) < TOY_VOCABULARY_MAX
        self.planner = Planner(self.geometry, self.tokenizer, costs,
                               *run_time_limit(config.max_seconds, models.device.type, config.gpu_max_seconds))
        self.lock = threading.Lock()  # the pipelines (and their schedulers) run one request at a time
        self.admissions = Admissions(config.max_queue, slots=config.concurrency)
        self.preview_interval = PREVIEW_INTERVAL_S
        self.preview_min_run_s = PREVIEW_MIN_RUN_S

    @classmethod
    def start(cls, config: DemoConfig) -> "Demo":
        models = load_models(config)
        demo = cls(models, config)
        demo.costs, demo.costs_note = load_cost_model(models, demo.geometry, config, "tiny" if demo.toy else "full")
        return demo

    # -- defaults and facts ---------------------------------------------------------------------------------
    @property
    def costs(self):
        """The `l2p.bench.costs.CostModel` estimates come from, or None."""
        return self.planner.costs

    @costs.setter
    def costs(self, costs):
        self.planner.costs = costs

    @property
    def device(self) -> torch.device:
        return self.models.device

    @property
    def defaults(self) -> Request:
        """The settings a page or API call starts from, unless configured: each folder's sampling.json (the
        embedded models have one), else the release's 30 steps at guidance 2 for the pixel model and
        Z-Image-Turbo's own 9 steps without guidance for the source. Guidance is in L2P's convention here, so a
        Z-Image sampling.json's guidance_scale w is shown as w + 1. Where both folders are meant to run alike (the
        toy models), the source follows the pixel model's configured steps and guidance, so Compare stays like
        for like."""
        config = self.config
        pixel = self.models.pixel_sampling or RELEASE_SAMPLING
        source = self.models.source_sampling or TURBO_SAMPLING
        steps = _or(config.steps, pixel.num_inference_steps)
        guidance = _or(config.guidance, pixel.guidance_scale)
        source_steps, source_guidance = source.num_inference_steps, l2p_guidance(source.guidance_scale)
        if (source_steps, source_guidance) == (pixel.num_inference_steps, pixel.guidance_scale):
            source_steps, source_guidance = steps, guidance
        return Request(prompt="", steps=steps, guidance=guidance, source_steps=_or(config.source_steps, source_steps),
                       source_guidance=_or(config.source_guidance, source_guidance),
                       shift=float(self.models.pixel.scheduler.config.shift))

    def example_request(self, prompt: str) -> Request:
        """An example at the model's native size with a fixed seed, so that its cached result is reproducible."""
        return dataclasses.replace(self.defaults, prompt=prompt)

    @property
    def examples(self) -> list[str]:
        if self.config.examples:
            return list(self.config.examples)
        return list(TOY_EXAMPLES if self.toy else FULL_EXAMPLES)

    @functools.cached_property
    def known_words(self) -> list[str]:
        """A toy-scale model's vocabulary (its tokenizer's words, without special tokens and punctuation), read
        once: the note below runs on every keystroke of the prompt."""
        special = set(self.tokenizer.all_special_tokens) | set(ROLE_WORDS)
        return sorted(w for w in self.tokenizer.get_vocab() if w not in special and w.isalpha())

    def vocabulary_note(self, prompt: str) -> str:
        """For a toy-scale model, the prompt's words it does not know (it cannot draw them) and the words it does;
        "" for a full-scale model or a prompt of known words only."""
        if not self.toy or not prompt.strip():
            return ""
        known = self.known_words
        words = [w for w, _ in self.tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(prompt.lower()) if w.isalpha()]
        unknown = list(dict.fromkeys(w for w in words if w not in known))
        if not unknown:
            return ""
        return results.vocabulary_line(unknown, known)

    def preset_choices(self) -> list[tuple[str, str]]:
        return [(preset_label(preset, self.geometry), preset) for preset in (*self.geometry.presets, CUSTOM)]

    def size(self, preset: str, aspect_ratio: str) -> tuple[int, int]:
        return image_size(preset, aspect_ratio, self.geometry)

    def pixel_native(self, width: int, height: int) -> bool:
        return self.geometry.is_native(width, height, "pixel")

    def source_native(self, width: int, height: int) -> bool:
        return self.geometry.is_native(width, height, "source")

    def describe(self) -> dict[str, str]:
        """Facts about what is loaded, for the page's header."""
        models, g = self.models, self.geometry
        return {
            "pixel": f"{models.pixel_name} (patch {g.patch_size}, trained grid {g.trained_grid} → native {g.native_side} px)",
            "source": f"{models.source_name} (latent, {g.source_pixels_per_token} px per token, native {g.source_native_side} px)",
            "origin": models.origin,
            "text_encoder": "shared by both pipelines" if models.shares_text_encoder else "one per pipeline",
            "device": f"{device_label(models.device)}, {str(models.dtype).removeprefix('torch.')}",
            "estimates": self.costs_note,
            "notice": models.notice or "",
            **({"hr": f"{models.hr_name} (patch {g.hr_patch_size}, trained grid {g.hr_trained_grid} → native "
                      f"{g.hr_side} px; Compare at that size runs it as a third model)"} if models.hr is not None else {}),
        }

    # -- plans, estimates and checks ------------------------------------------------------------------------
    def plan(self, request: Request, kind: str = "generate") -> Plan:
        """The request resolved once: problems, size, RoPE strategies and estimates (see `l2p.demo.plan`)."""
        return self.planner.plan(request, kind)

    def problems(self, request: Request, kind: str = "generate") -> dict[str, str]:
        """Field name -> what is wrong with it; empty when the request can run."""
        return dict(self.plan(request, kind).problems)

    def checked(self, request: Request, kind: str = "generate") -> Request:
        """The request with numbers as their proper types and a seed drawn if asked; DemoError if invalid."""
        return self._runnable(request, kind).seeded()

    def _runnable(self, request: Request, kind: str) -> Plan:
        plan = self.plan(request, kind)
        if plan.problems:
            raise DemoError(" ".join(plan.problems.values()))
        return plan

    def estimate(self, pipeline: str, width: int, height: int, steps: int, guidance: float):
        """An `l2p.bench.costs.Estimate`, or None without a cost model. `pipeline` is "pixel" or "source"."""
        return self.planner.estimate(pipeline, width, height, steps, guidance)

    def preset_rows(self, aspect_ratio: str, steps, guidance, source_steps=None, source_guidance=None) -> list[list]:
        """One row per preset: name, size, native or zero-shot, and what Generate and Compare would cost."""
        if aspect_ratio not in ASPECT_RATIOS:
            aspect_ratio = "1:1"
        rows = []
        for preset in self.geometry.presets:
            plan = self.plan(Request("", preset=preset, aspect_ratio=aspect_ratio, steps=steps, guidance=guidance,
                                     source_steps=source_steps, source_guidance=source_guidance), "compare")
            status = results.native_word(plan.native["pixel"]) + (" (HR model: native)" if plan.three_way else "")
            row = [preset_name(preset), plan.size_text, status]
            for estimate in (plan.estimates.get("pixel"), plan.estimate):
                if estimate is None:
                    row += ["?", "?"]
                else:
                    memory = results.format_bytes(estimate.peak_memory_bytes) + ("" if estimate.fits else " (too much)")
                    row += [results.format_seconds(estimate.seconds), memory]
            rows.append(row)
        return rows

    def run_summary(self, request: Request, kind: str = "generate") -> str:
        """One line: the size, native or zero-shot, the RoPE strategy and what this run is expected to cost."""
        return results.plan_line(self.plan(request, kind))

    def gpu_seconds(self, request: Request, kind: str = "generate") -> int:
        """Seconds to ask ZeroGPU for: the run's estimate (all its images) with headroom, never under 20 s (start-up
        and transfers) and never over what a GPU call may ask for (L2P_GPU_MAX_SECONDS, which is also the most
        asked for a run without an estimate)."""
        cap = int(self.config.gpu_max_seconds)
        estimate = self.plan(request, kind).estimate
        if estimate is None:
            return cap
        return min(cap, int(max(20, math.ceil(estimate.seconds * 1.5 + 10))))

    # -- runs -----------------------------------------------------------------------------------------------
    def generate(self, request: Request, cancel: threading.Event | None = None
                 ) -> Iterator[Waiting | Preview | GenerateResult]:
        """Text to image with the pixel model, in its turn: Waiting while runs are ahead of it, Previews (x0
        estimates, paced by ProgressPacer), then the GenerateResult (`request.num_images` images)."""
        return self.queued(request, "generate", functools.partial(self.run, kind="generate", cancel=cancel), cancel)

    def compare(self, request: Request, cancel: threading.Event | None = None
                ) -> Iterator[Waiting | Preview | SourceDone | CompareResult]:
        """The latent source, then the pixel model, on the same prompt and seed, each stage timed and measured
        (in its turn, as `generate`); at the HR model's native size the native HR model third."""
        return self.queued(request, "compare", functools.partial(self.run, kind="compare", cancel=cancel), cancel)

    def admit(self, request: Request, kind: str = "generate") -> None:
        """Count a checked request into the queue, or raise DemoError when the queue is full (the validator's job)."""
        plan = self.plan(request, kind)
        self.admissions.admit(plan.estimate.seconds if plan.estimate is not None else None)

    def queued(self, request: Request, kind: str, run, cancel: threading.Event | None = None) -> Iterator:
        """`run(request)`'s events once it is this request's turn in the app's queue, after a Waiting event every
        WAIT_UPDATE_S while runs are ahead of it; later estimates learn from its result. app.py passes its ZeroGPU
        function as `run`, so a run waits for its turn here, holding no GPU, and the queue and the estimates live
        in the app's own process (ZeroGPU runs GPU functions in a worker process)."""
        plan = self._runnable(request, kind)
        place = self.admissions.join(plan.estimate.seconds if plan.estimate is not None else None)
        try:
            while not self.admissions.turn(place, timeout=0):
                if cancel is not None and cancel.is_set():
                    return
                yield self.admissions.ahead(place)
                self.admissions.turn(place, timeout=WAIT_UPDATE_S)  # returns as soon as the turn comes
            for event in run(request):
                if isinstance(event, (GenerateResult, CompareResult)):
                    self._learn(plan.request, event)
                yield event
        finally:
            self.admissions.finish(place)

    def run(self, request: Request, kind: str = "generate", cancel: threading.Event | None = None) -> Iterator:
        """The run alone, for a request whose turn it is (see `queued`): the pipelines on a worker thread."""
        plan = self._runnable(request, kind)
        if kind == "generate":
            # A run estimated to be short sends its progress without x0 previews (l2p.demo.runs.PREVIEW_MIN_RUN_S).
            previews = plan.estimate is None or plan.estimate.seconds >= self.preview_min_run_s
            work = functools.partial(generate_run, self.models, plan, plan.seeded(), interval=self.preview_interval,
                                     previews=previews)
        else:
            work = functools.partial(compare_run, self.models, plan, plan.seeded(), interval=self.preview_interval)
        explain = functools.partial(explain_failure, size=plan.size_text, estimate=plan.estimate, device=self.device)
        yield from stream(work, self.lock, cancel, explain)

    def _learn(self, request: Request, result) -> None:
        """Later estimates follow what this run measured (see `Planner.learn`)."""
        size = (result.width, result.height)
        if isinstance(result, GenerateResult):  # its images took about the same time each
            self.planner.learn("pixel", *size, request.steps, request.guidance, result.seconds / len(result.images))
            return
        self.planner.learn("pixel", *size, request.steps, request.guidance, result.total_seconds("pixel"))
        self.planner.learn("source", *size, request.source_steps, request.source_guidance, result.total_seconds("source"))
        if result.hr_image is not None:
            self.planner.learn("hr", *size, request.steps, request.guidance, result.total_seconds("hr"))

    # -- what a comparison shows ------------------------------------------------------------------------------
    cost_table = staticmethod(results.cost_table)
    spectrum_rows = staticmethod(results.spectrum_rows)
    high_frequency_shares = staticmethod(results.high_frequency_shares)
