"""Data sets larger than memory: lazy chunked input, chunk jobs, and an ordered chunked OUT.npz.

Why a module of its own: the commands (``run``, ``energy``, ``verify``, ``quantize --calib``)
and the Ray sharding (``snncompile.cluster``) walk a data set the same way: open it lazily,
cut it into sample ranges, compute each range independently, merge the results exactly in
sample order. Peak memory is then that of one chunk, whatever N. The contract the Ray
side builds on is written down in ``CHUNK_API.md`` at the repository root.

* :func:`open_inputs` -> :class:`InputSource`: ``len(src)``, ``src.read(lo, hi) -> (x, y)``,
  reading only those samples (an ``.npz`` member memory-mapped when stored, sought when
  compressed; an ``.npy`` memory-mapped; a folder of ``.npz`` shards in name order). Arrays
  keep their dtype: a static (N, *shape) input stays static, bool/uint8/int spike trains
  stay as they are; the engines decide what to widen.
* :func:`chunk_ranges` cuts ``range(n)`` into ``(lo, hi)`` pairs.
* :class:`RunJob` runs one chunk on a backend -> :class:`RunChunk` (the OUT.npz rows of
  those samples); :class:`RunWriter` writes the chunks, in any arrival order, into an OUT.npz
  that is byte for byte the same whatever the chunking.
* :class:`NpzWriter`: the generic part: each array member spooled to disk by rows and
  assembled into a zip at the end, so no member is ever whole in memory.
"""
from __future__ import annotations

import mmap
import os
import shutil
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError

#: Samples per chunk when ``--chunk-size`` is not given (:func:`auto_chunk_size`): at most
#: ``CHUNK_BYTES`` of input once widened to float64 (what the float engines hold), and at most
#: ``RUN_CHUNK`` samples for ``run`` (per-chunk costs, a few ms, and the event engine's
#: threads meeting at the end of each chunk, then cost < 2 %) or ``RECORD_CHUNK`` for
#: ``energy``/``verify``, whose recorded runs keep every layer's counts of the chunk
#: (~150 KB a sample for an MNIST conv SNN).
CHUNK_BYTES = 64 << 20
RUN_CHUNK = 4096
RECORD_CHUNK = 512

#: Zip entries get this fixed timestamp (numpy's ``savez`` stamps the current time), so the
#: same results give the same bytes, run after run and chunking after chunking.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_COPY_BLOCK = 1 << 22


# -- input ---------------------------------------------------------------------------
class _Array:
    """One array stored in a file, read by sample ranges (axis 0) without loading it whole.

    An ``.npy`` or an uncompressed ``.npz`` member is read with ``os.pread`` at the rows'
    offset: no memory map of the whole file, because the pages of a map stay in the
    process's resident set once touched, and peak RSS would grow with N. ``mapped=True``
    maps only the rows asked for (read-only, prefaulted), unmapped when the array is dropped:
    for a consumer that reads the samples in place (the event engine), it saves the copy of
    every byte (~1 us a sample of MNIST trains here) and holds no more than the copy would.
    A compressed member is sought in (its zip stream decompresses up to there); a
    Fortran-order array is memory-mapped."""

    def __init__(self, file: Path, member: Optional[str] = None):
        self.file, self.member = Path(file), member
        self._map = None
        if member is None:                                   # a .npy file
            with open(self.file, "rb") as f:
                self.shape, self.dtype, self._fortran = _npy_header(f)
                self._offset = f.tell()
            self._stored = True
            return
        with zipfile.ZipFile(self.file) as zf:
            info = zf.getinfo(member)
            with zf.open(info) as f:
                self.shape, self.dtype, self._fortran = _npy_header(f)
                header_len = f.tell()
        self._stored = info.compress_type == zipfile.ZIP_STORED
        if self._stored:
            with open(self.file, "rb") as f:
                f.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", f.read(4))
            self._offset = info.header_offset + 30 + name_len + extra_len + header_len
        else:
            self._offset = header_len

    def __len__(self) -> int:
        return int(self.shape[0]) if self.shape else 0

    def read(self, lo: int, hi: int, mapped: bool = False) -> np.ndarray:
        rows = (hi - lo,) + tuple(self.shape[1:])
        row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if self._fortran:   # no contiguous rows: map it (rare; numpy writes C order)
            if self._map is None:
                self._map = np.memmap(self.file, self.dtype, "r", self._offset, self.shape, order="F")
            return np.array(self._map[lo:hi])
        if self._stored and mapped and hi > lo:
            return self._mapped_rows(lo, hi, rows, row)
        if self._stored:
            out = np.empty(rows, self.dtype)
            view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
            fd = os.open(self.file, os.O_RDONLY)
            try:
                while done < len(view):
                    got = os.preadv(fd, [view[done:]], self._offset + lo * row + done)
                    if got == 0:
                        raise SnnCompileError(f"file '{self.file}' is truncated")
                    done += got
            finally:
                os.close(fd)
            return out
        with zipfile.ZipFile(self.file) as zf, zf.open(self.member) as f:
            f.seek(self._offset + lo * row)
            buf = f.read((hi - lo) * row)
        return np.frombuffer(buf, self.dtype).reshape(rows).copy()

    def _mapped_rows(self, lo: int, hi: int, rows: tuple, row: int) -> np.ndarray:
        """Rows lo:hi as a read-only view of a map of just their pages (see the class)."""
        start, length = self._offset + lo * row, (hi - lo) * row
        base = start - start % mmap.ALLOCATIONGRANULARITY
        fd = os.open(self.file, os.O_RDONLY)
        try:    # (a map past the end of the file would fault when read: refuse it here)
            if os.fstat(fd).st_size < start + length:
                raise SnnCompileError(f"file '{self.file}' is truncated")
            pages = mmap.mmap(fd, start + length - base, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                              prot=mmap.PROT_READ, offset=base)
        finally:
            os.close(fd)
        return np.frombuffer(pages, self.dtype, length // self.dtype.itemsize, start - base).reshape(rows)

    def __getstate__(self):   # picklable (Ray ships sources to workers): a map is reopened there
        return {**self.__dict__, "_map": None}


def _npy_header(f):
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("object arrays are not supported (allow_pickle is off)")
    return shape, dtype, fortran


@dataclass
class _Shard:
    file: Path
    x: _Array
    y: Optional[_Array]


class InputSource:
    """A DATA set (``.npz`` with ``x`` and optional ``y``, ``.npy`` of ``x``, or a folder of
    ``.npz`` shards in name order), read lazily by sample ranges. Picklable.

    ``len(src)``: samples. ``src.sample_shape``, ``src.dtype``: of ``x`` (per sample).
    ``src.has_labels``: every shard has ``y``. ``src.read(lo, hi) -> (x, y or None)``.
    """

    def __init__(self, path, shards: list[_Shard]):
        self.path = Path(path)
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s.x) for s in shards]).tolist()
        first = shards[0].x
        self.sample_shape = tuple(first.shape[1:])
        self.dtype = first.dtype
        self.has_labels = all(s.y is not None for s in shards)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def labels(self, n: Optional[int] = None) -> Optional[np.ndarray]:
        """The first ``n`` (default all) labels, without reading ``x`` (None without labels):
        a few bytes a sample, so commands check them before running anything."""
        if not self.has_labels:
            return None
        n = len(self) if n is None else min(n, len(self))
        ys = [s.y.read(0, min(len(s.y), n - a)) for s, a in zip(self.shards, self.starts) if a < n]
        return ys[0] if len(ys) == 1 else np.concatenate(ys)

    def read(self, lo: int, hi: int, mapped: bool = False):
        """x[lo:hi] (dtype and layout as stored) and y[lo:hi] (or None without labels);
        ``mapped``: x may be a read-only map of the file's rows (``_Array``; a range across
        shards is joined into a copy), for a consumer that only reads it."""
        lo, hi = max(0, lo), min(len(self), hi)
        xs, ys = [], []
        for i, shard in enumerate(self.shards):
            a, b = max(lo, self.starts[i]), min(hi, self.starts[i + 1])
            if a >= b:
                continue
            a, b = a - self.starts[i], b - self.starts[i]
            xs.append(shard.x.read(a, b, mapped))
            if self.has_labels:
                ys.append(shard.y.read(a, b))
        if not xs:
            return (np.zeros((0,) + self.sample_shape, self.dtype), None)
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        y = None if not self.has_labels else (ys[0] if len(ys) == 1 else np.concatenate(ys))
        return x, y


def open_inputs(path, what: str = "input") -> InputSource:
    """Open DATA lazily; every problem is one SnnCompileError naming the file (and shard)."""
    from snncompile.commands._common import check_input_file

    path = Path(path)
    if not path.is_dir():
        path = check_input_file(path, what)    # exists, a regular file (not a FIFO, device, loop)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npz")
        if not files:
            raise SnnCompileError(f"{what} folder '{path}' holds no .npz shards")
        shards = [_open_shard(f, what) for f in files]
        shapes = {s.x.shape[1:] for s in shards}
        if len(shapes) > 1:
            raise SnnCompileError(f"{what} folder '{path}': the shards' 'x' have different sample shapes "
                                  f"({', '.join(map(str, sorted(shapes)))})")
        labelled = [s.y is not None for s in shards]
        if any(labelled) and not all(labelled):
            missing = next(s.file.name for s in shards if s.y is None)
            raise SnnCompileError(f"{what} folder '{path}': shard '{missing}' has no 'y' but others do")
    else:
        shards = [_open_shard(path, what)]
    src = InputSource(path, shards)
    if len(src) == 0:
        raise SnnCompileError(f"{what} file '{path}' has no samples ('x' holds 0 samples)")
    return src


def _open_shard(file: Path, what: str) -> _Shard:
    try:
        if file.suffix == ".npy":
            x, y = _Array(file), None
        else:
            with open(file, "rb") as f:
                if f.read(6) == b"\x93NUMPY":
                    raise SnnCompileError(f"{what} file '{file}' is a single .npy array, not an .npz "
                                          f"archive: name it .npy, or save it with numpy.savez(path, x=x) "
                                          f"(and y=labels)")
            with zipfile.ZipFile(file) as zf:
                names = zf.namelist()
            if "x.npy" not in names:
                found = ", ".join(n[:-4] for n in names if n.endswith(".npy")) or "none"
                raise SnnCompileError(f"{what} file '{file}' has no array 'x' (found: {found})")
            x = _Array(file, "x.npy")
            y = _Array(file, "y.npy") if "y.npy" in names else None
    except SnnCompileError:
        raise
    except Exception as exc:  # zipfile/ValueError/OSError: not a valid npz/npy
        kind = ".npy" if file.suffix == ".npy" else ".npz"
        raise SnnCompileError(f"{what} file '{file}' is not a readable {kind} file ({exc})") from None
    if len(x.shape) == 0:
        raise SnnCompileError(f"{what} file '{file}': 'x' is a 0-d array; expected (N, ...) samples")
    if y is not None:
        if len(y.shape) != 1:
            raise SnnCompileError(f"{what} file '{file}': labels 'y' must be ({len(x)},) integer class "
                                  f"indices, got shape {y.shape} dtype {y.dtype}")
        if len(y) != len(x):
            raise SnnCompileError(f"{what} file '{file}': 'y' has {len(y)} labels for {len(x)} samples")
    return _Shard(file, x, y)


def auto_chunk_size(source: InputSource, cap: int = RUN_CHUNK, as_stored: bool = False) -> int:
    """The default chunk: ``cap`` samples, fewer when a sample is large (CHUNK_BYTES).
    ``as_stored``: the backend keeps integer and bool samples as stored (the event engine
    runs uint8 spike trains as they are), so a sample costs its stored bytes, not float64's;
    fewer, larger chunks then cut the per-chunk costs (15 -> 5 chunks for 20,000 MNIST
    trains of 8 steps)."""
    itemsize = source.dtype.itemsize if as_stored and source.dtype.kind in "biu" else 8
    per_sample = max(1, int(np.prod(source.sample_shape, dtype=np.int64)) * itemsize)
    return int(max(1, min(cap, CHUNK_BYTES // per_sample)))


def chunk_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``[(0, size), (size, 2 size), ..., (k size, n)]``: every sample once, in order."""
    if size < 1:
        raise SnnCompileError(f"chunk size must be at least 1, got {size}")
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


# -- output --------------------------------------------------------------------------
class NpzWriter:
    """An ``.npz`` (uncompressed, loadable by ``numpy.load``) built from row blocks.

    ``declare(name, n_rows)`` fixes the member order; ``rows(name, lo, block)`` writes rows
    ``lo:lo+len(block)`` of a member (any order; the dtype and row shape come from the first
    block); ``scalar(name, value)`` a 0-d member; ``finish(path)`` checks every row was
    written and assembles the zip. Rows wait in spool files beside ``path``, never in memory.
    """

    def __init__(self, folder):
        self._dir = tempfile.mkdtemp(prefix=".snncompile-spool-", dir=folder)
        self._members: dict[str, dict] = {}

    def declare(self, name: str, n_rows: Optional[int] = None) -> None:
        self._members[name] = {"n": n_rows, "dtype": None, "row": None, "done": 0, "value": None}

    def scalar(self, name: str, value) -> None:
        self._members.setdefault(name, {"n": None})
        self._members[name]["value"] = np.asarray(value)

    def rows(self, name: str, lo: int, block: np.ndarray) -> None:
        m = self._members[name]
        block = np.ascontiguousarray(block)
        if m["dtype"] is None:
            m["dtype"], m["row"] = block.dtype, block.shape[1:]
            m["spool"] = open(os.path.join(self._dir, f"{len(os.listdir(self._dir))}.raw"), "w+b")
        elif block.dtype != m["dtype"] or block.shape[1:] != m["row"]:
            raise SnnCompileError(f"output '{name}': a chunk of {block.dtype} {block.shape[1:]} "
                                  f"after {m['dtype']} {m['row']}")
        f = m["spool"]
        f.seek(lo * block[:1].nbytes if len(block) else 0)
        f.write(block.tobytes())
        m["done"] += len(block)

    def finish(self, path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, m in self._members.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                info.external_attr = 0o600 << 16
                with zf.open(info, "w", force_zip64=True) as out:
                    if m.get("value") is not None:
                        np.lib.format.write_array(out, m["value"], allow_pickle=False)
                        continue
                    if m["done"] != m["n"]:
                        raise SnnCompileError(f"output '{name}': {m['done']} of {m['n']} rows written")
                    header = {"descr": np.lib.format.dtype_to_descr(m["dtype"]), "fortran_order": False,
                              "shape": (m["n"],) + tuple(m["row"])}
                    np.lib.format.write_array_header_1_0(out, header)
                    f = m["spool"]
                    f.seek(0)
                    shutil.copyfileobj(f, out, _COPY_BLOCK)
        self.close()

    def close(self) -> None:
        for m in self._members.values():
            if m.get("spool") is not None:
                m["spool"].close()
                m["spool"] = None
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class RunChunk:
    """The OUT.npz rows of samples ``lo:hi`` (``arrays``: counts, pred, spikes|potential|membrane) and
    how many of them were predicted right (None without labels)."""

    lo: int
    hi: int
    arrays: dict[str, np.ndarray]
    correct: Optional[int] = None


@dataclass
class RunJob:
    """Everything a chunk needs to be run anywhere (picklable): the graph (already quantized
    for ``precision="fixed"``), backend, precision, T, and the data file's name for errors."""

    graph: object
    backend: str
    precision: str
    steps: int
    data_file: str = ""

    def __call__(self, source: InputSource, lo: int, hi: int) -> RunChunk:
        """Read samples lo:hi of ``source`` and run them -> their OUT.npz rows."""
        from snncompile.targets import run

        x, y = source.read(lo, hi, mapped=self.reads_in_place)
        self.check(x, lo)
        labels = None if y is None else self.labels(y)
        result = run(self.graph, x, steps=self.steps, backend=self.backend, precision=self.precision)
        arrays = chunk_arrays(result)
        return RunChunk(lo, hi, arrays, None if labels is None else int(np.sum(arrays["pred"] == labels)))

    @property
    def reads_in_place(self) -> bool:
        """The event engine only reads its inputs (``targets.emulator.events``): they may be a
        read-only map of the data file."""
        return self.backend == "emulator" and self.precision == "fixed"

    @property
    def pipelined(self) -> bool:
        """Two chunks may run at once in this process (``cluster.compute_chunks``): the
        event engine is thread-safe and releases the GIL; not Lava (processes of its own)
        nor the torch engine (its own threads)."""
        return self.reads_in_place

    def check(self, x, lo: int = 0) -> None:
        """Samples ``lo:lo+len(x)`` fit the graph and are finite, else an error naming the file."""
        from snncompile.targets.base import input_steps
        try:
            input_steps(self.graph, x, self.steps)
        except SnnCompileError as exc:
            raise SnnCompileError(f"input file '{self.data_file}': {exc}") from None
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            bad = lo + int(np.argmin(np.isfinite(x).reshape(len(x), -1).all(axis=1)))
            raise SnnCompileError(f"input file '{self.data_file}': input contains NaN or Inf values "
                                  f"(first in sample {bad})")

    def labels(self, y):
        """``y`` as int64 class indices of the graph's outputs, or an error naming the file."""
        from snncompile.commands._common import check_labels
        n_classes = int(np.prod(self.graph.shape(self.graph.output.name)))
        return check_labels(y, len(y), self.data_file, n_classes)


def chunk_arrays(result) -> dict[str, np.ndarray]:
    """The per-sample OUT.npz members of a RunResult (``snncompile.commands.run`` docstring)."""
    counts = result.counts            # (a sum over the outputs: once, not once per member)
    arrays = {"counts": counts, "pred": np.argmax(counts, axis=1).astype(np.int64)}
    if result.readout == "spikes":
        arrays["spikes"] = result.outputs.astype(np.uint8)
    elif result.readout == "membrane":
        arrays["membrane"] = result.outputs
    else:
        arrays["potential"] = np.cumsum(result.outputs, axis=1)
    return arrays


class RunWriter:
    """OUT.npz of a chunked run: ``add(chunk)`` in any order, ``finish(path)`` once.

    Members in the order of ``snncompile run``'s docstring: counts, pred, backend, precision,
    readout, steps, scale, spikes|potential|membrane, accuracy (when labelled: right predictions / N)."""

    def __init__(self, folder, n: int, backend: str, precision: str, readout: str, steps: int,
                 labelled: bool, scale: float = 1.0):
        self.n, self.labelled = n, labelled
        self.correct = 0
        self._npz = NpzWriter(folder)
        self._npz.declare("counts", n)
        self._npz.declare("pred", n)
        for name, value in (("backend", backend), ("precision", precision), ("readout", readout),
                            ("steps", steps), ("scale", float(scale))):
            self._npz.scalar(name, np.array(value))
        self._npz.declare(readout if readout in ("spikes", "membrane") else "potential", n)

    def add(self, chunk: RunChunk) -> None:
        for name, block in chunk.arrays.items():
            self._npz.rows(name, chunk.lo, block)
        if self.labelled:
            self.correct += chunk.correct

    @property
    def accuracy(self) -> Optional[float]:
        return self.correct / self.n if self.labelled else None

    def finish(self, path) -> None:
        if self.labelled:
            self._npz.scalar("accuracy", np.array(np.float64(self.correct) / self.n))
        self._npz.finish(path)

    def close(self) -> None:
        self._npz.close()


@dataclass
class EnergyChunk:
    """Exact count sums of samples ``lo:hi`` (``record``), the backend that counted them, and
    the notes the counting made (e.g. "counted on the emulator: Lava records no layers")."""

    lo: int
    hi: int
    record: object          # snncompile.energy.counts.CountRecord
    counted_on: str
    notes: list = field(default_factory=list)
    #: with ``EnergyJob.chip``: the chunk's activity on the chip (``chip.cost.Activity``) and a
    #: note when it had to be counted on another backend
    chip_activity: object = None
    chip_note: Optional[str] = None


@dataclass
class EnergyJob:
    """``energy``'s per-chunk work (picklable): a recorded run of samples lo:hi, reduced at
    once to a CountRecord of exact integer sums (no per-sample table survives the chunk)."""

    graph: object
    backend: str
    precision: str
    steps: int
    data_file: str = ""
    #: a ``snncompile.chip.mapper.ChipMap``: also measure each chunk's activity on its cores
    chip: object = None

    def __call__(self, source: InputSource, lo: int, hi: int) -> EnergyChunk:
        from snncompile.commands.energy import counted_run
        from snncompile.energy.counts import record_run

        x, _ = source.read(lo, hi)
        RunJob(self.graph, self.backend, self.precision, self.steps, self.data_file).check(x, lo)
        result, counted_on, notes = counted_run(self.graph, x, self.steps, self.backend, self.precision)
        chunk = EnergyChunk(lo, hi, record_run(self.graph, result, x), counted_on, notes)
        if self.chip is not None:
            from snncompile.chip.report import chip_activity
            chunk.chip_activity, chunk.chip_note = chip_activity(self.chip, self.graph, result, x)
        return chunk


# -- progress ------------------------------------------------------------------------
class Progress:
    """Feedback on stderr for a long loop: a tqdm bar when stderr is a terminal, else a few
    plain ``desc: k/n samples`` lines (about every quarter; ``announce``: also one at the start,
    for a slow backend whose first chunk takes long). Never touches stdout."""

    def __init__(self, total: int, desc: str, unit: str = "samples", plain_lines: int = 4,
                 announce: bool = False):
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self._bar = None
        self._next = 0
        self._step = max(1, -(-total // plain_lines))
        if sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr, leave=False)
        elif announce:
            print(f"{desc}: {total} {unit} ...", file=sys.stderr, flush=True)

    def update(self, k: int) -> None:
        self.done += k
        if self._bar is not None:
            self._bar.update(k)
        elif self.done >= self._next and self.done < self.total:
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}", file=sys.stderr, flush=True)
            self._next = self.done + self._step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
