"""The per-stage kind tables: complete, consistent, and what `snncompile ops` and the README show."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snncompile.cli import main
from snncompile.errors import SnnCompileError
from snncompile.ir import Graph, Input, Linear, MaxPool2d, Output
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import STAGES, Refusal, StageTable, support_matrix, table

README = Path(__file__).resolve().parents[1] / "README.md"


class Mystery(ir.Node):
    kind = "Mystery"

    def out_shape(self, in_shapes):
        return in_shapes[0]


def test_every_kind_has_an_entry_in_every_stage():
    matrix = support_matrix()
    assert set(matrix) == set(ir.NODE_TYPES)
    missing = [(kind, stage) for kind, row in matrix.items() for stage in STAGES if not row[stage]]
    assert not missing, f"(kind, stage) pairs with no entry (implement or refuse them): {missing}"
    for row in matrix.values():
        for status in row.values():
            assert status == "yes" or re.fullmatch(r"no: \S.{10,}", status), status


def test_readme_block_is_the_ops_markdown():
    from snncompile.commands.ops import markdown

    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- ops:begin -->\n(.*?)<!-- ops:end -->", text, re.S)
    assert m, "README.md has no <!-- ops:begin --> ... <!-- ops:end --> block"
    assert m.group(1) == markdown(support_matrix()), (
        "README.md's node-kind table is stale: run `snncompile ops --markdown` and paste its output "
        "between <!-- ops:begin --> and <!-- ops:end --> in README.md")


def test_ops_command_json_text_and_markdown():
    runner = CliRunner()
    res = runner.invoke(main, ["ops", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["stages"]["MaxPool2d"]["nir.write"].startswith("no: NIR has no MaxPool2d node")
    assert data["stages"]["Linear"] == {stage: "yes" for stage in STAGES}
    assert data["backends"]["Neuron"]["lava fixed"] == "yes"
    assert set(data["backends"]["Conv2d"]) == {"reference float", "emulator float", "emulator fixed (torch)",
                                              "emulator fixed (events)", "lava float", "lava fixed"}
    res = runner.invoke(main, ["ops"])
    assert res.exit_code == 0 and "nir.write" in res.output and "no [" in res.output
    res = runner.invoke(main, ["ops", "--markdown"])
    assert res.exit_code == 0 and res.output.startswith("Per stage:\n\n| kind | frontend |")
    res = runner.invoke(main, ["ops", "--json", "--markdown"])
    assert res.exit_code == 1 and "error: --json and --markdown print different formats" in res.output


def test_refusal_and_missing_entry_errors_name_node_kind_and_stage():
    from snncompile.interop.nir_write import to_nir

    g = Graph("pooled", timesteps=2)
    g.add(Input("in", shape=(1, 4, 4)))
    g.add(MaxPool2d("pool", kernel_size=2, stride=2), ["in"])
    g.add(Output("out"), ["pool"])
    with pytest.raises(SnnCompileError, match=r"^node 'pool' \(MaxPool2d\): NIR has no MaxPool2d node"):
        to_nir(g, dt=1e-3)
    with pytest.raises(SnnCompileError, match=r"^node 'm' \(Mystery\): reference has no entry for this "
                                              r"kind \(no entry in the reference table, snncompile\.targets"):
        table("reference").lookup(Mystery("m"))


def test_a_kind_declared_twice_or_a_second_table_is_refused():
    with pytest.raises(ValueError, match="stage 'reference' already has a table"):
        StageTable("reference")
    with pytest.raises(ValueError, match="kind Linear declared twice"):
        table("quantize").refuse(ir.Linear, "is fine")
    with pytest.raises(ValueError, match="unknown stage 'nowhere'"):
        StageTable("nowhere")


def test_onnx_reader_kind_table_agrees_with_the_op_readers_and_the_writer():
    from snncompile.ir import onnx_format as of

    g = Graph("all", timesteps=2)
    g.add(Input("in", shape=(3,)))
    g.add(Linear("fc", weight=np.ones((2, 3))), ["in"])
    g.add(Output("out", mode="potential"), ["fc"])
    written = {n.name: (n.op_type, n.domain) for n in of.to_model(g).graph.node}
    assert written["fc"] == of.READ_TABLE.lookup(g.node("fc"))
    assert written["out"] == of.READ_TABLE.lookup(g.node("out"))
    ops = {op for op in of.READ_TABLE.entries.values() if op is not None and not isinstance(op, Refusal)}
    assert ops == {op for op, (reader, _) in of._READERS.items() if reader is not None}


def test_lava_tables_map_every_kind_the_same_in_float_and_fixed():
    from snncompile.targets.lava.plan import LAVA_FIXED, LAVA_FLOAT

    assert LAVA_FLOAT.entries == LAVA_FIXED.entries
    assert {m.latency for m in LAVA_FLOAT.entries.values() if not isinstance(m, Refusal)} == {0, 1}
