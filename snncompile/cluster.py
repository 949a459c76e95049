"""Chunks of a data set computed on a Ray cluster (``--ray ADDRESS`` of run, energy, verify).

Why a module of its own: the commands cut a data set into sample ranges and compute each
range independently (``snncompile.streaming``: a picklable *job* ``job(source, lo, hi)``
and a lazy, picklable :class:`~snncompile.streaming.InputSource`). This module only
decides *where* a range is computed. The job and the source travel to the cluster once
(``ray.put``); each task gets a range, and the worker reads those samples itself from the
data path (so the data must be on storage every node sees, at the same path). Results come
back in sample order, so the merged output is the single-process output byte for byte: the
ranges are the same ones the single-process chunked path uses.

A task whose worker dies (killed, out of memory, node lost) is retried by Ray up to
``retries`` times; if it still fails, :func:`map_chunks` raises one SnnCompileError naming
the chunk, after cancelling the rest, and the caller writes no output. An error of the job
itself (a bad sample range) is not retried: it is reported as the job raised it.

Threads: each task asks for ``threads`` CPUs (default 1) and runs torch on that many
threads, so a node runs one task per CPU instead of one oversubscribed task per CPU.
The driver always disconnects (``ray.shutdown``), also on errors and Ctrl-C.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import click

from snncompile.errors import SnnCompileError

INSTALL_HINT = "pip install 'snncompile[ray]'"

#: Ray retries a task whose worker process died this many times before giving up on it.
DEFAULT_RETRIES = 2

#: Tasks in flight per CPU of the cluster: enough to keep every worker busy while the
#: driver merges, few enough that finished results do not pile up in the driver's memory.
IN_FLIGHT_PER_CPU = 2


@dataclass(frozen=True)
class Chunk:
    """Samples ``lo:hi`` of the data set, the ``index``-th of ``total`` chunks."""

    index: int
    total: int
    lo: int
    hi: int

    def describe(self, data_path) -> str:
        return f"chunk {self.index + 1}/{self.total} (samples {self.lo}..{self.hi - 1}) of '{data_path}'"


def ray_option(func):
    """The ``--ray ADDRESS`` option of the commands that stream a data set."""
    return click.option(
        "--ray", "ray_address", metavar="ADDRESS", default=None,
        help="Shard the samples over the Ray cluster at ADDRESS (HOST:PORT of the head, auto, or "
             "ray://HOST:10001); every node reads DATA itself, so DATA must be on shared storage. "
             f"Needs `{INSTALL_HINT}`.")(func)


def compute_chunks(job: Callable, source, ranges: Sequence[tuple[int, int]],
                   ray_address: Optional[str] = None) -> Iterator:
    """``job(source, lo, hi)`` for every range, in range order: in this process, or sharded
    over the Ray cluster at ``ray_address`` (same results, same order)."""
    if ray_address is None:
        with ReadAhead(source, ranges, getattr(job, "reads_in_place", False)) as ahead:
            if getattr(job, "pipelined", False):
                yield from _two_in_flight(job, ahead, ranges)
            else:
                for lo, hi in ranges:
                    yield job(ahead, lo, hi)
        return
    yield from map_chunks(ray_address, job, source, ranges)


#: Chunks a ``pipelined`` job computes at once in this process.
IN_FLIGHT_HERE = 2


def _two_in_flight(job, source, ranges: Sequence[tuple[int, int]]) -> Iterator:
    """``job(source, lo, hi)`` for every range, ``IN_FLIGHT_HERE`` ranges at once in threads,
    yielded in range order. Why: a job's serial work in Python (its output arrays, then the
    caller's writing them) left the engine's threads idle between chunks -- ~15 % of a
    spike-train run through the CLI (``RunJob.pipelined``); with the next chunk already
    running, that work overlaps the engine. The job must be thread-safe and release the GIL
    while it computes. On an error or a stop signal the chunks not started are dropped and
    the running ones finish before this returns (no thread outlives the command)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(IN_FLIGHT_HERE, thread_name_prefix="snncompile-chunk")
    waiting = deque(ranges)
    running: deque = deque()
    try:
        while waiting or running:
            while waiting and len(running) < IN_FLIGHT_HERE:
                running.append(pool.submit(job, source, *waiting.popleft()))
            result = running.popleft().result()
            if waiting:                # the next chunk starts before the caller takes this one
                running.append(pool.submit(job, source, *waiting.popleft()))
            yield result
    finally:
        for future in running:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class ReadAhead:
    """``source`` for a job run range after range in this process: while the job computes
    range k, a thread already reads range k+1, so reading the data (``preadv``, or mapping
    it for a job that ``reads_in_place``; both release the GIL) overlaps the engine instead
    of adding to it. One range is read ahead: with one job at a time at most two ranges of
    input are in memory at once (with ``IN_FLIGHT_HERE`` jobs, one more than the jobs).
    A read of any other range, and every other attribute, go to ``source`` itself; a read's
    error is raised where the job reads that range. Safe for jobs in several threads."""

    def __init__(self, source, ranges: Sequence[tuple[int, int]], mapped: bool = False):
        import threading
        from concurrent.futures import ThreadPoolExecutor
        self._source, self._ranges, self._mapped = source, [tuple(r) for r in ranges], mapped
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="snncompile-read")
        self._lock = threading.Lock()
        self._next = 0
        self._pending = self._submit(0)

    def _submit(self, k: int):
        if k >= len(self._ranges):
            return None
        return self._ranges[k], self._pool.submit(self._read, *self._ranges[k], self._mapped)

    def _read(self, lo: int, hi: int, mapped: bool):
        return self._source.read(lo, hi, mapped=True) if mapped else self._source.read(lo, hi)

    def read(self, lo: int, hi: int, mapped: bool = False):
        with self._lock:
            hit = self._pending is not None and self._pending[0] == (lo, hi) and mapped == self._mapped
            if hit:
                future = self._pending[1]
                self._next = self._ranges.index((lo, hi), self._next) + 1
                self._pending = self._submit(self._next)
        return future.result() if hit else self._read(lo, hi, mapped)

    def __getattr__(self, name):
        return getattr(self._source, name)

    def __len__(self) -> int:
        return len(self._source)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def import_ray():
    """The ``ray`` module, or a SnnCompileError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise SnnCompileError(f"--ray needs Ray, which is not installed here; install it with "
                              f"`{INSTALL_HINT}`") from None
    return ray


@contextlib.contextmanager
def connected(address: str):
    """Connect this process to the Ray cluster at ``address`` as a driver; always disconnect.

    ``address`` is what ``ray.init`` takes: ``HOST:PORT`` of the head, ``auto``, or a Ray
    Client address ``ray://HOST:10001``. Never starts a cluster of its own."""
    ray = import_ray()
    if not address:
        raise SnnCompileError("--ray needs the address of a running Ray cluster (HOST:PORT, auto, "
                              "or ray://HOST:10001)")
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=True)
    except Exception as exc:  # ConnectionError, ValueError, grpc errors: all mean "no cluster there"
        raise SnnCompileError(f"cannot connect to the Ray cluster at '{address}': "
                              f"{_first_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when nothing listens at HOST:PORT (``ray.init`` would retry for minutes)."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise SnnCompileError(f"--ray '{address}': expected HOST:PORT, auto, or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SnnCompileError(f"cannot connect to the Ray cluster at '{address}': nothing answers at "
                              f"{host}:{port} ({exc.strerror or exc}); is `ray start --head` running there?") from None


def _run_task(job, source, lo: int, hi: int, threads: int):
    """What a Ray worker runs: ``job(source, lo, hi)`` on ``threads`` torch threads."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return job(source, lo, hi)


def map_chunks(address: str, job: Callable, source, ranges: Sequence[tuple[int, int]], *,
               retries: int = DEFAULT_RETRIES, threads: int = 1) -> Iterator:
    """``job(source, lo, hi)`` for every range, on the cluster at ``address``; yields the
    results in range order (so the caller's merge is the single-process one).

    ``job`` and ``source`` must be picklable; they are sent once. Raises SnnCompileError
    naming the chunk when a task fails ``retries + 1`` times or the job raises."""
    from snncompile.streaming import open_inputs

    shown = source.path   # errors name DATA as the user gave it
    # Workers do not share this process's working directory: they open DATA by absolute path.
    source = open_inputs(Path(source.path).absolute()) if not Path(source.path).is_absolute() else source
    with connected(address) as ray:
        task = ray.remote(num_cpus=threads, max_retries=retries, retry_exceptions=False)(_run_task)
        job_ref, source_ref = ray.put(job), ray.put(source)
        chunks = [Chunk(i, len(ranges), lo, hi) for i, (lo, hi) in enumerate(ranges)]
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = max(2, IN_FLIGHT_PER_CPU * max(1, cpus // threads))
        click.echo(f"ray: {len(chunks)} chunk(s) over {cpus} CPU(s) of the cluster at '{address}'", err=True)
        pending: dict[int, object] = {}   # chunk index -> ObjectRef, submitted, not yet yielded
        submitted = 0
        try:
            for chunk in chunks:
                while submitted < len(chunks) and len(pending) < window:
                    c = chunks[submitted]
                    pending[c.index] = task.remote(job_ref, source_ref, c.lo, c.hi, threads)
                    submitted += 1
                ref = pending.pop(chunk.index)
                yield _get(ray, ref, chunk.describe(shown), retries)
        finally:
            for ref in pending.values():
                ray.cancel(ref, force=True)


def _get(ray, ref, what: str, retries: int):
    """The result of one task, or a SnnCompileError naming its chunk."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:     # the job itself raised
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
        if isinstance(cause, SnnCompileError):
            raise SnnCompileError(f"{what}: {cause}") from None
        if isinstance(cause, FileNotFoundError):
            raise SnnCompileError(f"{what}: a worker cannot read '{cause.filename}' ({cause.strerror}): "
                                  f"DATA must be on storage every node sees, at the same path") from None
        raise SnnCompileError(f"{what} failed on the Ray cluster: "
                              f"{type(cause).__name__}: {_first_line(cause)}") from None
    except ray.exceptions.RayError as exc:         # the worker (or its node) died, every try
        raise SnnCompileError(f"{what} failed on the Ray cluster after "
                              f"{retries + 1} tries: {type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def local_head(num_cpus: int, object_store_bytes: int = 100_000_000):
    """A Ray head on 127.0.0.1 with ``num_cpus`` CPUs, for tests and benchmarks: yields its
    address; afterwards stops exactly this cluster (its process group and the raylet's
    workers; ``ray stop`` would stop every Ray cluster of the machine)."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile

    import psutil

    import_ray()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's socket paths have a length limit
    port = _free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}",
         "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--include-dashboard=false",
         f"--object-store-memory={object_store_bytes}", f"--temp-dir={temp}",
         f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
         "--disable-usage-stats"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    group = head.pid   # the new session's process group: every daemon of this cluster
    try:
        out, _ = head.communicate(timeout=180)
        if head.returncode != 0:
            raise SnnCompileError(f"`ray start --head` failed: {out.strip().splitlines()[-1:]}")
        yield f"127.0.0.1:{port}"
    finally:
        members = [p for p in psutil.process_iter() if _pgid(p.pid) == group]
        workers = [c for p in members if "raylet" in _name(p) for c in _children(p)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in members + workers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
            _gone, alive = psutil.wait_procs(members + workers, timeout=3)
            if not alive:
                break
        shutil.rmtree(temp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pgid(pid: int):
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _name(p) -> str:
    try:
        return p.name()
    except Exception:   # gone, or a zombie
        return ""


def _children(p) -> list:
    try:
        return p.children(recursive=True)
    except Exception:
        return []

