"""What every command of the command line shares: exit codes, status lines on stderr,
Ctrl-C handling, reading a config. No JAX here."""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from importlib import metadata

from .config import run as config

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
VERSIONED = ("sensitivity", "jax", "jaxlib", "diffrax", "equinox", "numpy", "scipy", "xarray",
             "h5netcdf", "matplotlib", "pydantic")


# --------------------------------------------------------------------------- progress
class Progress:
    """Status lines on stderr: one per stage, with its time. On a terminal the line is
    rewritten in place; quiet=True prints nothing."""

    def __init__(self, quiet: bool = False, stream=None, check=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.check = check or (lambda: None)  # raises KeyboardInterrupt when asked to stop

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"sensitivity: {text}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, label: str):
        self.check()
        if self.quiet:
            yield
            self.check()
            return
        start = time.perf_counter()
        print(f"sensitivity: {label} ...", end="" if self.tty else "\n", file=self.stream, flush=True)
        ok = False
        try:
            yield
            ok = True
        finally:
            took = time.perf_counter() - start
            status = f"done in {took:.2f} s" if ok else f"stopped after {took:.2f} s"
            if self.tty:
                print(f"\rsensitivity: {label} ... {status}", file=self.stream, flush=True)
            else:
                print(f"sensitivity: {label}: {status}", file=self.stream, flush=True)
        self.check()


class Interrupt:
    """Ctrl-C during a run: the first one asks to stop at the next step boundary (a
    KeyboardInterrupt raised inside JAX's callbacks can be swallowed), the second stops
    at once. `check()` raises KeyboardInterrupt once a stop was asked for."""

    def __init__(self):
        self.requested = False

    def handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nsensitivity: interrupted: stopping after the current step (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        try:
            previous = signal.signal(signal.SIGINT, self.handler)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            yield self
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------- a config
def load_config(args, out=None):
    return config.load(args.config, overrides=args.overrides, points=args.points, out=out)


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def describe(spec) -> str:
    """One line per method of the analysis block: what it computes and how many solves."""
    cfg = spec.config.analysis
    lines = []
    for name, m in cfg.methods().items():
        d = len(cfg.ranges_of(m))
        if name == "sobol":
            lines.append(f"analysis.sobol: {m.n} x ({d} + 2) = {m.n * (d + 2)} solves")
        elif name == "morris":
            lines.append(f"analysis.morris: {m.trajectories} x ({d} + 1) = {m.trajectories * (d + 1)} solves")
        else:
            lines.append(f"analysis.dgsm: {m.n} gradients of the objective over {d} inputs")
    ex = getattr(spec.config, "executor", None)
    where = ex.target() if ex is not None and ex.target() else "in process"
    return "\n".join(lines + [f"ensembles run {where}"])
