"""YAML run configs as nested dataclasses, checked before any work starts.

Every stage declares its config as dataclasses; `load_config` fills them from YAML (plus `key.sub=value`
overrides from the command line) and rejects unknown or mistyped fields with the field's dotted name, so a
typo fails in the first second of a run rather than after an hour.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config that cannot run; the message names the field."""


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(prefix + name for name in unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{prefix or 'config'}: {error}") from None


def _coerce(value, hint, name):
    origin = typing.get_origin(hint)
    allowed = typing.get_args(hint) if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        base = typing.get_origin(kind) or kind
        if base in (list, tuple) and isinstance(value, (list, tuple)):
            return base(value)
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it clearly is.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(base, type) and isinstance(value, base):
            return value
    raise ConfigError(f"{name}: expected {hint}, got {value!r}")


def _override(values: dict, assignment: str) -> None:
    key, _, raw = assignment.partition("=")
    if not key or not _:
        raise ConfigError(f"override {assignment!r} is not of the form field.sub=value")
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(cls, path: str | Path | None = None, overrides: list[str] = ()):
    """Build `cls` from a YAML file and `field.sub=value` overrides."""
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
    for assignment in overrides:
        _override(values, assignment)
    return _build(cls, values, "")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def parse_command_line(cls, description: str, argv=None, extra_arguments=()):
    """The CLI every config-driven stage shares: `--config FILE` and `field.sub=value` overrides.

    `extra_arguments` are (args, kwargs) pairs for `add_argument`. Returns (parsed arguments, config)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run config")
    for args, kwargs in extra_arguments:
        parser.add_argument(*args, **kwargs)
    parser.add_argument("overrides", nargs="*", help="field.sub=value overrides")
    arguments = parser.parse_args(argv)
    return arguments, load_config(cls, arguments.config, arguments.overrides)
