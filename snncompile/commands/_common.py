"""Helpers shared by the CLI commands: error reporting and all-or-nothing output files."""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path

import click

from snncompile.errors import SnnCompileError


#: Signals that stop a command cleanly: every ``finally`` runs (Lava workers stopped,
#: temporary files removed), then exit status 128 + the signal number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """A stop signal turned into an exception in the main process. A KeyboardInterrupt, so
    code that already cleans up on Ctrl-C (the Lava runner) does the same for SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """Raise :class:`Stopped` in this process on SIGTERM/SIGHUP/SIGINT. Forked children
    (Lava workers, its shared-memory manager) inherit the handler and ignore the signal:
    a signal to the whole group must not kill the manager before it frees the shared
    memory; the parent stops them all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    stopping: list[int] = []

    def handler(signum, frame):
        if os.getpid() != pid:
            return
        if stopping:   # already stopping: a second signal must not interrupt the clean-up
            return
        stopping.append(signum)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        # Once stopping, stop signals stay ignored until the process exits with 128 + N: with the
        # old (default) handlers back, a late second signal (a loaded machine, Ctrl-C twice)
        # would kill the process before it prints its one error line.
        if not stopping:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _set_environment(variable: str):
    def callback(ctx, param, value):
        if value is not None:
            os.environ[variable] = str(value)
        return value
    return callback


def lava_budget_options(func):
    """``--lava-max-units`` / ``--lava-max-synapses``: the budget of a graph's Lava mapping
    (``targets/lava/size.py``), handed on through the environment so that every Lava run of the
    command sees it (the function's arguments stay as they are)."""
    func = click.option("--lava-max-synapses", type=click.IntRange(min=1), default=None, expose_value=False,
                        callback=_set_environment("SNNCOMPILE_LAVA_MAX_SYNAPSES"),
                        help="Refuse a Lava mapping with more synapses [default: 2e9, or "
                             "SNNCOMPILE_LAVA_MAX_SYNAPSES].")(func)
    func = click.option("--lava-max-units", type=click.IntRange(min=1), default=None, expose_value=False,
                        callback=_set_environment("SNNCOMPILE_LAVA_MAX_UNITS"),
                        help="Refuse a Lava mapping with more neurons and product units (a spatial "
                             "attention layout grows as N*N*d per head) [default: 1e7, or "
                             "SNNCOMPILE_LAVA_MAX_UNITS].")(func)
    return func


def reports_errors(func):
    """Turn SnnCompileError into one ``error:`` line (exit 1), a stop signal into one
    ``error:`` line (exit 128 + signal); anything unexpected into one ``error: internal
    error`` line (``SNNCOMPILE_DEBUG=1`` shows the traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with stop_on_signals():
                return func(*args, **kwargs)
        except SnnCompileError as exc:
            _error(str(exc))
            sys.exit(1)
        except Stopped as exc:
            _error(f"stopped by {signal.Signals(exc.signum).name}; nothing was written")
            sys.exit(128 + exc.signum)
        except KeyboardInterrupt:
            _error("interrupted (SIGINT); nothing was written")
            sys.exit(128 + signal.SIGINT)
        except (SystemExit, click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:
            if os.environ.get("SNNCOMPILE_DEBUG"):
                raise
            _error(f"internal error: {type(exc).__name__}: {exc} (a bug in snncompile: please report it; "
                   f"SNNCOMPILE_DEBUG=1 shows the traceback)")
            sys.exit(1)

    return wrapper


def _error(message: str) -> None:
    """One line, whatever the message holds (a file name with a newline cannot add lines)."""
    try:
        click.echo("error: " + " ".join(message.split()), err=True)
    except OSError:  # stderr gone (SIGHUP of a closed terminal)
        pass


#: Longest part of the output's name kept in its temporary name (a legal 255-byte name
#: plus the temporary prefix and suffix would be too long for the file system).
_TEMP_NAME_CHARS = 100


def output_target(path) -> Path:
    """The regular file ``-o PATH`` will replace, or a clear error.

    Only regular files are written: a device node, FIFO, socket or folder is refused
    (as root, ``-o /dev/null`` would otherwise replace /dev/null). A symlink is written
    *through*: the file it points to is replaced and the link kept (a loop is refused).
    """
    path = Path(path)
    if path.is_symlink():
        resolved = Path(os.path.realpath(path))
        if resolved.is_symlink():   # realpath stops inside a loop
            raise SnnCompileError(f"cannot write '{path}': it is a symlink loop")
        path = resolved
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SnnCompileError(f"cannot write '{path}': {_reason(exc)}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise SnnCompileError(f"cannot write '{path}': it is {_file_kind(st.st_mode)}, not a regular file")
    parent = path.parent
    if not parent.exists():
        raise SnnCompileError(f"cannot write '{path}': folder '{parent}' does not exist")
    if not parent.is_dir():
        raise SnnCompileError(f"cannot write '{path}': '{parent}' is a file, not a folder")
    return path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    So a failed (or interrupted) command never leaves a partial or stale-looking output
    file. The new file's mode follows the umask (an overwritten file keeps its mode); it
    is a new inode, so other hard links to an overwritten file keep the old content.
    """
    target = output_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:_TEMP_NAME_CHARS]}.", suffix=target.suffix[:16],
                                   dir=target.parent)
    except OSError as exc:
        raise SnnCompileError(f"cannot write '{path}': {_reason(exc)}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            os.chmod(tmp, _mode_for(target))
            os.replace(tmp, target)
        except OSError as exc:
            raise SnnCompileError(f"cannot write '{path}': {_reason(exc)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower() if isinstance(exc, OSError) else str(exc)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def check_input_file(path, what: str) -> Path:
    """``path`` is a readable regular file, or an error that says what it is instead."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SnnCompileError(f"{what} file '{path}' is a symlink loop") from None
        raise SnnCompileError(f"{what} file '{path}' is a symlink to '{os.readlink(path)}', which does not exist")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SnnCompileError(f"{what} file '{path}' does not exist") from None
    except OSError as exc:
        raise SnnCompileError(f"{what} file '{path}' cannot be read: {_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SnnCompileError(f"{what} file '{path}' is {_file_kind(st.st_mode)}, not a regular file")
    return path


def load_npz(path, what: str = "input"):
    """Read a DATA.npz with ``x`` (and optional ``y``); clear errors for bad files.

    ``x`` must hold at least one sample (an empty or 0-d ``x`` is refused by name here,
    so no command computes an accuracy or a calibration of nothing)."""
    import numpy as np

    path = check_input_file(path, what)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise SnnCompileError(f"{what} file '{path}' is a single .npy array, not an .npz archive: "
                                  f"save it with numpy.savez(path, x=x) (and y=labels)")
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise SnnCompileError(f"{what} file '{path}' has no array 'x' (found: {', '.join(data.files) or 'none'})")
            x = data["x"]
            y = data["y"] if "y" in data.files else None
    except SnnCompileError:
        raise
    except Exception as exc:  # zipfile/ValueError/OSError: not a valid npz
        raise SnnCompileError(f"{what} file '{path}' is not a readable .npz file ({exc})") from None
    if x.ndim == 0:
        raise SnnCompileError(f"{what} file '{path}': 'x' is a 0-d array (a single number); expected "
                              f"samples (N, T, *input_shape) or (N, *input_shape)")
    if len(x) == 0:
        raise SnnCompileError(f"{what} file '{path}': 'x' holds 0 samples")
    if y is not None and (y.ndim == 0 or len(y) != len(x)):
        raise SnnCompileError(f"{what} file '{path}': 'y' has {y.size if y.ndim == 0 else len(y)} labels for "
                              f"{len(x)} samples")
    return x, y


def check_labels(y, n: int, data_file, n_classes=None):
    """``y`` as (N,) int64 class indices in ``[0, n_classes)``, or a clear error naming ``data_file``."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(y == np.round(y))):
        raise SnnCompileError(f"input file '{data_file}': labels 'y' must be ({n},) integer class indices, "
                              f"got shape {y.shape} dtype {y.dtype}")
    if y.size and n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        bad = y.min() if y.min() < 0 else y.max()
        raise SnnCompileError(f"input file '{data_file}': label {bad:.0f} is not a class of the graph's "
                              f"{n_classes} outputs (labels must be 0 to {n_classes - 1})")
    return y.astype(np.int64)
