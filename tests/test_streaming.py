"""Chunked streaming (``snncompile.streaming``): results independent of the chunk size, byte
for byte; every input layout (npz, compressed npz, npy, shard folder); dtypes kept into the
engines; exact per-chunk energy sums; progress on stderr only."""
import filecmp
import json

import numpy as np
import pytest
from click.testing import CliRunner

import snncompile.targets as targets
from snncompile.cli import main
from snncompile.energy import analyze
from snncompile.energy.analysis import report_from_record
from snncompile.energy.counts import CountRecord, count_record, record_run
from snncompile.errors import SnnCompileError
from snncompile.ir import Conv2d, Flatten, Graph, Input, Linear, Neuron, Output, SumPool2d
from snncompile.ir.onnx_format import save_onnx
from snncompile.streaming import NpzWriter, chunk_ranges, open_inputs

N, T = 23, 6          # chunk sizes 5 and 7 do not divide N


def _net(readout="spikes") -> Graph:
    rng = np.random.default_rng(7)
    g = Graph("streamnet", timesteps=T)
    g.add(Input("in", shape=(1, 8, 8)))
    g.add(Conv2d("conv", weight=rng.normal(0.2, 0.3, size=(4, 1, 3, 3)).astype(np.float32), padding=1), ["in"])
    g.add(Neuron("lif1", shape=(4, 8, 8), dv=0.1, threshold=1.0, reset_mode="subtract"), ["conv"])
    g.add(SumPool2d("pool", kernel_size=2, stride=2), ["lif1"])
    g.add(Flatten("flat"), ["pool"])
    g.add(Linear("fc", weight=rng.normal(0.0, 0.3, size=(5, 64)), bias=np.full(5, 0.05)), ["flat"])
    if readout == "spikes":
        g.add(Neuron("lif2", shape=(5,), threshold=2.0, reset_mode="zero"), ["fc"])
        g.add(Output("out"), ["lif2"])
    else:
        g.add(Output("out", mode="potential"), ["fc"])
    return g


RNG = np.random.default_rng(11)
STATIC = RNG.random((N, 1, 8, 8)).astype(np.float32) * 1.5          # real-valued, static
TRAIN = RNG.random((N, T, 1, 8, 8)) < 0.35                           # bool spike train
LABELS = RNG.integers(0, 5, N)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("streaming")
    save_onnx(_net(), d / "g.onnx")
    save_onnx(_net("potential"), d / "p.onnx")
    np.savez(d / "static.npz", x=STATIC, y=LABELS)
    np.savez(d / "train.npz", x=TRAIN, y=LABELS)
    np.savez_compressed(d / "train_z.npz", x=TRAIN, y=LABELS)
    np.save(d / "static.npy", STATIC)
    (d / "shards").mkdir()
    for i, (lo, hi) in enumerate([(0, 4), (4, 15), (15, N)]):   # shard names sort in order
        np.savez(d / "shards" / f"part{i:02d}.npz", x=TRAIN[lo:hi], y=LABELS[lo:hi])
    return d


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _run(d, graph, data, out, *extra):
    res = cli("run", d / graph, "--input", d / data, "-o", d / out, *extra)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.parametrize("graph,data,opts", [
    ("g.onnx", "static.npz", ("--backend", "emulator", "--precision", "fixed")),
    ("g.onnx", "train.npz", ("--backend", "emulator", "--precision", "fixed")),
    ("p.onnx", "static.npz", ("--backend", "reference",)),
])
def test_run_output_is_the_same_bytes_for_every_chunk_size(files, graph, data, opts):
    d = files
    outs = []
    for size in (5, 7, 512):
        _run(d, graph, data, f"o{size}.npz", *opts, "--chunk-size", size)
        outs.append(d / f"o{size}.npz")
    assert filecmp.cmp(outs[0], outs[1], shallow=False) and filecmp.cmp(outs[0], outs[2], shallow=False)
    # and the same results as the API on the whole array at once
    from snncompile.ir.onnx_format import load_onnx
    g = load_onnx(d / graph)
    x = STATIC if data.startswith("static") else TRAIN
    api = targets.run(g, x, steps=T, backend=opts[1], precision=opts[3] if len(opts) > 2 else "float")
    out = np.load(outs[0])
    np.testing.assert_array_equal(out["counts"], api.counts)
    np.testing.assert_array_equal(out["pred"], api.pred)
    assert float(out["accuracy"]) == np.mean(api.pred == LABELS)
    if "spikes" in out.files:
        np.testing.assert_array_equal(out["spikes"], api.outputs.astype(np.uint8))
        rate = out["spikes"].mean()
        assert 0.02 < rate < 0.8, rate                      # the net really fires
    else:
        np.testing.assert_array_equal(out["potential"], np.cumsum(api.outputs, axis=1))
    assert out["counts"].shape == (N, 5) and int(out["steps"]) == T


def test_every_input_layout_gives_the_same_output(files):
    d = files
    opts = ("--backend", "emulator", "--precision", "fixed", "--chunk-size", "6")
    _run(d, "g.onnx", "train.npz", "a.npz", *opts)
    _run(d, "g.onnx", "train_z.npz", "b.npz", *opts)
    _run(d, "g.onnx", "shards", "c.npz", *opts)
    assert filecmp.cmp(d / "a.npz", d / "b.npz", shallow=False)
    assert filecmp.cmp(d / "a.npz", d / "c.npz", shallow=False)
    _run(d, "g.onnx", "static.npz", "s1.npz", *opts)
    _run(d, "g.onnx", "static.npy", "s2.npz", *opts)
    s1, s2 = np.load(d / "s1.npz"), np.load(d / "s2.npz")
    assert "accuracy" in s1.files and "accuracy" not in s2.files    # .npy carries no labels
    for k in s2.files:
        np.testing.assert_array_equal(s1[k], s2[k])


def test_reads_keep_dtype_layout_and_static_inputs_reach_the_engine_static(files, monkeypatch):
    d = files
    for name, ref in (("train.npz", TRAIN), ("train_z.npz", TRAIN), ("shards", TRAIN),
                      ("static.npz", STATIC), ("static.npy", STATIC)):
        src = open_inputs(d / name)
        x, y = src.read(3, 17)
        assert x.dtype == ref.dtype and x.shape == (14,) + ref.shape[1:], name
        np.testing.assert_array_equal(x, ref[3:17])
        assert len(src) == N
    np.save(d / "fortran.npy", np.asfortranarray(STATIC))
    np.testing.assert_array_equal(open_inputs(d / "fortran.npy").read(5, 9)[0], STATIC[5:9])
    u8 = (TRAIN * 3).astype(np.int16)
    np.savez(d / "int.npz", x=u8)
    assert open_inputs(d / "int.npz").read(0, 2)[0].dtype == np.int16
    seen = []
    real_run = targets.run

    def spy(graph, x, **kw):
        seen.append((x.shape, x.dtype))
        return real_run(graph, x, **kw)
    monkeypatch.setattr(targets, "run", spy)
    _run(d, "g.onnx", "static.npz", "spy1.npz", "--backend", "emulator", "--precision", "fixed",
         "--chunk-size", "10")
    _run(d, "g.onnx", "train.npz", "spy2.npz", "--backend", "emulator", "--chunk-size", "10")
    assert seen == [((10, 1, 8, 8), np.float32), ((10, 1, 8, 8), np.float32), ((3, 1, 8, 8), np.float32),
                    ((10, T, 1, 8, 8), np.bool_), ((10, T, 1, 8, 8), np.bool_), ((3, T, 1, 8, 8), np.bool_)]


@pytest.mark.parametrize("data,opts", [("train.npz", ("--backend", "emulator", "--precision", "fixed")),
                                       ("static.npz", ("--backend", "reference",))])
def test_energy_json_is_identical_for_every_chunk_size(files, data, opts):
    d = files
    texts = []
    for size in (4, 7, 512):
        res = cli("energy", d / "g.onnx", "--input", d / data, *opts, "--chunk-size", size,
                  "-o", d / f"e{size}.json")
        assert res.exit_code == 0, res.output
        texts.append((d / f"e{size}.json").read_text())
    assert texts[0] == texts[1] == texts[2]
    rep = json.loads(texts[0])
    assert rep["summary"]["n_samples"] == N and rep["summary"]["synops_per_sample"] > 0
    assert 0.01 < rep["summary"]["mean_firing_rate"] < 0.8


def test_count_records_merge_exactly_into_the_whole_run():
    g = _net()
    from snncompile.targets import emulator
    whole = emulator.run(g, TRAIN, precision="fixed", record=True)
    parts = []
    for lo, hi in chunk_ranges(N, 9):
        res = emulator.run(g, TRAIN[lo:hi], precision="fixed", record=True)
        parts.append(record_run(g, res, TRAIN[lo:hi]))
    merged = CountRecord.merge(parts[::-1])          # any order
    assert all(v.dtype == np.int64 for v in merged.sums.values())
    assert merged.n_samples == N and merged.input_kind == "binary"
    one = record_run(g, whole, TRAIN)
    for k in one.sums:
        np.testing.assert_array_equal(merged.sums[k], one.sums[k])
    assert count_record(g, merged) == count_record(g, one)
    assert report_from_record(g, merged).to_json() == analyze(g, whole, x=TRAIN).to_json()


def test_bad_inputs_are_one_error_line_and_no_output(files, tmp_path):
    d = files
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8)))
    np.savez(tmp_path / "noxs.npz", z=np.zeros(3))
    (tmp_path / "mixed").mkdir()
    np.savez(tmp_path / "mixed" / "a.npz", x=np.zeros((2, 1, 8, 8)))
    np.savez(tmp_path / "mixed" / "b.npz", x=np.zeros((2, 2, 8, 8)))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    cases = [("empty.npz", "has no samples"), ("noxs.npz", "has no array 'x' (found: z)"),
             ("mixed", "different sample shapes"), ("bad.npz", "is not a readable .npz file")]
    for name, message in cases:
        out = tmp_path / "out.npz"
        res = cli("run", d / "g.onnx", "--input", tmp_path / name, "-o", out)
        assert res.exit_code == 1 and message in res.stderr and name in res.stderr, res.output
        assert not out.exists()
    np.savez(tmp_path / "late.npz", x=np.concatenate([STATIC, np.full((2, 1, 8, 8), np.nan, np.float32)]))
    res = cli("run", d / "g.onnx", "--input", tmp_path / "late.npz", "-o", tmp_path / "out.npz",
              "--chunk-size", "5")
    assert res.exit_code == 1 and "NaN" in res.stderr and not (tmp_path / "out.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no spool left behind
    with pytest.raises(SnnCompileError, match="chunk size"):
        chunk_ranges(5, 0)


def test_writer_refuses_missing_rows(tmp_path):
    w = NpzWriter(tmp_path)
    w.declare("a", 4)
    w.rows("a", 0, np.zeros((2, 3)))
    with pytest.raises(SnnCompileError, match="2 of 4 rows"):
        w.finish(tmp_path / "x.npz")
    w.close()


def test_progress_goes_to_stderr_and_stdout_is_unchanged(files):
    d = files
    res = _run(d, "g.onnx", "train.npz", "prog.npz", "--backend", "emulator", "--chunk-size", "5")
    assert res.stdout.count("\n") == 1 and res.stdout.startswith(f"ran {N} sample(s)")
    assert "run (emulator): 5/23 samples" in res.stderr


def _table(text):
    """The verify tables without the time column (and without stderr progress)."""
    return [line.rsplit("  ", 1)[0] if line[:1].isalpha() else line for line in text.splitlines()]


@pytest.mark.lava
def test_verify_streams_and_gives_the_same_tables_for_every_chunk_size(files):
    d = files
    outs = []
    for size in (5, 512):
        res = cli("verify", d / "g.onnx", "--input", d / "train.npz", "--lava-samples", "3",
                  "--no-lava-float", "--chunk-size", size)
        assert res.exit_code == 0, res.output
        assert "emulator == Lava fixed point, spike for spike, on 3 samples" in res.stdout
        outs.append(_table(res.stdout))
        assert "verify: running Lava on 3 sample(s)" in res.stderr
    assert outs[0] == outs[1]
    assert any(line.startswith("emulator fixed   23") for line in outs[0])


@pytest.mark.lava
def test_run_on_lava_announces_itself_and_matches_the_emulator(files, tmp_path):
    d = files
    np.savez(tmp_path / "four.npz", x=TRAIN[:4])
    res = cli("run", d / "g.onnx", "--input", tmp_path / "four.npz", "--backend", "lava", "--precision", "fixed",
              "-o", tmp_path / "lava.npz")
    assert res.exit_code == 0, res.output
    assert "run (lava): 4 samples ..." in res.stderr and "run (lava)" not in res.stdout
    _run(d, "g.onnx", "train.npz", "emu_all.npz", "--backend", "emulator", "--precision", "fixed")
    lava, emu = np.load(tmp_path / "lava.npz"), np.load(d / "emu_all.npz")
    np.testing.assert_array_equal(lava["spikes"], emu["spikes"][:4])
    assert lava["spikes"].sum() > 0


def test_quantize_calibrates_from_any_layout_reading_only_max_calib(files, tmp_path):
    d = files
    for name in ("train.npz", "shards"):
        res = cli("quantize", d / "g.onnx", "--calib", d / name, "--max-calib", "17",
                  "-o", tmp_path / f"{name}.q.onnx")
        assert res.exit_code == 0, res.output
        assert "calibrated on 17 samples" in res.stdout
    assert (tmp_path / "train.npz.q.onnx").read_bytes() == (tmp_path / "shards.q.onnx").read_bytes()


def test_read_ahead_gives_each_range_as_read_and_raises_a_read_error_where_it_is_read(files, tmp_path):
    """Chunk k+1 is read on a thread while chunk k runs: the same arrays as a direct read,
    other ranges read directly, and a failing read raises at the job's read of that range."""
    from snncompile.cluster import ReadAhead
    source = open_inputs(files / "shards")
    ranges = chunk_ranges(len(source), 6)
    with ReadAhead(source, ranges) as ahead:
        assert len(ahead) == len(source) and ahead.sample_shape == source.sample_shape
        for lo, hi in ranges:
            (x, y), (x0, y0) = ahead.read(lo, hi), source.read(lo, hi)
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
            assert x.dtype == x0.dtype == TRAIN.dtype
        np.testing.assert_array_equal(ahead.read(1, 3)[0], TRAIN[1:3])     # not a prefetched range

    class Failing:
        def read(self, lo, hi):
            if lo >= 6:
                raise SnnCompileError(f"file 'late.npz' is truncated (samples {lo}..{hi - 1})")
            return source.read(lo, hi)
    with ReadAhead(Failing(), ranges) as ahead:
        np.testing.assert_array_equal(ahead.read(*ranges[0])[0], TRAIN[:6])   # its successor fails
        with pytest.raises(SnnCompileError, match=r"late.npz' is truncated \(samples 6\.\.11\)"):
            ahead.read(*ranges[1])


def test_two_chunks_in_flight_give_every_result_in_range_order_and_stop_on_an_error(files):
    """A pipelined job (``RunJob`` on the event engine) runs two chunks at once in this
    process: results come in range order even when a later chunk finishes first, every read
    is the range asked for, and a chunk's error is raised in order after the chunks before
    it, with no chunk thread left running and the chunks after it never started."""
    import threading
    import time

    from snncompile.cluster import compute_chunks
    source = open_inputs(files / "shards")
    ranges = chunk_ranges(len(source), 5)

    class Job:
        pipelined = True

        def __init__(self, fail_at=None):
            self.fail_at, self.started, self.threads = fail_at, [], set()

        def __call__(self, src, lo, hi):
            self.started.append(lo)
            self.threads.add(threading.current_thread().name)
            if lo == self.fail_at:
                raise SnnCompileError(f"chunk at {lo} failed")
            time.sleep(0.05 if (lo // 5) % 2 == 0 else 0.0)    # even chunks finish last
            return lo, hi, src.read(lo, hi)[0]

    job = Job()
    results = list(compute_chunks(job, source, ranges))
    assert [(lo, hi) for lo, hi, _ in results] == ranges
    for lo, hi, x in results:
        np.testing.assert_array_equal(x, TRAIN[lo:hi])
    assert len(job.threads) == 2 and all(n.startswith("snncompile-chunk") for n in job.threads)

    job = Job(fail_at=ranges[2][0])
    got = []
    with pytest.raises(SnnCompileError, match=f"chunk at {ranges[2][0]} failed"):
        for lo, hi, _ in compute_chunks(job, source, ranges):
            got.append((lo, hi))
    assert got == ranges[:2]
    firsts = [lo for lo, _ in ranges]
    assert set(firsts[:3]) <= set(job.started) <= set(firsts[:4])   # (the 4th may have been in flight)
    assert not [t for t in threading.enumerate() if t.name.startswith("snncompile-")]


def test_default_chunks_of_integer_trains_count_their_stored_bytes(tmp_path):
    """The event engine keeps uint8 trains as stored: its default chunk is 8x float64's."""
    from snncompile.streaming import CHUNK_BYTES, auto_chunk_size
    big = np.zeros((4, 8, 1, 64, 64), np.uint8)          # 32 KB a sample stored, 256 KB widened
    np.savez(tmp_path / "big.npz", x=big)
    source = open_inputs(tmp_path / "big.npz")
    assert auto_chunk_size(source) == CHUNK_BYTES // (8 * 64 * 64 * 8)
    assert auto_chunk_size(source, as_stored=True) == CHUNK_BYTES // (8 * 64 * 64)
    np.savez(tmp_path / "f.npz", x=big.astype(np.float32))
    assert auto_chunk_size(open_inputs(tmp_path / "f.npz"), as_stored=True) == CHUNK_BYTES // (8 * 64 * 64 * 8)


def test_mapped_reads_are_read_only_views_of_the_same_rows(files, tmp_path):
    """``read(..., mapped=True)`` (the event engine's: it reads its inputs in place) gives the
    rows a copy would, from .npy files, .npz members and shards, as read-only maps of just
    those rows; a file shorter than its header says is refused, as the copy refuses it. (`run`
    on the event engine reads that way: the chunked-run tests above compare its OUT.npz.)"""
    import zipfile as _zip

    from snncompile.cluster import ReadAhead
    for path in (files / "shards", files / "train.npz"):
        source = open_inputs(path)
        for lo, hi in [(0, 5), (3, 17), (len(source) - 4, len(source)), (2, 2)]:
            (x, y), (x0, y0) = source.read(lo, hi, mapped=True), source.read(lo, hi)
            np.testing.assert_array_equal(x, x0)
            assert x.dtype == x0.dtype and x.shape == x0.shape
            if hi > lo and path.suffix:            # (ranges across shards are joined: a copy)
                assert not x.flags.writeable
        with ReadAhead(source, chunk_ranges(len(source), 7), mapped=True) as ahead:
            for lo, hi in chunk_ranges(len(source), 7):
                np.testing.assert_array_equal(ahead.read(lo, hi, mapped=True)[0], source.read(lo, hi)[0])
    np.save(tmp_path / "x.npy", TRAIN)
    np.testing.assert_array_equal(open_inputs(tmp_path / "x.npy").read(4, 9, mapped=True)[0], TRAIN[4:9])
    whole = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[:len(whole) - 100])
    with pytest.raises(SnnCompileError, match=r"cut.npy' is truncated"):
        open_inputs(tmp_path / "cut.npy").read(0, len(TRAIN), mapped=True)
    with _zip.ZipFile(files / "train.npz") as zf:
        assert zf.getinfo("x.npy").compress_type == _zip.ZIP_STORED       # (the mapped case)
