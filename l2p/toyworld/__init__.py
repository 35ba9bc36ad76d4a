"""A procedural world of flat shapes, rendered exactly at any size and judged exactly by a detector,
so GenEval-style text-to-image scores can be measured on a CPU."""

from .evaluate import CheckResult, DetectedObject, check, detect, partial_credit, score
from .grammar import (
    BACKGROUNDS,
    CATEGORIES,
    COLORS,
    DEFAULT_BACKGROUND,
    RELATIONS,
    SHAPES,
    VOCABULARY,
    ObjectSpec,
    ParsedPrompt,
    parse_prompt,
    sample_prompts,
)
from .render import Layout, PlacedObject, layout_prompt, place_objects, render_layout, render_prompt

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLORS",
    "DEFAULT_BACKGROUND",
    "RELATIONS",
    "SHAPES",
    "VOCABULARY",
    "CheckResult",
    "DetectedObject",
    "Layout",
    "ObjectSpec",
    "ParsedPrompt",
    "PlacedObject",
    "check",
    "detect",
    "layout_prompt",
    "parse_prompt",
    "partial_credit",
    "place_objects",
    "render_layout",
    "render_prompt",
    "sample_prompts",
    "score",
]
