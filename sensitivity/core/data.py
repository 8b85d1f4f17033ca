"""Observations read from a table: the data of a fit, checked before any solve.

`read_data` turns a CSV file, a DataFrame or a mapping of arrays (long: time, output, value
[, sigma]; or wide: time plus one column per output) into one long table. It imports no
JAX, so `sensitivity validate` can check a config's data file without compiling anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import InputError, did_you_mean, list_names


def read_data(data, outputs: Sequence[str]):
    """The observations as a long pandas DataFrame with columns time, output, value and,
    if given, sigma; rows with a missing value dropped, sorted by time (stable).

    data: a DataFrame or a mapping of equal-length arrays, long (time, output, value[,
    sigma]) or wide (time plus one column per output), or a path to such a CSV file.
    outputs: the names a data column or output entry may take.
    """
    import pandas as pd

    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"data = '{data}': file not found")
        try:
            data = pd.read_csv(path, skipinitialspace=True)
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
            raise InputError(f"data = '{path}': cannot read it as CSV: {exc}") from None
    elif isinstance(data, Mapping):
        try:
            data = pd.DataFrame({k: np.asarray(v) if not np.isscalar(v) else [v] for k, v in data.items()})
        except ValueError as exc:
            raise InputError(f"data: the columns must have equal lengths ({exc})") from None
    if not isinstance(data, pd.DataFrame):
        raise InputError(f"data must be a pandas DataFrame, a mapping of arrays or a CSV path, got "
                         f"{type(data).__name__}")
    df = data.rename(columns=lambda c: str(c).strip())
    if "time" not in df.columns:
        raise InputError(f"data has no 'time' column{did_you_mean('time', df.columns)}; columns: "
                         f"{list_names(df.columns)}")
    if {"output", "value"} <= set(df.columns):
        extra = set(df.columns) - {"time", "output", "value", "sigma"}
        if extra:
            raise InputError(f"data: unknown columns {sorted(extra)}; a long table has time, output, value "
                             "and optionally sigma")
        long = df[[c for c in ("time", "output", "value", "sigma") if c in df.columns]].copy()
        long["output"] = long["output"].astype(str).str.strip()
    else:
        cols = [c for c in df.columns if c not in ("time", "sigma")]
        if not cols:
            raise InputError("data has no output columns: give time plus one column per output, or the "
                             "columns time, output, value")
        long = df.melt(id_vars="time", value_vars=cols, var_name="output", value_name="value")
    for c in ("time", "value") + (("sigma",) if "sigma" in long.columns else ()):
        try:
            long[c] = pd.to_numeric(long[c])
        except (ValueError, TypeError):
            raise InputError(f"data: column '{c}' holds something that is not a number") from None
    bad = sorted(set(long["output"]) - set(outputs))
    if bad:
        raise InputError(f"data names output '{bad[0]}', which the model does not have"
                         f"{did_you_mean(bad[0], outputs)}; outputs: {list_names(outputs)}")
    long = long[np.isfinite(long["value"].to_numpy(dtype=float))]
    if long.empty:
        raise InputError("data holds no observed value")
    if not np.all(np.isfinite(long["time"].to_numpy(dtype=float))):
        raise InputError("data has a row without a time (NaN or inf)")
    if "sigma" in long.columns:
        s = long["sigma"].to_numpy(dtype=float)
        if not np.all(np.isfinite(s) & (s > 0)):
            raise InputError("data: every sigma must be a positive number")
    return long.sort_values("time", kind="stable").reset_index(drop=True)
