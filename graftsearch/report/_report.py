"""``report.md`` of a run, rebuilt from the run directory's files alone.

Reads ``config.json``, ``evaluations.csv``, ``pareto.csv``, ``convergence.csv`` (and
``taps.csv``, ``refined.csv`` and ``best/metrics.json`` when present) and writes ``report.md``,
``pareto.png`` and ``convergence.png`` beside them. The same files give the same report, byte for
byte. Every accuracy shown is named by its source (proxy val, refined val, final val, final test;
``_utils/labels.py``).
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence

from graftsearch._utils.atomic import write_text
from graftsearch._utils.errors import ParameterError
from graftsearch.graft._record import DonorMetrics, FinalMetrics, read_metrics
from graftsearch.optimize._result import feasible_mask, order_front, order_rows
from graftsearch.optimize._runfiles import (CONFIG, CONVERGENCE, EVALUATIONS, PARETO, TAPS,
                                            SavedRun, load_run, parse_bool)
from graftsearch.report._plots import plot_convergence, plot_pareto

if TYPE_CHECKING:  # pandas is imported when a report is read, not with the package
    import pandas as pd

REPORT, PARETO_PNG, CONVERGENCE_PNG = "report.md", "pareto.png", "convergence.png"


# ---------------------------------------------------------------------------------------------
# the pick, the constraint


def pick_best(pareto: pd.DataFrame, objective: str, size_metric: str = "params",
              pick: str = "best") -> Optional[pd.Series]:
    """The search's best pick from a front (see :func:`order_front`); None when nothing is
    feasible."""
    order = order_front(pareto, objective, size_metric, pick)
    return order.iloc[0] if len(order) else None


def size_limit(value: Any, size_metric: str) -> Optional[float]:
    """``size_max`` in the units of ``size_metric`` ("2M", "1934665", "7.5MiB", 7.38), as the
    search reads it; None when absent or unreadable (the plot then has no limit line)."""
    from graftsearch.optimize._settings import parse_size

    if value is None:
        return None
    try:
        return parse_size(value, size_metric)
    except ParameterError:
        return None


# ---------------------------------------------------------------------------------------------
# formatting


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_int(v: Any) -> str:
    return "n/a" if _is_missing(v) else f"{int(round(float(v))):,}"


def fmt_pct(v: Any) -> str:
    return "n/a" if _is_missing(v) else f"{100 * float(v):.2f}%"


def fmt_float(v: Any, digits: int = 4) -> str:
    return "n/a" if _is_missing(v) else f"{float(v):.{digits}f}"


def fmt_mib(v: Any) -> str:
    return "n/a" if _is_missing(v) else f"{float(v):.2f}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: Optional[str] = None) -> str:
    """A GitHub markdown table; ``align`` is one of l/r per column (default: first left)."""
    align = align or ("l" + "r" * (len(header) - 1))
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def _settings_rows(config: Mapping[str, Any], prefix: str = "") -> List[List[str]]:
    rows: List[List[str]] = []
    for key in sorted(config):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _settings_rows(value, name + ".")
        elif isinstance(value, list) and len(value) > 8:
            rows.append([f"`{name}`", f"{len(value)} items"])
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            rows.append([f"`{name}`", text if len(text) <= 80 else text[:77] + "..."])
    return rows


# ---------------------------------------------------------------------------------------------
# sections


def _section_result(m: Optional[FinalMetrics], best: Optional[pd.Series], source: str,
                    searched: Optional[Mapping[str, Any]] = None) -> List[str]:
    """``source`` names the front's accuracies; ``searched`` is the chosen model's row of the
    front (its accuracy in the search, beside the trained graft's)."""
    from graftsearch._utils import labels as L

    out = ["## Result", ""]
    if m is not None:
        g = m.graft
        in_search = (f" ({L.accuracy(source)} {fmt_pct(searched['val_accuracy'])} in the search)"
                     if searched is not None else "")
        out.append(f"Chosen model: taps **{m.taps or ''}** "
                   f"({', '.join(m.tap_names or [])}), {fmt_int(g.params)} parameters, "
                   f"{fmt_mib(g.size_mib)} MiB, {L.accuracy(L.FINAL_VAL)} "
                   f"{fmt_pct((g.val or {}).get('accuracy'))}, {L.accuracy(L.FINAL_TEST)} "
                   f"{fmt_pct((g.test or {}).get('accuracy'))}{in_search}.")
    elif best is not None:
        out.append(f"Best pick of the search (not yet trained and tested): taps **{best['taps']}**, "
                   f"{fmt_int(best['params'])} parameters, {fmt_mib(best['size_mib'])} MiB, "
                   f"{L.accuracy(source)} {fmt_pct(best['val_accuracy'])}.")
    else:
        out.append("No feasible selection was found; the front below holds the least-violating "
                   "selections. Relax the constraint (p_min or size_max) and resume.")
    return out + [""]


def _section_donor_vs_graft(m: FinalMetrics) -> List[str]:
    from graftsearch._utils import labels as L

    d, g = m.donor, m.graft
    dv, dt = d.val or {}, d.test or {}
    gv, gt = g.val or {}, g.test or {}
    rows = [
        ["Total parameters", fmt_int(d.params), fmt_int(g.params),
         fmt_int(d.params - g.params) if d.params and g.params else "n/a"],
        ["Model size (MiB)", fmt_mib(d.size_mib), fmt_mib(g.size_mib),
         fmt_mib(d.size_mib - g.size_mib) if d.size_mib and g.size_mib else "n/a"],
        [L.accuracy(L.FINAL_VAL), fmt_pct(dv.get("accuracy")), fmt_pct(gv.get("accuracy")), ""],
        [L.loss(L.FINAL_VAL), fmt_float(dv.get("loss")), fmt_float(gv.get("loss")), ""],
        [L.accuracy(L.FINAL_TEST), fmt_pct(dt.get("accuracy")), fmt_pct(gt.get("accuracy")), ""],
        [L.loss(L.FINAL_TEST), fmt_float(dt.get("loss")), fmt_float(gt.get("loss")), ""],
    ]
    out = ["## Donor vs rootstock", "",
           table(["Metric", f"Donor ({d.name or 'donor'})", "Rootstock (graft)",
                  "Absolute reduction"], rows), ""]
    red = m.size_reduction
    if red.factor:
        out.append(f"The rootstock is **{red.factor:.2f}x smaller** than the donor "
                   f"({red.percent:.2f}% fewer parameters).")
    if d.note:
        out.append(f"Donor accuracy: {d.note}")
    return out + [""]


_VARIANT_NAMES = {"head_only": "head only (trunk as the donor's)",
                  "fine_tuned": "fine-tuned end to end", "distilled": "fine-tuned + distilled"}


def _section_variants(m: FinalMetrics) -> List[str]:
    """How the pick was trained: head only, fine-tuned, fine-tuned with distillation."""
    from graftsearch._utils import labels as L

    variants = m.graft.variants or {}
    if len(variants) < 2:
        return []
    rows = []
    for key, label in _VARIANT_NAMES.items():
        v = variants.get(key)
        if v is None:
            continue
        rows.append([label + (" **(kept)**" if key == m.graft.variant else ""),
                     fmt_pct((v.get("val") or {}).get("accuracy")),
                     fmt_pct((v.get("test") or {}).get("accuracy")),
                     str(v.get("best_epoch") or "") if key != "head_only" else ""])
    out = ["## Training the pick", "",
           table(["Graft", L.accuracy(L.FINAL_VAL), L.accuracy(L.FINAL_TEST), "Best epoch"], rows),
           "", f"The kept graft is the one with the best {L.accuracy(L.FINAL_VAL)}; the test "
           "split decides nothing."]
    if m.graft.distill_note:
        out.append(f"Distillation: {m.graft.distill_note}")
    return out + [""]


def _section_test_metrics(m: FinalMetrics) -> List[str]:
    from graftsearch._utils import labels as L

    gt, dt = m.graft.test or {}, m.donor.test or {}
    keys = [("accuracy", L.accuracy(L.FINAL_TEST), fmt_pct), ("loss", "Loss (cross-entropy)", fmt_float),
            ("precision_macro", "Precision (macro)", fmt_pct),
            ("recall_macro", "Recall (macro)", fmt_pct), ("f1_macro", "F1 (macro)", fmt_pct),
            ("precision_weighted", "Precision (weighted)", fmt_pct),
            ("recall_weighted", "Recall (weighted)", fmt_pct),
            ("f1_weighted", "F1 (weighted)", fmt_pct),
            ("roc_auc_macro", "ROC AUC (one-vs-rest, macro)", lambda v: fmt_float(v, 4))]
    rows = [[label, f(gt.get(k)), f(dt.get(k)) if dt else "n/a"] for k, label, f in keys]
    out = ["## Test metrics", "",
           f"On the test split ({fmt_int(gt.get('n'))} images), never seen by the search or the "
           "training.", "", table(["Metric", "Rootstock", "Donor"], rows), ""]
    per_class = m.graft.per_class or []
    if per_class:
        out += ["### Per class (rootstock)", "",
                table(["Class", "Precision", "Recall", "F1", "ROC AUC", "Support"],
                      [[r["class"], fmt_pct(r["precision"]), fmt_pct(r["recall"]), fmt_pct(r["f1"]),
                        fmt_float(r.get("roc_auc")), fmt_int(r["support"])] for r in per_class]), ""]
    confusion = m.graft.confusion
    names = m.class_names or [r["class"] for r in per_class]
    if confusion and names:
        out += ["### Confusion matrix (rootstock; rows: true class, columns: predicted)", "",
                table(["true \\ predicted"] + list(names),
                      [[n] + list(row) for n, row in zip(names, confusion)]), ""]
    return out


def _section_deployment(m: FinalMetrics) -> List[str]:
    from graftsearch._utils import labels as L

    lat, mem, q = m.latency, m.memory, m.int8
    if not (lat or mem or q):
        return []
    out = ["## Deployment cost", ""]
    if lat:
        g, d = lat.get("graft") or {}, lat.get("donor") or {}
        rows = [["Latency per image, median (ms)", fmt_float(g.get("median_ms"), 2),
                 fmt_float(d.get("median_ms"), 2)],
                ["Latency per image, p90 (ms)", fmt_float(g.get("p90_ms"), 2),
                 fmt_float(d.get("p90_ms"), 2)]]
        if mem:
            mg, md = mem.get("graft") or {}, mem.get("donor") or {}
            rows += [["Resident memory after loading (MiB)", fmt_mib(mg.get("loaded_mib")),
                      fmt_mib(md.get("loaded_mib"))],
                     ["Peak resident memory at inference (MiB)", fmt_mib(mg.get("peak_mib")),
                      fmt_mib(md.get("peak_mib"))]]
        out += [table(["", "Rootstock", "Donor"], rows), ""]
        out.append(f"CPU, batch 1, {g.get('runs')} timed runs after {g.get('warmup')} warm-up "
                   f"runs, {g.get('threads')} torch thread(s), models interleaved run by run."
                   + (f" The donor takes {lat['ratio']:.2f}x as long." if lat.get("ratio") else "")
                   + (" Memory: growth of a fresh process's resident set (TorchScript copy, "
                      "plain torch)." if mem else ""))
        out.append("")
    if q:
        if q.get("error"):
            out += [f"int8 quantisation: not available ({q['error']}).", ""]
        else:
            rows = [["Serialized size (MiB)", fmt_mib(q.get("float32_mib")), fmt_mib(q.get("int8_mib"))]]
            if q.get("file_mib") is not None:
                rows.append(["TorchScript file (MiB)", fmt_mib(q.get("float32_file_mib")),
                             fmt_mib(q.get("file_mib"))])
            rows += [[L.accuracy(L.FINAL_VAL), fmt_pct(q.get("float32_val_accuracy")),
                      fmt_pct(q.get("int8_val_accuracy"))],
                     [L.accuracy(L.FINAL_TEST), fmt_pct(q.get("float32_test_accuracy")),
                      fmt_pct(q.get("int8_test_accuracy"))]]
            if q.get("int8_latency_ms") is not None:
                rows.append(["Latency per image, median (ms)", fmt_float(q.get("float32_latency_ms"), 2),
                             fmt_float(q.get("int8_latency_ms"), 2)])
            tried = ", ".join(
                f"{c['engine']}/{c['observer']}"
                + (f" with {', '.join(c['float_layers'])} in float32" if c.get("float_layers") else "")
                + f" {fmt_pct(c.get('val_accuracy'))}" for c in q.get("ptq_candidates") or [])
            floats = q.get("float_layers") or []
            how = ("quantisation-aware fine-tuning" if q.get("method") == "qat"
                   else "post-training static quantisation")
            text = (f"{how[0].upper()}{how[1:]} with torch.ao ({q.get('engine', '')} engine, "
                    f"per-channel weights), calibrated on {fmt_int(q.get('calibration_images'))} "
                    "training images"
                    + (f"; {', '.join(floats)} kept in float32" if floats else "")
                    + (f". Post-training candidates on {L.accuracy(L.FINAL_VAL)}: {tried}"
                       if tried else ""))
            if q.get("qat_val_accuracy") is not None:
                text += (f". Quantisation-aware fine-tuning ({fmt_int(q.get('qat_epochs'))} epochs) "
                         f"reached {fmt_pct(q['qat_val_accuracy'])} on {L.accuracy(L.FINAL_VAL)}")
            if q.get("qat_note"):
                text += f". Quantisation-aware fine-tuning: {q['qat_note']}"
            for key, what in (("qat_error", "Quantisation-aware fine-tuning failed"),
                              ("export_error", "The int8 file was not written"),
                              ("latency_error", "Its latency could not be measured")):
                if q.get(key):
                    text += f". {what}: {q[key]}"
            if q.get("file"):
                text += f". The int8 model is `best/{q['file']}` (TorchScript; runs with torch alone)"
            out += ["### int8 copy (beyond the paper)", "",
                    table(["", "float32", "int8"], rows), "", text + ".", ""]
    return out


def front_header(source: str, int8: bool = False) -> List[str]:
    """The columns of report.md's front table: the front's accuracy with its standard error
    (``± SE`` in points, when the fitness gave one); a refined front also shows each selection's
    proxy val accuracy (from evaluations.csv); ``int8`` adds the int8 MiB (size_metric int8_mib)."""
    from graftsearch._utils import labels as L

    header = (["Taps", "n", "Params", "MiB"] + (["int8 MiB"] if int8 else [])
              + ["MACs", L.accuracy(source), L.loss(source)])
    if source != L.PROXY_VAL:
        header.append(L.accuracy(L.PROXY_VAL))
    return header + ["Feasible"]


def _front_rows(run: SavedRun, chosen_bits: Optional[str], source: str,
                int8: bool = False) -> List[List[str]]:
    from graftsearch._utils import labels as L

    front = order_rows(run.pareto, run.objective, run.size_metric, run.pick)
    proxy: Dict[str, Any] = {}
    if source != L.PROXY_VAL and len(run.evaluations):
        proxy = dict(zip(run.evaluations["bits"].astype(str), run.evaluations["val_accuracy"]))
    rows = []
    for _, r in front.iterrows():
        mark = " (chosen)" if chosen_bits is not None and r["bits"] == chosen_bits else ""
        row = [f"{r['taps']}{mark}", fmt_int(r["n_taps"]), fmt_int(r["params"]),
               fmt_mib(r["size_mib"])] + ([fmt_mib(r.get("int8_mib"))] if int8 else []) + [
               fmt_int(r["macs"]),
               fmt_pct(r["val_accuracy"]) + ("" if _is_missing(r.get("val_accuracy_se")) else
                                             f" ± {100 * float(r['val_accuracy_se']):.2f}"),
               fmt_float(r.get("val_loss"))]
        if source != L.PROXY_VAL:
            row.append(fmt_pct(proxy.get(str(r["bits"]))))
        rows.append(row + ["yes" if parse_bool(r["feasible"]) else "no"])
    return rows


def read_refined(run: SavedRun) -> Optional[pd.DataFrame]:
    """refined.csv of the run (the front re-evaluated by the refining fitness), or None."""
    from graftsearch.optimize._runfiles import read_records

    path = run.files.refined
    return read_records(path) if path.is_file() else None


def front_source(run: SavedRun, refined: Optional[pd.DataFrame]) -> str:
    """The source of pareto.csv's accuracies: refined val when the run refined its front (the
    final pareto.csv is then refined.csv's front, and the pick is made from it), proxy val while
    the search runs or when nothing refined it (a refined.csv left from before a resumed, longer
    search does not hold the front's values)."""
    import numpy as np

    from graftsearch._utils import labels as L

    if refined is None or not len(refined):
        return L.PROXY_VAL
    if not len(run.pareto):
        return L.REFINED_VAL
    values = dict(zip(refined["bits"].astype(str), refined["val_accuracy"].astype(float)))
    for bits, acc in zip(run.pareto["bits"].astype(str), run.pareto["val_accuracy"].astype(float)):
        if bits not in values or not (np.isclose(values[bits], acc)
                                      or (np.isnan(values[bits]) and np.isnan(acc))):
            return L.PROXY_VAL
    return L.REFINED_VAL


def _front_row(run: SavedRun, bits: Optional[str]) -> Optional[Dict[str, Any]]:
    if bits is None or not len(run.pareto):
        return None
    match = run.pareto[run.pareto["bits"].astype(str) == str(bits)]
    return match.iloc[0].to_dict() if len(match) else None


def render_report(run: SavedRun, metrics: Optional[FinalMetrics] = None) -> str:
    """report.md of a run read by :func:`load_run`, with ``metrics`` (best/metrics.json) when the
    final model was trained."""
    from graftsearch._utils import labels as L

    best = pick_best(run.pareto, run.objective, run.size_metric, run.pick)
    source = front_source(run, read_refined(run))
    objective = run.objective
    p_min = run.setting("p_min")
    size_max = run.setting("size_max")
    constraint = (f"P >= p_min = {p_min}" if objective == "min-size"
                  else f"{run.size_metric} <= size_max = {size_max}")
    donor = run.setting("donor")
    donor_name = donor.get("name") if isinstance(donor, Mapping) else donor
    n_eval = len(run.evaluations)
    n_feasible = int(feasible_mask(run.evaluations).sum()) if n_eval else 0
    generations = (int(run.convergence["generation"].max()) if len(run.convergence) else 0)
    lines = [f"# Knowledge grafting report: {run.root.name}", "",
             f"Objective **{objective}** ({constraint}), donor **{donor_name or 'n/a'}**, "
             f"size metric `{run.size_metric}`. {n_eval} distinct selections evaluated "
             f"({n_feasible} feasible) up to generation {generations}.", ""]
    chosen_bits = (metrics.bits if metrics is not None else None) or (
        best["bits"] if best is not None else None)
    lines += _section_result(metrics, best, source, _front_row(run, chosen_bits))
    if metrics is not None:
        lines += _section_donor_vs_graft(metrics)
        lines += _section_variants(metrics)
        lines += _section_test_metrics(metrics)
        lines += _section_deployment(metrics)
    lines += ["## Pareto front", "",
              f"Feasible non-dominated selections ({L.accuracy(source)} vs {run.size_metric})."
              + (f" The {L.accuracy(L.PROXY_VAL)} column is the same selection in the search."
                 if source != L.PROXY_VAL else ""), ""]
    int8 = run.size_metric == "int8_mib"
    rows = _front_rows(run, chosen_bits, source, int8)
    lines += [table(front_header(source, int8), rows) if rows else "The front is empty.", "",
              f"![Pareto front]({PARETO_PNG})", "", "## Convergence", "",
              f"![Convergence]({CONVERGENCE_PNG})", ""]
    if len(run.convergence):
        last = run.convergence.iloc[-1]
        lines += [f"Last generation {int(last['generation'])}: hypervolume "
                  f"{fmt_float(last['hypervolume'], 6)}, best feasible {L.accuracy(L.PROXY_VAL)} "
                  f"{fmt_pct(last['best_val_accuracy'])}.", ""]
    lines += ["## Settings", ""]
    lines += ([table(["Setting", "Value"], _settings_rows(run.config), align="ll"), ""] if run.config else
              ["No config.json in the run directory (a search run through the Python API); the "
               "objective is taken as min-size.", ""])
    files = [CONFIG, TAPS, EVALUATIONS, PARETO, run.files.refined.name, CONVERGENCE]
    best_dir = run.files.best
    if best_dir.is_dir():
        files += [f"{best_dir.name}/{p.name}" for p in sorted(best_dir.iterdir()) if p.is_file()
                  and not p.name.startswith(".")]
    lines += ["## Files", ""] + [f"- `{f}`" for f in files if (run.root / f).exists()] + [""]
    lines += [f"Regenerate this report with `graftsearch report {shlex.quote(_given_path(run))}`.",
              ""]
    return "\n".join(lines)


def _given_path(run: SavedRun) -> str:
    """The run directory as the run was given it (relative to where it started, or absolute),
    so the command pastes where the run was started; config.json keeps it, which keeps the report
    a function of the run's files."""
    settings = run.config.get("settings") if isinstance(run.config, dict) else None
    given = settings.get("run_dir") if isinstance(settings, dict) else None
    return str(given) if given else str(run.root)


def _donor_point(metrics: Optional[FinalMetrics]) -> Optional[Dict[str, Any]]:
    if metrics is None or metrics.donor == DonorMetrics():
        return None
    d = metrics.donor
    return {"params": d.params, "size_mib": d.size_mib, "macs": d.macs,
            "val_accuracy": (d.val or {}).get("accuracy")}


def _graft_point(metrics: Optional[FinalMetrics]) -> Optional[Dict[str, Any]]:
    if metrics is None:
        return None
    g = metrics.graft
    return {"params": g.params, "size_mib": g.size_mib, "macs": g.macs,
            "val": (g.val or {}).get("accuracy"), "test": (g.test or {}).get("accuracy")}


def report_points(run: SavedRun, metrics: Optional[FinalMetrics] = None):
    """What pareto.png draws (:class:`~graftsearch.report._plots.ParetoPoints`): the front and
    the chosen model on one footing, the chosen model at its row of the front."""
    from graftsearch.report._plots import pareto_points

    refined = read_refined(run)
    best = pick_best(run.pareto, run.objective, run.size_metric, run.pick)
    chosen_bits = (metrics.bits if metrics is not None else None) or (
        str(best["bits"]) if best is not None else None)
    return pareto_points(run.evaluations, run.pareto, size_metric=run.size_metric,
                         front_source=front_source(run, refined), refined=refined,
                         chosen_bits=chosen_bits, graft=_graft_point(metrics),
                         donor=_donor_point(metrics))


def write_report(run_dir) -> Path:
    """Write ``report.md``, ``pareto.png`` and ``convergence.png`` into ``run_dir``; return the
    report's path. Uses only the files in the run directory."""
    run = load_run(run_dir)
    metrics = read_metrics(run.root)
    objective = run.objective
    p_min = run.setting("p_min") if objective == "min-size" else None
    size_max = (size_limit(run.setting("size_max"), run.size_metric)
                if objective == "max-accuracy" else None)
    plot_pareto(report_points(run, metrics), run.root / PARETO_PNG, objective=objective,
                p_min=float(p_min) if p_min is not None else None, size_max=size_max)
    plot_convergence(run.convergence, run.root / CONVERGENCE_PNG, size_metric=run.size_metric)
    path = run.root / REPORT
    write_text(path, render_report(run, metrics))
    return path
