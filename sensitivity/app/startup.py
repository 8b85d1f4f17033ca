"""The process around the command line: how `sensitivity ...` starts and ends.

Ending: after a command has returned (its files written and closed), the interpreter's
own shutdown (garbage-collecting JAX, XLA and every imported module) costs about a second
of CPU on a small run. The `sensitivity` command and `python -m sensitivity` skip it:
they flush stdout and stderr and leave with `os._exit`. `cli.main` itself (called by
tests and other Python code) returns normally.
"""

from __future__ import annotations

import os
import sys

from .cli import main


def console_main() -> None:
    """Entry point of the `sensitivity` console script: `cli.main()`, then a fast exit with
    its status. An exception escaping `main` (only with --traceback) ends the usual way."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    if os.environ.get("SENSITIVITY_SLOW_EXIT"):  # e.g. to profile the shutdown
        sys.exit(code)
    os._exit(code if isinstance(code, int) else 1)
