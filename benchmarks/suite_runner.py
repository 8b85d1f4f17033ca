"""What the conformance-suite benchmarks (sbml_suite.py, petab_suite.py) share: the status
of a case that raised, and the pool that runs every case in a fresh process with a timeout.

A case ends as one of STATUSES:
    pass      every value within tolerance;
    refused   our `ModelError` / `InputError` (the message is the reason), or what the suite
              itself refuses by name;
    crash     any other exception, a dead process or the timeout;
    wrong     it ran, but some value is out of tolerance.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

STATUSES = ("pass", "refused", "crash", "wrong")


def failure(exc: BaseException) -> tuple[str, str]:
    """(status, reason) of a case that raised: our `ModelError` / `InputError` is refused
    (the message's first line), any other exception a crash (its type, message and the file
    and line it was raised at)."""
    from sensitivity.core.errors import InputError, ModelError
    if isinstance(exc, (ModelError, InputError)):
        return "refused", str(exc).splitlines()[0][:300]
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    text = str(exc).splitlines()[0][:240] if str(exc) else ""
    return "crash", f"{type(exc).__name__}: {text} [{where}]"


def _child(job: Callable, args: tuple, conn) -> None:
    warnings.simplefilter("ignore")  # tolerance advice: the suites' settings are fixed
    conn.send(job(*args))
    conn.close()


def run_pool(jobs: list[tuple], job: Callable, failed: Callable, workers: int = 2, timeout: float = 300.0,
             preload: tuple = (), progress=print, done=lambda args, row: None) -> dict:
    """Run job(*args) for every tuple `args` of `jobs`, each in its own process (forked from
    a server that has imported the modules `preload`), at most `workers` at a time.

    job returns a row (a dict with "status", "reason", "seconds"); a process that dies or
    still runs after `timeout` seconds ends as the row failed(args, reason) (a crash).
    done(args, row) is called as each ends. Returns {args: row}, in the order they ended."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    todo = list(jobs)
    running: dict = {}
    results: dict = {}
    while todo or running:
        while todo and len(running) < workers:
            args = todo.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(job, args, send), daemon=True)
            proc.start()
            send.close()
            running[args] = (proc, recv, time.perf_counter())
        time.sleep(0.05)
        for args, (proc, recv, started) in list(running.items()):
            res = None
            if recv.poll():
                try:
                    res = recv.recv()
                except EOFError:
                    res = failed(args, "the process died")
            elif not proc.is_alive():
                res = failed(args, f"the process died (exit code {proc.exitcode})")
            elif time.perf_counter() - started > timeout:
                proc.kill()
                res = failed(args, f"timeout after {timeout:g} s")
            if res is not None:
                res.setdefault("seconds", round(time.perf_counter() - started, 2))
                proc.join(5)
                recv.close()
                del running[args]
                results[args] = res
                done(args, res)
                progress(f"{' '.join(args)} {res['status']:8s} {res['seconds']:7.1f}s {res['reason'][:110]}")
    return results
