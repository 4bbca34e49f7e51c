"""What a sweep runs: the fields it may vary, --grid and --range parsed and
checked, and the settings they make (every grid point crossed with every
random draw).

    >>> make_settings(parse_grid(["n_embd=16,32"]),
    ...               parse_ranges(["learning_rate=1e-3:1e-1:log"]), n_random=2)
    [{'n_embd': 16, 'learning_rate': ...}, ...]   # 2 points x 2 draws
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import fields

from ..config import GPTConfig, TrainConfig, on_off

MODEL_FIELDS = tuple(f.name for f in fields(GPTConfig) if f.name != "vocab_size")
# every setting of a run (threads is always 1: a run per core)
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))
SWEEPABLE = MODEL_FIELDS + TRAIN_FIELDS
DEFAULTS = {**GPTConfig().to_dict(), **TrainConfig().to_dict()}
# the type of each field's values: its default's, or the declared one where the
# default is None (a default that depends on the data, such as val_fraction)
_TYPES = {f.name: f.metadata.get("type", type(f.default))
          for cls in (GPTConfig, TrainConfig) for f in fields(cls)}


class SweepError(ValueError):
    """A sweep that cannot start (bad grid syntax, unknown field); one line."""


def field_type(name: str) -> type:
    """The type of a sweepable field's values, or SweepError naming the choices."""
    if name not in SWEEPABLE:
        raise SweepError(f"unknown field {name!r}: choose from {', '.join(SWEEPABLE)}")
    return _TYPES[name]


def _parse_value(name: str, text: str):
    kind = field_type(name)
    try:
        # an int field takes only what int() parses: through float(), "1e30" or
        # "32.5" would quietly become some other integer
        return on_off(text) if kind is bool else kind(text)
    except ValueError:
        raise SweepError(f"{name}: {text!r} is not a valid {kind.__name__}") from None


def _split_assignment(flag: str, text: str) -> tuple[str, str]:
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise SweepError(f"{flag} expects FIELD=VALUES, got {text!r}")
    return name.strip(), values.strip()


def parse_grid(items: list[str]) -> dict[str, list]:
    """["learning_rate=0.003,0.01", "n_embd=16,32"] -> {"learning_rate": [...], ...}."""
    grid = {}
    for item in items:
        name, values = _split_assignment("--grid", item)
        if name in grid:
            raise SweepError(f"--grid names {name} twice")
        parts = [v.strip() for v in values.split(",")]
        if any(not p for p in parts):
            raise SweepError(f"--grid {name}: empty value in {values!r}")
        grid[name] = [_parse_value(name, p) for p in parts]
    return grid


def parse_ranges(items: list[str]) -> dict[str, tuple]:
    """["learning_rate=1e-4:1e-1:log"] -> {"learning_rate": (1e-4, 1e-1, "log")}."""
    ranges = {}
    for item in items:
        name, spec = _split_assignment("--range", item)
        parts = spec.split(":")
        scale = "lin"
        if len(parts) == 3:
            scale = parts.pop()
        if len(parts) != 2 or scale not in ("lin", "log"):
            raise SweepError(f"--range expects FIELD=LOW:HIGH[:log|lin], got {item!r}")
        if field_type(name) in (str, bool):
            raise SweepError(f"--range {name}: only numeric fields have ranges; use --grid")
        low, high = (_parse_value(name, p.strip()) for p in parts)
        ranges[name] = check_range(name, (low, high, scale))
    return ranges


def check_range(name: str, spec) -> tuple:
    """(low, high, "lin"|"log") with low <= high (and low > 0 for log), or SweepError."""
    kind = field_type(name)
    try:
        low, high, scale = spec
    except (TypeError, ValueError):
        raise SweepError(f"range of {name} must be (low, high, 'lin' or 'log')") from None
    if kind in (str, bool) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                              and math.isfinite(x) for x in (low, high)):
        raise SweepError(f"range of {name}: low and high must be finite numbers")
    if scale not in ("lin", "log"):
        raise SweepError(f"range of {name}: scale must be 'lin' or 'log', got {scale!r}")
    if not low <= high:
        raise SweepError(f"range of {name}: low {low} is above high {high}")
    if scale == "log" and low <= 0:
        raise SweepError(f"range of {name}: a log range needs low > 0")
    return kind(low), kind(high), scale


def draw_setting(ranges: dict[str, tuple], rng: random.Random) -> dict:
    """One random setting: uniform, or log-uniform, in each range (ints rounded)."""
    setting = {}
    for name, (low, high, scale) in ranges.items():
        if scale == "log":
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        if isinstance(low, int):
            value = min(high, max(low, round(value)))
        setting[name] = value
    return setting


def make_settings(grid: dict[str, list] | None = None, ranges: dict[str, tuple] | None = None,
                  n_random: int = 0, search_seed: int = 0) -> list[dict]:
    """Every grid point, crossed with n_random draws from the ranges (if any)."""
    grid, ranges = dict(grid or {}), dict(ranges or {})
    for name, values in grid.items():
        field_type(name)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not values:
            raise SweepError(f"grid of {name} must be a non-empty list of values")
    ranges = {name: check_range(name, spec) for name, spec in ranges.items()}
    if not (isinstance(n_random, int) and n_random >= 0):
        raise SweepError(f"the number of random settings must be >= 0, got {n_random!r}")
    overlap = set(grid) & set(ranges)
    if overlap:
        raise SweepError(f"{', '.join(sorted(overlap))} is both in --grid and --range")
    if ranges and n_random < 1:
        raise SweepError("--range needs --random N (how many settings to draw)")
    if n_random and not ranges:
        raise SweepError("--random needs at least one --range")
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if not ranges:
        return points
    rng = random.Random(search_seed)
    draws = [draw_setting(ranges, rng) for _ in range(n_random)]
    return [{**p, **d} for p in points for d in draws]
