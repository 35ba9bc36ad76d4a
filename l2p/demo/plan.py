"""A request resolved once into a plan: what is wrong with it, the size it runs at, the RoPE strategy of each
pipeline, whether that size is native, and what the run is expected to cost.

Everything that looks at a request (the page's checks before the queue, the run itself, the one-line summary,
ZeroGPU's duration) reads the same `Plan`, and `Planner.plan` keeps the last few, so the check before the queue
and the run that follows it resolve a request once.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
from dataclasses import dataclass, field

from ..rope import RopeScaling
from ..sampling import RELEASE_SAMPLING
from .presets import ASPECT_RATIOS, CUSTOM, NATIVE, ROPE_CHOICES, Geometry, custom_side_problem, image_size
from .results import format_bytes, format_seconds

MAX_SEED = 2**31 - 1
STEPS_RANGE = (1, 100)
IMAGES_RANGE = (1, 4)  # images per Generate run, on seeds seed, seed + 1, ...
MAX_RESCALE = 20.0  # how far one run may move the estimates, either way
GUIDANCE_RANGE = (0.0, 10.0)
MAX_SEQUENCE_LENGTH = 512  # Z-Image's text encoder reads at most this many tokens, chat template included
PLANS_KEPT = 64


@dataclass(frozen=True)
class Request:
    """The inputs of one run, as the page and the API send them (in this order: see GENERATE_FIELDS)."""

    prompt: str
    negative_prompt: str = ""
    preset: str = NATIVE
    aspect_ratio: str = "1:1"
    steps: int = RELEASE_SAMPLING.num_inference_steps
    guidance: float = RELEASE_SAMPLING.guidance_scale
    seed: int = 0
    randomize_seed: bool = False
    rope: str = "auto"
    source_steps: int | None = None
    source_guidance: float | None = None
    # Advanced: the pixel model's noise shift (None: its scheduler's, 3 in the release) and DyPE's scale and exponent.
    shift: float | None = None
    dype_lambda_s: float = RopeScaling.dype_lambda_s
    dype_lambda_t: float = RopeScaling.dype_lambda_t
    # With preset "custom": the size itself (each a multiple of what both models accept).
    width: int | None = None
    height: int | None = None
    # Generate: how many images, one after another on seeds seed, seed + 1, ... (Compare makes one pair).
    num_images: int = 1

    @classmethod
    def of(cls, fields, values, named=None) -> "Request":
        """A request from the values the page or the API sends, in the order of `fields`."""
        return cls(**dict(zip(fields, values)), **(named or {}))

    def rope_setting(self, strategy: str | None):
        """What `L2PPipeline(rope_scaling=...)` gets for a resolved strategy: DyPE with this request's parameters."""
        if strategy != "dype":
            return strategy
        return {"strategy": "dype", "dype_lambda_s": float(self.dype_lambda_s), "dype_lambda_t": float(self.dype_lambda_t)}


# The inputs of Generate and Compare, in the order the page sends them.
SHARED_FIELDS = ("prompt", "negative_prompt", "preset", "aspect_ratio", "steps", "guidance", "seed", "randomize_seed",
                 "rope", "shift", "dype_lambda_s", "dype_lambda_t", "width", "height")
GENERATE_FIELDS = (*SHARED_FIELDS, "num_images")
COMPARE_FIELDS = (*SHARED_FIELDS, "source_steps", "source_guidance")
SHIFT_RANGE = (0.5, 10.0)
DYPE_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class Plan:
    """A request resolved for Generate ("generate") or Compare ("compare").

    request: the request with the source's settings filled in from the pixel model's and, when it can run, its
        numbers as their proper types.
    problems: field name -> what is wrong with it; empty when the request can run.
    width, height: the size, when the preset and aspect ratio are known.
    rope, native: per pipeline ("pixel", "source"; "hr" for a three-way Compare), the RoPE strategy and whether
        the size is native.
    estimates: per pipeline, an `l2p.bench.costs.Estimate` (None without a cost model) of all its images in this
        run (Generate: `num_images` of them, one after another); "source" for Compare only, "hr" for a three-way
        Compare only (Compare at the HR model's native size, `Geometry.is_hr_size`).
    estimate: the whole run: the pixel model alone, or all of Compare's models in a row.
    """

    request: Request
    kind: str
    problems: dict[str, str]
    width: int | None = None
    height: int | None = None
    rope: dict[str, str | None] = field(default_factory=dict)
    native: dict[str, bool] = field(default_factory=dict)
    estimates: dict[str, object] = field(default_factory=dict)
    estimate: object | None = None

    @property
    def three_way(self) -> bool:
        """A Compare at the HR model's native size: the latent source, the 1x pixel model and the HR model."""
        return "hr" in self.native

    @property
    def size_text(self) -> str:
        return f"{self.width}×{self.height}"

    def seeded(self) -> Request:
        """The request to run: the seed drawn if asked."""
        request = self.request
        seed = random.randint(0, MAX_SEED) if request.randomize_seed else int(request.seed)
        return dataclasses.replace(request, seed=seed, randomize_seed=False)


def seeds_of(seed: int, count: int) -> list[int]:
    """The seeds of a run's images: seed, seed + 1, ..., wrapping past MAX_SEED to 0."""
    return [(seed + index) % (MAX_SEED + 1) for index in range(count)]


def _or(value, fallback):
    return fallback if value is None else value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return _number(value) and float(value).is_integer()


class Planner:
    """Resolves requests into plans, for one loaded pair of models (their geometry and tokenizer) and a cost model."""

    def __init__(self, geometry: Geometry, tokenizer, costs=None, max_seconds: float | None = None,
                 limit_setting: str = "L2P_MAX_SECONDS"):
        self.geometry = geometry
        self.tokenizer = tokenizer
        self.max_seconds = max_seconds
        self.limit_setting = limit_setting  # the setting that makes `max_seconds`, named in refusals
        self.prompt_overhead = self._templated_length("")
        self._plans: dict = {}
        self._plans_lock = threading.Lock()
        # Measured / fitted run time of the last run of each pipeline here: a busy CPU, or a faster GPU than the
        # benchmark's, shows in every later estimate after one run.
        self.time_scale = {"pixel": 1.0, "source": 1.0, "hr": 1.0}
        self.costs = costs

    @property
    def costs(self):
        """The `l2p.bench.costs.CostModel` estimates come from (None: no estimates, no memory check)."""
        return self._costs

    @costs.setter
    def costs(self, costs):
        self._costs = costs
        with self._plans_lock:
            self._plans.clear()  # their estimates came from the old model

    # -- estimates ------------------------------------------------------------------------------------------
    def estimate(self, pipeline: str, width: int, height: int, steps, guidance):
        """An `l2p.bench.costs.Estimate`, or None without a cost model. `pipeline` is "pixel", "source" or "hr". Its time
        is the cost model's, rescaled by what the last run of that pipeline measured here (`learn`)."""
        fitted = self._fitted(pipeline, width, height, steps, guidance)
        scale = self.time_scale[pipeline]
        return fitted if fitted is None or scale == 1.0 else dataclasses.replace(fitted, seconds=fitted.seconds * scale)

    def _fitted(self, pipeline: str, width: int, height: int, steps, guidance):
        costs = self.costs
        if costs is None:
            return None
        if pipeline == "hr":
            return self._fitted_hr(width, height, steps, guidance)
        name = "source"
        if pipeline == "pixel":  # a cost model measured on the high-resolution variant only stands in for it
            name = "pixel_hr" if "pixel" not in costs.pipelines and "pixel_hr" in costs.pipelines else "pixel"
        return costs.estimate(name, width, height, int(steps), cfg=float(guidance) > 1.0)

    def _fitted_hr(self, width: int, height: int, steps, guidance):
        """The HR model's cost: the benchmark's own "pixel_hr" measurement where it was taken at this size with
        this model's patch (`python -m l2p.bench --pixel-hr FOLDER` measures a trained HR folder at its native
        size); elsewhere scaled from the 1x pixel model's fit, as below (the benchmark's "pixel_hr" follows the
        release's patch rule, and one measured size says nothing of how its cost grows).

        With f = HR patch / 1x patch, the HR model at width x height runs the DiT on the token grid the 1x model
        has at width/f x height/f, and its Detailer Head over f² times those pixels, through a head no wider at
        full resolution than the 1x model's. Two upper bounds of its time follow, and the smaller is taken: the 1x
        model's text encoding plus f² times its denoising at width/f x height/f (as if every stage grew with the
        pixels: right for the head, generous for the DiT and its per-step overhead, and without the attention
        growth of a zero-shot run), and the 1x model's own run at the full size (f² as many tokens through the
        same DiT). Its peak memory is the 1x model's at the full size (the same full-resolution activations, f²
        fewer tokens). All err high, so the time limit never lets a three-way Compare through that it should
        refuse."""
        from ..bench.cases import hr_patch_size
        from ..bench.costs import Estimate

        measured = self.costs.pipelines.get("pixel_hr")
        if (measured is not None and (width, height) in measured.measured_sizes
                and hr_patch_size(width, height, *measured.hr_rule) == self.geometry.hr_patch_size):
            return self.costs.estimate("pixel_hr", width, height, int(steps), cfg=float(guidance) > 1.0)
        f = self.geometry.hr_patch_size / self.geometry.patch_size
        small = (max(1, round(width / f)), max(1, round(height / f)))
        run, encode = (self._fitted("pixel", *small, count, guidance) for count in (steps, 0))
        full = self._fitted("pixel", width, height, steps, guidance)
        scaled = encode.seconds + f * f * (run.seconds - encode.seconds)
        return Estimate(min(scaled, full.seconds), full.peak_memory_bytes, full.memory_limit_bytes)

    def learn(self, pipeline: str, width: int, height: int, steps, guidance, measured_s: float) -> None:
        """Rescale this pipeline's later time estimates by a run's measured time against the fitted one."""
        fitted = self._fitted(pipeline, width, height, steps, guidance)
        if fitted is None or fitted.seconds <= 0 or measured_s <= 0:
            return
        self.time_scale[pipeline] = min(max(measured_s / fitted.seconds, 1 / MAX_RESCALE), MAX_RESCALE)
        with self._plans_lock:
            self._plans.clear()  # their estimates used the old scale

    @staticmethod
    def repeated(estimate, count: int):
        """`count` runs one after another: times add up, memory peaks as for one."""
        return estimate if estimate is None or count == 1 else dataclasses.replace(estimate, seconds=estimate.seconds * count)

    @staticmethod
    def in_a_row(*estimates):
        """Runs one after the other: times add up, memory peaks at the largest (None if any has no estimate)."""
        from ..bench.costs import Estimate

        if not estimates or any(e is None for e in estimates):
            return None
        return Estimate(sum(e.seconds for e in estimates), max(e.peak_memory_bytes for e in estimates),
                        estimates[0].memory_limit_bytes)

    # -- plans ----------------------------------------------------------------------------------------------
    def plan(self, request: Request, kind: str = "generate") -> Plan:
        """The request resolved (see `Plan`); the same request asked for again is not resolved again."""
        key = (request, kind)
        try:
            hash(key)
        except TypeError:  # an unhashable value from an API call: resolve it, and let the checks say what is wrong
            return self._resolve(request, kind)
        with self._plans_lock:
            plan = self._plans.get(key)
        if plan is None:
            plan = self._resolve(request, kind)
            with self._plans_lock:
                self._plans[key] = plan
                while len(self._plans) > PLANS_KEPT:
                    self._plans.pop(next(iter(self._plans)))
        return plan

    def _resolve(self, request: Request, kind: str) -> Plan:
        request = dataclasses.replace(request, source_steps=_or(request.source_steps, request.steps),
                                      source_guidance=_or(request.source_guidance, request.guidance))
        found = self._field_problems(request, kind)
        parts: dict = {}
        size_fields = {"preset", "aspect_ratio", "width", "height"}
        if not size_fields & found.keys():
            parts = self._size_parts(request, kind, rope_known="rope" not in found)
        if not ((size_fields | {"steps", "guidance", "source_steps", "source_guidance", "num_images"}) & found.keys()):
            count = int(request.num_images) if kind == "generate" else 1
            message = self._cost_problem(parts["width"], parts["height"], parts["estimates"], count)
            if message:
                found["preset"] = message
        if not found:
            request = dataclasses.replace(
                request, steps=int(request.steps), guidance=float(request.guidance),
                negative_prompt=request.negative_prompt or "", source_steps=int(request.source_steps),
                source_guidance=float(request.source_guidance),
                shift=None if request.shift is None else float(request.shift),
                dype_lambda_s=float(request.dype_lambda_s), dype_lambda_t=float(request.dype_lambda_t),
                width=int(request.width) if request.preset == CUSTOM else None,
                height=int(request.height) if request.preset == CUSTOM else None,
                num_images=int(request.num_images) if kind == "generate" else 1,
            )
        return Plan(request, kind, found, **parts)

    def _size_parts(self, request: Request, kind: str, rope_known: bool) -> dict:
        g = self.geometry
        if request.preset == CUSTOM:
            width, height = int(request.width), int(request.height)
        else:
            width, height = image_size(request.preset, request.aspect_ratio, g)
        # Compare at the HR model's native size runs it too, with the 1x pixel model's steps and guidance.
        pipelines = ("pixel", "source", "hr") if kind == "compare" and g.is_hr_size(width, height) else ("pixel", "source")
        parts = {"width": width, "height": height, "estimates": {}, "estimate": None,
                 "native": {pipeline: g.is_native(width, height, pipeline) for pipeline in pipelines}}
        if rope_known:
            parts["rope"] = {pipeline: g.rope(request.rope, width, height, pipeline) for pipeline in pipelines}
        settings = {"pixel": (request.steps, request.guidance)}
        if kind == "compare":
            settings["source"] = (request.source_steps, request.source_guidance)
        if "hr" in pipelines:
            settings["hr"] = (request.steps, request.guidance)
        count = request.num_images if kind == "generate" else 1
        if all(_number(value) for pair in settings.values() for value in pair) and _whole(count):
            estimates = {name: self.estimate(name, width, height, *pair) for name, pair in settings.items()}
            estimates["pixel"] = self.repeated(estimates["pixel"], int(count))
            parts["estimates"] = estimates
            parts["estimate"] = estimates["pixel"] if kind != "compare" else self.in_a_row(*estimates.values())
        return parts

    # -- checks ---------------------------------------------------------------------------------------------
    def _templated_length(self, text: str) -> int:
        templated = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        return len(self.tokenizer(templated, verbose=False).input_ids)

    def _prompt_problem(self, text, name: str, required: bool) -> str | None:
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

    def _field_problems(self, request: Request, kind: str) -> dict[str, str]:
        found: dict[str, str] = {}
        message = self._prompt_problem(request.prompt, "prompt", required=True)
        if message:
            found["prompt"] = message
        message = self._prompt_problem(request.negative_prompt, "negative prompt", required=False)
        if message:
            found["negative_prompt"] = message
        if request.preset == CUSTOM:
            for name in ("width", "height"):
                message = custom_side_problem(name, getattr(request, name), self.geometry)
                if message:
                    found[name] = message
        elif request.preset not in self.geometry.presets:
            found["preset"] = (f"Unknown resolution preset {request.preset!r}; choose one of: "
                               f"{', '.join((*self.geometry.presets, CUSTOM))}.")
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
        if request.shift is not None and (not _number(request.shift) or not SHIFT_RANGE[0] <= request.shift <= SHIFT_RANGE[1]):
            found["shift"] = f"Shift must be between {SHIFT_RANGE[0]:g} and {SHIFT_RANGE[1]:g}, got {request.shift!r}."
        for name, label in (("dype_lambda_s", "DyPE scale λs"), ("dype_lambda_t", "DyPE exponent λt")):
            value = getattr(request, name)
            if not _number(value) or not DYPE_RANGE[0] <= value <= DYPE_RANGE[1]:
                found[name] = f"{label} must be between {DYPE_RANGE[0]:g} and {DYPE_RANGE[1]:g}, got {value!r}."
        if kind == "generate":
            count, (low, high) = request.num_images, IMAGES_RANGE
            if not _whole(count) or not low <= count <= high:
                found["num_images"] = f"Images per run must be a whole number from {low} to {high}, got {count!r}."
        if not request.randomize_seed and (not _whole(request.seed) or not 0 <= request.seed <= MAX_SEED):
            found["seed"] = f"Seed must be a whole number from 0 to {MAX_SEED}, got {request.seed!r}."
        return found

    def _cost_problem(self, width: int, height: int, estimates: dict, count: int = 1) -> str | None:
        """Why the run cannot go ahead on this device: memory, or the configured time limit (for all `count` images
        of a Generate run)."""
        who = {"pixel": "the pixel model", "source": "the latent source", "hr": "the high-resolution model"}
        for name, estimate in estimates.items():
            if estimate is not None and not estimate.fits:
                return (f"{width}×{height} needs about {format_bytes(estimate.peak_memory_bytes)} of memory for "
                        f"{who[name]}, more than this device's {format_bytes(estimate.memory_limit_bytes)}. "
                        f"Choose a smaller preset.")
        if self.max_seconds:
            total = sum(e.seconds for e in estimates.values() if e is not None)
            if total > self.max_seconds:
                what = f"{count} images at {width}×{height}" if count > 1 else f"{width}×{height}"
                fewer = "fewer steps or fewer images" if count > 1 else "fewer steps"
                return (f"{what} would take about {format_seconds(total)} here, over this app's limit of "
                        f"{format_seconds(self.max_seconds)} a run ({self.limit_setting}). Choose a smaller preset or "
                        f"{fewer}.")
        return None
