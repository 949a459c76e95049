"""Helpers shared by the CLI commands: error reporting and all-or-nothing output files."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from pathlib import Path

import click

from snncompile.errors import SnnCompileError


def reports_errors(func):
    """Turn SnnCompileError (and a missing/unreadable file) into one ``error:`` line, exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SnnCompileError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)

    return wrapper


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    So a failed command never leaves a partial (or stale-looking) output file behind.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise SnnCompileError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_npz(path, what: str = "input"):
    """Read a DATA.npz with ``x`` (and optional ``y``); clear errors for bad files."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise SnnCompileError(f"{what} file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise SnnCompileError(f"{what} file '{path}' has no array 'x' (found: {', '.join(data.files) or 'none'})")
            x = data["x"]
            y = data["y"] if "y" in data.files else None
    except SnnCompileError:
        raise
    except Exception as exc:  # zipfile/ValueError/OSError: not a valid npz
        raise SnnCompileError(f"{what} file '{path}' is not a readable .npz file ({exc})") from None
    if y is not None and len(y) != len(x):
        raise SnnCompileError(f"{what} file '{path}': 'y' has {len(y)} labels for {len(x)} samples")
    return x, y
