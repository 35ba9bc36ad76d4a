"""The toy world's words, colours and prompt grammar: parsing prompts and sampling them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
BACKGROUNDS = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
DEFAULT_BACKGROUND = "white"
RELATIONS = ("left of", "right of", "above", "below")
COUNT_WORDS = ("one", "two", "three", "four")
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

# The accepted sentence forms, as quoted in every parse error.
FORMS = {
    "single_object": "a {shape}",
    "two_object": "a {shape} and a {shape}",
    "counting": "{one|two|three|four} {shape}s (singular after 'one')",
    "colors": "a {color} {shape}",
    "position": "a {shape} {left of|right of|above|below} a {shape}",
    "color_attr": "a {color} {shape} and a {color} {shape}",
}

VOCABULARY = sorted(
    {"a", "an", "and", "on", "background"}
    | set(SHAPES)
    | {shape + "s" for shape in SHAPES}
    | set(COLORS)
    | set(BACKGROUNDS)
    | set(COUNT_WORDS)
    | {word for relation in RELATIONS for word in relation.split()}
)


@dataclass(frozen=True)
class ObjectSpec:
    """One noun phrase of a prompt: `count` objects of `shape`, all `color` if it is named."""

    shape: str
    color: str | None = None
    count: int = 1


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt's meaning. `relation` holds between objects[0] and objects[1] ("A left of B").

    `background` is None when the prompt names none; the image is then drawn on `DEFAULT_BACKGROUND`
    (see `canvas_background`) but the evaluator does not require it.
    """

    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    background: str | None = None

    @property
    def canvas_background(self) -> str:
        return self.background or DEFAULT_BACKGROUND

    @property
    def text(self) -> str:
        """The canonical prompt with this meaning (lower case, correct articles, no period)."""
        if self.category == "counting":
            (spec,) = self.objects
            body = f"{COUNT_WORDS[spec.count - 1]} {spec.shape}" + ("s" if spec.count > 1 else "")
        else:
            phrases = [_noun_phrase(spec) for spec in self.objects]
            body = f" {self.relation} ".join(phrases) if self.relation else " and ".join(phrases)
        return body + (f" on a {self.background} background" if self.background else "")


def _noun_phrase(spec: ObjectSpec) -> str:
    words = f"{spec.color} {spec.shape}" if spec.color else spec.shape
    return ("an " if words[0] in "aeiou" else "a ") + words


_ARTICLE = "(?:a|an)"
_SHAPE = "({})".format("|".join(SHAPES))
_COLOR = "({})".format("|".join(COLORS))
_PATTERNS = [
    ("single_object", re.compile(rf"{_ARTICLE} {_SHAPE}")),
    ("two_object", re.compile(rf"{_ARTICLE} {_SHAPE} and {_ARTICLE} {_SHAPE}")),
    ("counting", re.compile(rf"({'|'.join(COUNT_WORDS)}) {_SHAPE}(s?)")),
    ("colors", re.compile(rf"{_ARTICLE} {_COLOR} {_SHAPE}")),
    ("position", re.compile(rf"{_ARTICLE} {_SHAPE} ({'|'.join(RELATIONS)}) {_ARTICLE} {_SHAPE}")),
    ("color_attr", re.compile(rf"{_ARTICLE} {_COLOR} {_SHAPE} and {_ARTICLE} {_COLOR} {_SHAPE}")),
]
_BACKGROUND_SUFFIX = re.compile(rf"(?P<body>.*) on {_ARTICLE} (?P<background>{'|'.join(BACKGROUNDS)}) background")


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Parse a toy-world prompt (case-insensitive; surrounding whitespace and a final period are ignored).

    Raises ValueError, quoting the prompt and listing the accepted forms, for anything outside the grammar.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    text = " ".join(prompt.strip().removesuffix(".").lower().split())
    if not text:
        raise _grammar_error(prompt, "it is empty")
    unknown = [word for word in text.split() if word not in VOCABULARY]
    if unknown:
        raise _grammar_error(prompt, "unknown word(s) " + ", ".join(repr(word) for word in unknown))

    background = None
    suffix = _BACKGROUND_SUFFIX.fullmatch(text)
    if suffix:
        text, background = suffix["body"], suffix["background"]
    for category, pattern in _PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return _build(category, match.groups(), background, prompt)
    raise _grammar_error(prompt, "its words do not form an accepted sentence")


def _build(category: str, groups: tuple[str, ...], background: str | None, prompt: str) -> ParsedPrompt:
    relation = None
    if category in ("single_object", "two_object"):
        objects = tuple(ObjectSpec(shape) for shape in groups)
    elif category in ("colors", "color_attr"):
        objects = tuple(ObjectSpec(shape, color) for color, shape in zip(groups[::2], groups[1::2]))
    elif category == "position":
        first, relation, second = groups
        objects = (ObjectSpec(first), ObjectSpec(second))
    else:  # counting
        word, shape, plural = groups
        count = COUNT_WORDS.index(word) + 1
        if (count > 1) != bool(plural):
            raise _grammar_error(prompt, f"'{word}' needs the {'plural' if count > 1 else 'singular'} '{shape}'")
        objects = (ObjectSpec(shape, count=count),)
    return ParsedPrompt(category, objects, relation, background)


def _grammar_error(prompt: str, why: str) -> ValueError:
    forms = "; ".join(f"{category}: '{form}'" for category, form in FORMS.items())
    return ValueError(
        f"prompt {prompt!r} is outside the toy-world grammar: {why}. Accepted forms: {forms}; "
        f"{{shape}} is one of {', '.join(SHAPES)}; {{color}} is one of {', '.join(COLORS)}; "
        f"'an' may replace 'a'; any form may end with ' on a {{{'|'.join(BACKGROUNDS)}}} background'."
    )


def sample_prompts(
    n: int, seed: int = 0, categories: Sequence[str] | None = None, background_fraction: float = 0.3
) -> list[tuple[str, str]]:
    """`n` (category, prompt) pairs, cycling through `categories` (default: all) so every one recurs.

    Deterministic for a seed; about `background_fraction` of the prompts name a background.
    """
    categories = tuple(CATEGORIES if categories is None else categories)
    if not categories or not set(categories) <= set(CATEGORIES):
        raise ValueError(f"categories must be a non-empty selection of {CATEGORIES}, got {categories!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        category = categories[i % len(categories)]
        prompts.append((category, _sample(category, rng, background_fraction).text))
    return prompts


def _sample(category: str, rng: np.random.Generator, background_fraction: float) -> ParsedPrompt:
    def shapes(k: int) -> list[str]:
        return [SHAPES[i] for i in rng.choice(len(SHAPES), size=k, replace=False)]

    def colors(k: int) -> list[str]:
        return [list(COLORS)[i] for i in rng.choice(len(COLORS), size=k, replace=False)]

    relation = None
    if category == "single_object":
        objects = (ObjectSpec(*shapes(1)),)
    elif category == "two_object":
        objects = tuple(ObjectSpec(shape) for shape in shapes(2))
    elif category == "counting":
        objects = (ObjectSpec(*shapes(1), count=int(rng.integers(1, len(COUNT_WORDS) + 1))),)
    elif category == "colors":
        objects = (ObjectSpec(*shapes(1), *colors(1)),)
    elif category == "position":
        objects = tuple(ObjectSpec(shape) for shape in shapes(2))
        relation = RELATIONS[rng.integers(len(RELATIONS))]
    else:  # color_attr: distinct colours; the shapes may repeat, which makes the binding matter
        objects = tuple(ObjectSpec(*shapes(1), color) for color in colors(2))
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))] if rng.random() < background_fraction else None
    return ParsedPrompt(category, objects, relation, background)
