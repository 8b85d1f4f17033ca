"""The per-machine calibration file written by `sensitivity calibrate` and read by `plan`.

Its place is $SENSITIVITY_CALIBRATION, else <user cache>/sensitivity/calibration.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .ad.cost import Calibration
from .errors import SensitivityError


def cache_dir() -> Path:
    """The user's cache folder for this package (compiled functions, calibration)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sensitivity"


def path() -> Path:
    return Path(os.environ.get("SENSITIVITY_CALIBRATION") or cache_dir() / "calibration.json")


def save(calibration: Calibration, where: Path | str | None = None) -> Path:
    """Write the constants as JSON, atomically; returns the path."""
    target = Path(where) if where else path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(calibration.to_dict(), indent=2))
    os.replace(tmp, target)
    return target


def load(where: Path | str | None = None) -> Calibration | None:
    """The stored constants, or None if there is no file. A corrupt file is an error."""
    source = Path(where) if where else path()
    if not source.exists():
        return None
    try:
        data = json.loads(source.read_text())
        cal = Calibration.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise SensitivityError(f"calibration file {source} is invalid ({exc}); "
                               "rerun `sensitivity calibrate` or delete it") from exc
    return Calibration(cal.tangent, cal.record, cal.cotangent, None, f"the machine file {source}")
