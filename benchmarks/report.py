"""results.json (everything measured) and results.md (the tables for README's "Performance")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _f(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return fmt.format(value)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    flags = ", ".join(m["cpu_flags"]) or "no AVX"
    load = " / ".join(", ".join(f"{x:.1f}" for x in m.get(k, [])) for k in ("load_average_at_start",
                                                                          "load_average_at_end"))
    return [f"Machine: {m['cpu']} ({m['logical_cores']} logical cores; {flags}), torch intra-op threads: "
            f"{m['threads']}, torch {m['torch']}, Python {m['python']}. Mode: {results['mode']}; load "
            f"average (1, 5, 15 min) at start / end {load}; run took {results['elapsed_s'] / 60:.1f} min.",
            "", *_load_note(m)]


def _load_note(m: dict[str, Any]) -> list[str]:
    loads = [*m.get("load_average_at_start", [])[:1], *m.get("load_average_at_end", [])[:1]]
    if not loads or max(loads) <= (m.get("logical_cores") or 1):
        return []
    return ["Other jobs shared the machine during this run (load average above the core count), so "
            "absolute times are inflated and vary; the ratios, measured close together (a training step "
            "alternating with its GEMM replay, attention kinds side by side per length, inference kinds "
            "interleaved batch by batch), are the numbers to compare.", ""]


def _train_step(sec: dict[str, Any]) -> list[str]:
    cfg = sec["config"]
    lines = [f"### Training step (ETTh1 default: seq {cfg['seq_len']}/{cfg['label_len']}/{cfg['pred_len']}, "
             f"d_model {cfg['d_model']}, batch {cfg['batch']}; batches: {sec['batches']})", ""]
    rows = []
    for attn, r in sec["kinds"].items():
        lim = r["limit"]
        rows.append([attn, _f(r["step"]["median_s"], "{:.3f}"), _f(r["step"]["min_s"], "{:.3f}"),
                     _f(r["flops_per_step"] / 1e9, "{:.1f}"), _f(r["gflops_per_s"], "{:.1f}"),
                     _f(lim["gemm_conv"]["median_s"], "{:.3f}"), _f(r["step_vs_limit"]),
                     _f(r["step_vs_limit_best"])])
    lines += _table(["attn", "step s (median)", "step s (min)", "GFLOP/step", "GFLOP/s",
                     "GEMM+conv limit s", "step / limit", "min / min"], rows)
    return [*lines, _official(sec.get("official", {})), ""]


def _official(official: dict[str, Any]) -> str:
    if "vs_ours" not in official:
        return f"Official Informer2020 training step: not available ({official.get('not_available', '-')})."
    return ("Official Informer2020 training step (prob, paper default ETTh1 config, random batches), "
            f"timed in this run: {official['median_s']:.3f} s median, {official['min_s']:.3f} s min, "
            f"**{official['vs_ours']:.2f}x** our prob step.")


def _attention(sec: dict[str, Any]) -> list[str]:
    cfg = sec["config"]
    pts = sec["points"]
    kinds = list(pts)
    lengths = sorted({int(k) for p in pts.values() for k in p})
    lines = [f"### Attention layer, forward + backward (batch {cfg['batch']}, d_model {cfg['d_model']}, "
             f"{cfg['n_heads']} heads): median ms / peak tensor memory MiB (peak RSS growth MiB)", ""]
    rows = []
    for length in lengths:
        row = [str(length)]
        for kind in kinds:
            p = pts[kind].get(str(length), {})
            row.append(f"{p['time']['median_s'] * 1e3:.1f} / {_f(p.get('peak_tensor_mib'), '{:.0f}')} "
                       f"({p['peak_growth_mib']:.0f})" if "time" in p
                       else ("skipped" if "skipped" in p else "failed" if p else "-"))
        rows.append(row)
    lines += _table(["L", *kinds], rows)
    exps = sec.get("exponents", {})
    lines += ["Fitted exponents (time, tensor memory, RSS): " + "; ".join(
        f"{k} {_f(v.get('time'))}, {_f(v.get('memory'))}, {_f(v.get('rss'))}" for k, v in exps.items()), ""]
    return lines


def _long(sec: dict[str, Any]) -> list[str]:
    cfg = sec["config"]
    lines = [f"### Long input, full-model training step (batch {cfg['batch']}, label_len = seq_len / 2, "
             f"pred_len {cfg['pred_len']})", ""]
    rows = []
    for seq_len, kinds in sec["points"].items():
        for attn, p in kinds.items():
            rows.append([seq_len, attn, _f(p["time"]["median_s"]) if "time" in p else p.get("error", "-"),
                         _f(p.get("peak_growth_mib"), "{:.0f}")])
    return lines + _table(["seq_len", "attn", "s/step", "peak growth MiB"], rows)


def _inference(sec: dict[str, Any]) -> list[str]:
    tp = sec["throughput"]
    lines = [f"### Inference ({tp['source']})", ""]
    rows = [[attn, batch, _f(r["windows_per_s"], "{:.0f}")]
            for attn, per in tp["kinds"].items() for batch, r in per.items()]
    lines += _table(["attn", "batch", "windows/s"], rows)
    lat = sec["forecast_latency"]
    inproc = lat.get("in_process", {})
    lines += _table(["forecast latency (default-size checkpoint)", "seconds"], [
        ["`scripts/forecast.py` process, CSV only (median)", _f(lat["process_csv_only"].get("median_s"))],
        ["`scripts/forecast.py` process, CSV + PNG (median)",
         _f(lat.get("process_with_plot", {}).get("median_s"))],
        ["in-process load (Forecaster.from_checkpoint)", _f(inproc.get("load_s"), "{:.3f}")],
        ["in-process forecast (median)", _f((inproc.get("predict_ms_median") or 0) / 1e3 or None, "{:.3f}")],
        ["network forward alone (median)", _f((inproc.get("model_ms_median") or 0) / 1e3 or None, "{:.3f}")],
    ])
    bt = sec.get("backtest")
    if bt:
        took = _f(bt["seconds"], "{:.1f}")
        lines += ["", f"Rolling-origin backtest (`scripts/backtest.py`'s engine, stride 1): {bt['origins']} "
                      f"hourly origins ({bt['first_origin']} to {bt['last_origin']}) in {took} s, "
                      f"{_f(bt['origins_per_s'], '{:.0f}')} origins/s.", ""]
    return lines


def _epoch(sec: dict[str, Any]) -> list[str]:
    if "skipped" in sec:
        return [f"### Epoch time: skipped ({sec['skipped']})", ""]
    p = sec["parts"]
    lines = [f"### Epoch time (ETTh1, prob; train extrapolated from {p['train']['measured_steps']} of "
             f"{p['train']['steps_per_epoch']} steps, evaluations from {p['val']['measured_windows']} of "
             f"{p['val']['windows']} windows)", ""]
    rows = [[name, _f(part["seconds"], "{:.1f}")] for name, part in p.items()]
    rows += [[f"epoch: {k}", _f(v, "{:.1f}")] for k, v in sec["epoch_seconds"].items()]
    if "official_estimate" not in sec["epoch_seconds"]:
        rows.append(["epoch: official_estimate", "not available (official step not measured)"])
    return lines + _table(["part", "seconds"], rows)


def _ddp(sec: dict[str, Any]) -> list[str]:
    lines = [f"### Data-parallel scaling on CPU (global batch {sec['global_batch']}, {sec['data']})", ""]
    rows = [[name, _f(run.get("windows_per_s"), "{:.1f}")] for name, run in sec["runs"].items()]
    rows += [[name, _f(sec[name])] for name in ("efficiency_equal_cores", "efficiency_classic")]
    return lines + _table(["processes x threads", "windows/s"], rows)


def _goals(goals: dict[str, Any]) -> list[str]:
    rows = [[name, _f(g["value"]), g["target"], _f(g["met"]) if g["value"] is not None else "not measured"]
            for name, g in goals.items()]
    return ["### Goals (ratios from this run)", "", *_table(["goal", "value", "target", "met"], rows)]


SECTION_WRITERS = {"train_step": _train_step, "attention_scaling": _attention, "long_input": _long,
                   "inference": _inference, "epoch": _epoch, "ddp_scaling": _ddp}


def markdown(results: dict[str, Any]) -> str:
    lines = ["## Performance", "", *_machine(results)]
    for name, writer in SECTION_WRITERS.items():
        sec = results["sections"].get(name)
        if sec is None:
            continue
        if "error" in sec:
            lines += [f"### {name}: failed ({sec['error']})", ""]
            continue
        lines += writer(sec)
    lines += _goals(results["goals"])
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path
