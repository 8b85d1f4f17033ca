"""The per-machine calibration file written by `sensitivity calibrate` and read by `plan`.

Its place is $SENSITIVITY_CALIBRATION, else <user cache>/sensitivity/calibration.json. The
file holds the cost model's constants as JSON; `sensitivity.ad.cost` turns them into a
`Calibration` and checks them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .folder import cache_dir


def path() -> Path:
    return Path(os.environ.get("SENSITIVITY_CALIBRATION") or cache_dir() / "calibration.json")


def save(data: dict, where: Path | str | None = None) -> Path:
    """Write `data` as JSON, atomically; returns the path."""
    target = Path(where) if where else path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, target)
    return target


def load(where: Path | str | None = None) -> tuple[dict, Path] | None:
    """(the stored mapping, the file it came from), or None if there is no file.
    Raises ValueError when the file is not JSON."""
    source = Path(where) if where else path()
    if not source.exists():
        return None
    return json.loads(source.read_text()), source
