"""Can a result folder be written? Checked before any work, in milliseconds.

`check_output_dir(target)` finds the nearest folder that exists on the way to `target`
(the result is written beside the target, then renamed into place, see `io.output_folder`)
and makes a test folder and file there, removing both. A path below an existing file, a
read-only file system, a virtual one (/proc, /sys), missing permissions or a full disk fail
here, naming the path and the reason, instead of after all the computing.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from ...core.errors import OutputPathError

_VIRTUAL = ("/proc", "/sys", "/dev")


def _reason(exc: OSError, folder: Path) -> str:
    text = exc.strerror or str(exc)
    if str(folder.resolve()).startswith(_VIRTUAL) and str(folder.resolve()) != "/":
        text += f"; {folder} is on a virtual file system ({', '.join(_VIRTUAL)} are not for results)"
    elif exc.errno == errno.EROFS:
        text += "; the file system is mounted read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        text += f"; you may not create files in {folder}"
    elif exc.errno == errno.ENOSPC:
        text += "; the disk is full"
    return text


def check_output_dir(target: str | Path) -> None:
    """Raise `OutputPathError` unless the folder `target` can be created (or replaced) and
    written: every existing part of its path must be a folder, and the nearest existing one
    must take a test folder and file (removed again). Writes nothing that stays."""
    target = Path(target).expanduser()
    full = Path(os.path.abspath(target))
    hint = "; choose another with --out DIR or output.dir"
    for part in [full, *full.parents]:
        if part.exists() and not part.is_dir():
            if part == full:
                raise OutputPathError(f"output folder {target}: {part} exists and is not a folder{hint}")
            raise OutputPathError(f"output folder {target}: {part} is a file, so no folder can be "
                                  f"created below it{hint}")
    # results are written beside the target (then renamed): its parent must take new entries
    folder = next((p for p in full.parents if p.exists()), full)
    probe = folder / f".sensitivity-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError as exc:
        raise OutputPathError(f"output folder {target}: cannot create folders in {folder}: "
                              f"{_reason(exc, folder)}{hint}") from None
    try:
        with open(probe / "test", "wb") as fh:
            fh.write(b"sensitivity write test\n")
    except OSError as exc:
        raise OutputPathError(f"output folder {target}: cannot write files in {folder}: "
                              f"{_reason(exc, folder)}{hint}") from None
    finally:
        for path in (probe / "test", probe):
            try:
                path.unlink() if path.is_file() else path.rmdir()
            except OSError:
                pass
