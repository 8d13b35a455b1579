"""Running pytest in a fresh process without paying for its imports each time.

A stage's suite runs in its own process, so that nothing one run imports or changes is seen by the next, and a hung
check can be killed. Starting ``python -m pytest`` costs about 2 s of CPU before the first check runs — pytest, its
plugins, SciPy, pydantic — and the runner starts one every poll. So a process that runs several suites (it says so:
:func:`prepare`) starts a fork server (:mod:`multiprocessing`'s ``forkserver``: a single-threaded process started
afresh, never forked from the caller and its threads) that imports all that once; every run is then a fork of it, as
fresh as a new process to the suite, in about half a second. The caller's working directory, environment and
``sys.path[0]`` are the child's, as with ``python -m pytest``. A process that runs one suite starts no server.

Set ``CANARY_CHECKS_FORK=0`` to run ``python -m pytest`` in a new process each time instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig

__all__ = ["Stopped", "Stopper", "prepare", "run_pytest"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _child(args: list[str], cwd: str, env: dict[str, str], output: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, cwd)  # as `python -m pytest` puts the working directory first
    sys.argv = ["pytest", *args]
    fd = os.open(output, os.O_WRONLY | os.O_TRUNC)
    os.unlink(output)  # the caller reads it through its own handle: nothing is left behind, even if it is killed
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import pytest

    code = pytest.main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(int(code))


def _forks() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    return context


def prepare(*configs: CanaryConfig) -> None:
    """Say that this process runs several suites (a rollout, ``serve``, a stage that holds and looks again): the
    runs from now on fork from the warm server, which starts now and imports while the caller does other work (a
    runner validating the cluster, a hold's wait). A process that runs one suite never calls it: for one run a new
    interpreter is cheaper than a server. ``configs``: those of the suites it runs (none: not known, any); the server
    leaves out what none of them needs — the Kubernetes client where none reads the API (``kubernetes.active()``), a
    second of imports, and SciPy's distributions where none corrects its comparisons with ``fdr``, another. Does
    nothing when done already or forks are turned off."""
    global _prepared
    if _forking() and not _prepared:
        _prepared = True
        kubernetes = not configs or any(c.kubernetes.active() for c in configs)
        fdr = not configs or any(c.statistics.correction == "fdr" for c in configs)
        # scipy.stats first: warm freezes what is imported before it
        preload = [*(["scipy.stats"] if fdr else []), "canary_checks.forks.warm",
                   *(["canary_checks.forks.warm_kube"] if kubernetes else [])]  # fmt: skip
        with contextlib.suppress(OSError):  # run_pytest says so, and runs a new interpreter
            _forks().set_forkserver_preload(preload)
            multiprocessing.forkserver.ensure_running()


_prepared = False
_unforkable = False


def _forking() -> bool:
    return os.environ.get("CANARY_CHECKS_FORK", "1") != "0"


def run_pytest(args: Sequence[str], timeout: float, *, stopper: Stopper | None = None) -> tuple[int, str]:
    """``python -m pytest ARGS`` in a new process: its exit code and its output (stdout and stderr, as one).
    Raises :class:`subprocess.TimeoutExpired` (the process killed) when it runs longer than ``timeout`` seconds,
    :class:`Stopped` when ``stopper`` stopped it (or had, before it started).
    After :func:`prepare`, a fork of the warm server; before it, or where the server cannot start (no writable
    temporary directory for its socket), a new interpreter."""
    global _unforkable
    stopper = stopper or _UNSTOPPED
    if _prepared and _forking() and not _unforkable:
        try:
            return _forked(args, timeout, stopper)
        except OSError as e:
            _unforkable = True
            log.warning("running pytest in a new interpreter each time: the fork server cannot start (%s)", e)
    command = [sys.executable, "-m", "pytest", *args]
    pipe = subprocess.PIPE

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(command, stdout=pipe, stderr=pipe, stdin=subprocess.DEVNULL, text=True)

    with stopper.running(start, lambda p: p.kill(), args) as process, process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    return process.returncode, out + err


class Stopped(Exception):
    """The suite was stopped by its :class:`Stopper`: the process that runs it is shutting down."""


class Stopper:
    """Stops the suites run under it (``run_pytest(..., stopper=...)``): those running, and any started after. A server
    shutting down abandons its calls, and without this its exit waits for each of their suites to end
    (``multiprocessing`` joins its children; a suite may run for its whole timeout)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kills: dict[int, Callable[[], None]] = {}
        self.stopped = False

    def stop(self) -> int:
        """Kill the suites running under this stopper and refuse new ones; their :func:`run_pytest` calls raise
        :class:`Stopped`. How many were running."""
        with self._lock:
            self.stopped = True
            kills = list(self._kills.values())
        for kill in kills:
            kill()
        return len(kills)

    @contextlib.contextmanager
    def running(self, start: Callable[[], T], kill: Callable[[T], None], args: Sequence[str]) -> Iterator[T]:
        """``start()`` the suite's process unless stopped already (then :class:`Stopped` at once), and let
        :meth:`stop` ``kill`` it until the block ends, whose end then raises :class:`Stopped`."""
        killed = threading.Event()
        with self._lock:  # a stop comes before the start (refused) or after it (killed), never between
            if self.stopped:
                raise Stopped(f"pytest {' '.join(args)} was not started: this process is shutting down")
            process = start()

            def stop() -> None:
                killed.set()
                with contextlib.suppress(OSError, ValueError):  # ended meanwhile
                    kill(process)

            self._kills[id(stop)] = stop
        try:
            yield process
        finally:
            with self._lock:
                self._kills.pop(id(stop), None)
        if killed.is_set():
            raise Stopped(f"pytest {' '.join(args)} was stopped: this process is shutting down")


_UNSTOPPED = Stopper()
"""The stopper of the suites run without one (nothing stops it)."""


def _forked(args: Sequence[str], timeout: float, stopper: Stopper) -> tuple[int, str]:
    # the child removes the file's name once it has opened it (nothing is left if this process is killed); this
    # process reads the output through its own handle
    with tempfile.NamedTemporaryFile(prefix="canary-suite-", suffix=".out", delete=False) as output:
        try:
            child = _forks().Process(target=_child, args=(list(args), os.getcwd(), dict(os.environ), output.name))

            def start() -> multiprocessing.process.BaseProcess:
                child.start()
                return child

            with stopper.running(start, lambda p: p.kill(), args) as process:
                process.join(timeout)
            if process.exitcode is None:
                process.kill()
                process.join()
                raise subprocess.TimeoutExpired(["pytest", *args], timeout)
            code = process.exitcode
            process.close()
            return code, output.read().decode(errors="replace")
        finally:
            with contextlib.suppress(FileNotFoundError):  # the child never opened it
                os.unlink(output.name)
