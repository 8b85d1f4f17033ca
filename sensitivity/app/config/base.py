"""What every part of the config schema shares: the strict pydantic base (unknown keys are
errors, models are frozen), where a relative path of a config is looked up, and the value
checks several blocks repeat. No JAX here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A block of the YAML config: an unknown key is an error, a validated block is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def locate(relative: str, base: Path) -> list[Path]:
    """Candidate places of a relative path: next to the config file, then the current folder."""
    p = Path(relative).expanduser()
    if p.is_absolute():
        return [p]
    return list(dict.fromkeys([(base / p).resolve(), (Path.cwd() / p).resolve()]))


def find(relative: str, base: Path) -> Path | None:
    """The first existing file among `locate(relative, base)`, or None."""
    return next((p for p in locate(relative, base) if p.is_file()), None)


def mapping(value) -> dict:
    """`value` if it is a mapping, else {} (raw config blocks of a wrong type are left to the schema)."""
    return value if isinstance(value, dict) else {}


def finite(v):
    """A validator: None or a finite number."""
    if v is not None and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


def one_name(v):
    """A before-validator: a single name given as a string becomes a one-name list."""
    return [v] if isinstance(v, str) else v


def positive(x) -> bool:
    """True for a finite positive int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_sigma(v, allow_none: bool = False):
    """A validator of `sigma:`: one positive number, or a mapping output -> positive number;
    None too when `allow_none` (then sigma is estimated from the residuals)."""
    if v is None and allow_none:
        return None
    if isinstance(v, Mapping):
        bad = [k for k, x in v.items() if not positive(x)]
        if bad:
            raise ValueError(f"sigma.{bad[0]} = {v[bad[0]]!r} must be a positive number")
        return dict(v)
    if not positive(v):
        raise ValueError(f"sigma = {v!r} must be a positive number or a mapping output -> positive number"
                         + (" (or omitted: estimated from the residuals)" if allow_none else ""))
    return float(v)
