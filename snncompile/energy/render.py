"""Text renderings of an EnergyReport: Markdown tables and the terminal summary."""
from __future__ import annotations


def fmt_num(v) -> str:
    """Counts with thousands separators, small values with 4 significant digits."""
    if v is None:
        return "-"
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.1f}"
    return f"{v:.4g}"


def fmt_energy(j) -> str:
    """Joules in the unit that reads best (mJ, uJ, nJ, pJ)."""
    if j is None:
        return "-"
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9)):
        if abs(j) >= scale:
            return f"{j / scale:.4g} {unit}"
    return f"{j / 1e-12:.4g} pJ"


def fmt_rate(r) -> str:
    return "-" if r is None else f"{100 * r:.2f}%"


def constants_line(model: dict) -> str:
    parts = [f"MAC {model['mac_pj']} pJ", f"AC/SOP {model['ac_pj']} pJ"]
    if model.get("neuron_update_pj"):
        parts.append(f"neuron update {model['neuron_update_pj']} pJ")
    if model.get("spike_pj"):
        parts.append(f"spike {model['spike_pj']} pJ")
    if "mask_pj" in model:
        parts.append(f"mask {model['mask_pj']} pJ, reduce {model['reduce_pj']} pJ, "
                     f"scale {model['scale_pj']} pJ")
    mem = model.get("memory")
    if mem:
        pts = ", ".join(f"{b / 1024:g} KB: {p:g} pJ/B" for b, p in mem["sram_pj_per_byte"] if b)
        parts.append(f"memory: add {mem['add_pj']} pJ, mult {mem['mult_pj']} pJ, "
                     f"{mem['weight_bytes']:g}-byte weights, {mem['state_bytes']:g}-byte states, SRAM {pts}")
    return "; ".join(parts)


LAYER_COLUMNS = ("layer", "kind", "input", "events/sample", "SOPs/sample", "MACs/sample",
                 "other ops/sample", "firing rate", "energy/sample")


def layer_cells(layer) -> list[str]:
    other = f"{fmt_num(layer.ops_per_sample)} ({layer.op_class})" if layer.op_class else "-"
    return [layer.name, layer.kind, layer.input_kind or "-", fmt_num(layer.input_events_per_sample),
            fmt_num(layer.synops_per_sample), fmt_num(layer.macs_per_sample), other,
            fmt_rate(layer.firing_rate), fmt_energy(layer.energy_per_sample_j)]


def short_convention(conv: dict) -> str:
    return f"{conv['name']} (first layer {conv['first_layer']}, non-binary {conv['nonbinary']})"


def summary_rows(report) -> list[tuple[str, str]]:
    s = report.summary
    ratio = s["snn_ann_energy_ratio"]
    return [
        ("graph", f"{s['graph']} ({s['n_samples']} samples, T={s['timesteps']})"),
        ("run", f"backend {s['backend']}, precision {s['precision']}, counts from {s['counts_from']}"),
        ("convention", short_convention(report.convention)),
        ("energy model", f"{report.energy_model['name']}: {constants_line(report.energy_model)}"),
        ("SOPs / sample", fmt_num(s["synops_per_sample"])),
        ("  of spike inputs (SynOpCounter's scope)", fmt_num(s["spike_synops_per_sample"])),
        ("  of integer spike sums", fmt_num(s["count_synops_per_sample"])),
        ("mask / reduce / scale ops", " / ".join(fmt_num(v) for v in s["ops_per_sample_by_class"].values())),
        ("MACs / sample", fmt_num(s["macs_per_sample"])),
        ("neuron updates / sample", fmt_num(s["neuron_updates_per_sample"])),
        ("spikes / sample", fmt_num(s["spikes_per_sample"])),
        ("mean firing rate", fmt_rate(s["mean_firing_rate"])),
        ("SOPs per synapse", fmt_num(s["synops_per_synapse"])),
        ("energy / sample", fmt_energy(s["energy_per_sample_j"])),
        ("ANN baseline / sample", f"{fmt_energy(s['ann_energy_per_sample_j'])} "
                                  f"({fmt_num(s['ann_macs_per_sample'])} MACs, "
                                  f"{fmt_num(s['ann_acs_per_sample'])} ACs)"),
        ("SNN / ANN energy", "-" if ratio is None else f"{ratio:.4g}"),
    ]


def _md_table(header, rows) -> list[str]:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return lines


def markdown(report) -> str:
    m = report.energy_model
    out = [f"# Energy report: {report.graph}", "",
           f"**Convention:** {report.convention['description']}", "",
           f"**Energy model:** `{m['name']}`: {m['description']}. Constants: {constants_line(m)}. "
           f"Source: {m['source']}.", "", "## Summary", ""]
    out += _md_table(("quantity", "value"), summary_rows(report))
    b = report.summary["energy_breakdown_j"]
    out += ["", "## Energy breakdown (per sample)", ""]
    out += _md_table(("part", "energy"), [(k, fmt_energy(v)) for k, v in b.items()])
    out += ["", "## Layers (per sample)", ""]
    out += _md_table(LAYER_COLUMNS, [layer_cells(layer) for layer in report.layers])
    steps = [layer for layer in report.layers if layer.firing_rate_per_step]
    if steps:
        T = len(steps[0].firing_rate_per_step)
        out += ["", "## Firing rate per time step", ""]
        out += _md_table(["layer"] + [f"t={t}" for t in range(T)],
                         [[layer.name] + [fmt_rate(r) for r in layer.firing_rate_per_step] for layer in steps])
    if report.chip is not None:
        from snncompile.chip.report import markdown_section
        out += [""] + markdown_section(report.chip)
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def terminal_summary(report) -> str:
    """A compact table for the terminal: the summary, then one line per layer."""
    rows = summary_rows(report)
    width = max(len(k) for k, _ in rows)
    out = [f"{k.ljust(width)}  {v}" for k, v in rows]
    cells = [list(LAYER_COLUMNS)] + [layer_cells(layer) for layer in report.layers]
    widths = [max(len(r[i]) for r in cells) for i in range(len(LAYER_COLUMNS))]
    out.append("")
    for r in cells:
        out.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)
