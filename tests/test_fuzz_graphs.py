"""Fuzz over crafted graphs (issue 16): random mutations of valid ONNX (re-signed with a
recomputed digest), NIR and netx files. Every outcome must be a clean success or exactly
one ``error:`` line (never a traceback or an internal error). A bounded number of cases
here; ``benchmarks/bench_fuzz.py`` runs thousands."""
import collections
import re

import fuzzing


def test_mutated_graph_files_succeed_or_give_one_error_line(tmp_path):
    outcomes = fuzzing.fuzz(tmp_path, n_onnx=150, n_nir=60, n_netx=60, first_seed=100_000)
    kinds = collections.Counter(o.kind for o in outcomes)
    bad = [f"{o.case}: {o.detail}" for o in outcomes if o.kind == "bad"]
    assert not bad, "\n".join(bad[:5])
    # the mutations must reach both outcomes (not all refused by the first check)
    assert kinds["ok"] >= 20 and kinds["error"] >= 100, kinds
    reasons = {re.sub(r"fuzz\d+|\d+", "#", o.detail.replace(str(tmp_path), ""))[:70]
               for o in outcomes if o.kind == "error"}
    assert len(reasons) >= 10, reasons
