"""``snncompile ops [--json | --markdown]``: which node kind each stage and backend supports.

The matrix comes from the stages' declared tables (``snncompile.ir.kinds``); the README's
"Node kinds by stage" block is this command's ``--markdown`` output."""
from __future__ import annotations

import json

import click

from snncompile.commands._common import reports_errors


def _table(rows: dict[str, dict[str, str]], first: str, notes: list[str]) -> list[list[str]]:
    """Rows of cells: "yes", "no [n]" (reason n appended to ``notes``), "MISSING" (no entry)."""
    columns = list(next(iter(rows.values())))
    out = [[first] + columns]
    for kind, row in rows.items():
        cells = [kind]
        for status in row.values():
            if status.startswith("no: "):
                reason = status[4:]
                if reason not in notes:
                    notes.append(reason)
                status = f"no [{notes.index(reason) + 1}]"
            cells.append(status or "MISSING")
        out.append(cells)
    return out


def tables(matrix: dict[str, dict[str, str]]):
    """(stage table, backend table, notes) shared by the text and Markdown renderings."""
    from snncompile.ir.kinds import backend_matrix

    notes: list[str] = []
    return (_table(matrix, "kind", notes), _table(backend_matrix(matrix), "kind", notes), notes)


def markdown(matrix: dict[str, dict[str, str]]) -> str:
    stages, backends, notes = tables(matrix)

    def md(rows):
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]

    out = ["Per stage:", ""] + md(stages) + ["", "Per backend and precision:", ""] + md(backends)
    out += [""] + [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(out) + "\n"


def text(matrix: dict[str, dict[str, str]]) -> str:
    stages, backends, notes = tables(matrix)

    def aligned(rows):
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]

    out = aligned(stages) + [""] + aligned(backends)
    out += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(out) + "\n"


@click.command("ops")
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as JSON (kind -> stage -> status).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print Markdown tables (the README's block).")
@reports_errors
def command(as_json, as_markdown):
    """Show which node kinds each stage and backend implements, and why the others refuse."""
    from snncompile.errors import SnnCompileError
    from snncompile.ir.kinds import backend_matrix, support_matrix

    if as_json and as_markdown:
        raise SnnCompileError("--json and --markdown print different formats; choose one")
    matrix = support_matrix()
    if as_json:
        click.echo(json.dumps({"stages": matrix, "backends": backend_matrix(matrix)}, indent=2))
    elif as_markdown:
        click.echo(markdown(matrix), nl=False)
    else:
        click.echo(text(matrix), nl=False)
