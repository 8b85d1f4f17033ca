"""The one cache folder of the toolkit: compiled programs, checked models, calibration."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's cache folder for this package: $XDG_CACHE_HOME/sensitivity, else
    ~/.cache/sensitivity."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sensitivity"
