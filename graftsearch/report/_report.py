"""``report.md`` of a run, rebuilt from the run directory's files alone.

Reads ``config.json``, ``evaluations.csv``, ``pareto.csv``, ``convergence.csv`` (and
``taps.csv`` and ``best/metrics.json`` when present) and writes ``report.md``, ``pareto.png`` and
``convergence.png`` beside them. The same files give the same report, byte for byte.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence

from graftsearch._utils.atomic import write_text
from graftsearch._utils.errors import ParameterError, SearchError, param_message
from graftsearch.report._plots import plot_convergence, plot_pareto
from graftsearch.optimize._runfiles import parse_bool

if TYPE_CHECKING:  # pandas is imported when a report is read, not with the package
    import pandas as pd

REPORT, PARETO_PNG, CONVERGENCE_PNG = "report.md", "pareto.png", "convergence.png"
_STR_COLUMNS = {"bits": str, "taps": str}


@dataclass
class RunFiles:
    """The tables and settings of one run directory."""

    root: Path
    config: Dict[str, Any]
    evaluations: pd.DataFrame
    pareto: pd.DataFrame
    convergence: pd.DataFrame
    taps: Optional[pd.DataFrame]
    metrics: Optional[Dict[str, Any]]

    def setting(self, *keys: str, default: Any = None) -> Any:
        """The first of ``keys`` found anywhere in config.json (nested sections included)."""
        for key in keys:
            found = _find(self.config, key)
            if found is not None:
                return found
        return default

    @property
    def objective(self) -> str:
        return str(self.setting("objective", default="min-size"))

    @property
    def size_metric(self) -> str:
        metric = str(self.setting("size_metric", default="params"))
        return metric if metric in ("params", "size_mib", "macs") else "params"


def _find(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        if key in obj and obj[key] is not None:
            return obj[key]
        for value in obj.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _read_csv(path: Path, required: Sequence[str]) -> "pd.DataFrame":
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=_STR_COLUMNS, keep_default_na=True)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame(columns=list(required))
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SearchError(f"'{path}' lacks the column(s) {missing}; it was not written by a "
                          "graftsearch search. Rerun or resume the search to rewrite it.")
    return frame


EVAL_COLUMNS = ("bits", "taps", "n_taps", "params", "size_mib", "macs", "val_accuracy", "feasible")
CONVERGENCE_COLUMNS = ("generation", "hypervolume", "best_val_accuracy")


def load_run(run_dir) -> RunFiles:
    """Read the files ``graftsearch report`` needs, with a clear error for a missing one."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ParameterError(param_message("run_dir", "an existing run directory", str(root),
                                           "Pass the directory a `graftsearch run` wrote."))
    needed = ["evaluations.csv", "pareto.csv", "convergence.csv"]
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise SearchError(f"The run directory '{root}' lacks {', '.join(missing)}; a report needs "
                          "the files of a search that finished at least one generation. Resume "
                          f"it with `graftsearch resume {root}`.")
    config: Dict[str, Any] = {}
    if (root / "config.json").is_file():  # absent when the search ran through the Python API
        try:
            config = json.loads((root / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise SearchError(f"'{root / 'config.json'}' is not valid JSON ({exc}).") from exc
    metrics = None
    metrics_path = root / "best" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
    taps = (_read_csv(root / "taps.csv", ("index", "name")) if (root / "taps.csv").is_file()
            else None)
    return RunFiles(root=root, config=config,
                    evaluations=_read_csv(root / "evaluations.csv", EVAL_COLUMNS),
                    pareto=_read_csv(root / "pareto.csv", EVAL_COLUMNS),
                    convergence=_read_csv(root / "convergence.csv", CONVERGENCE_COLUMNS),
                    taps=taps, metrics=metrics)


# ---------------------------------------------------------------------------------------------
# the pick, the constraint


def feasible_mask(frame: pd.DataFrame) -> pd.Series:
    return frame["feasible"].map(parse_bool)


def order_front(pareto: pd.DataFrame, objective: str, size_metric: str = "params") -> pd.DataFrame:
    """The feasible rows of a front, best first: by the search's ``rank`` when the front has it,
    else min-size -> smallest (ties: higher P); max-accuracy -> highest P (ties: smaller); the
    bit string breaks remaining ties."""
    front = pareto[feasible_mask(pareto)] if len(pareto) else pareto
    if objective == "max-accuracy":
        keys, ascending = ["val_accuracy", size_metric, "bits"], [False, True, True]
    else:
        keys, ascending = [size_metric, "val_accuracy", "bits"], [True, False, True]
    if "rank" in front.columns and front["rank"].notna().all():
        keys, ascending = ["rank"] + keys, [True] + ascending  # the search's own order first
    return front.sort_values(keys, ascending=ascending)


def pick_best(pareto: pd.DataFrame, objective: str, size_metric: str = "params") -> Optional[pd.Series]:
    """The search's best pick from a front (see :func:`order_front`); None when nothing is
    feasible."""
    order = order_front(pareto, objective, size_metric)
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


def _section_result(run: RunFiles, best: Optional[pd.Series]) -> List[str]:
    out = ["## Result", ""]
    m = run.metrics
    if m is not None:
        g = m.get("graft", {})
        out.append(f"Chosen model: taps **{m.get('taps', '')}** "
                   f"({', '.join(m.get('tap_names', []))}), {fmt_int(g.get('params'))} parameters, "
                   f"{fmt_mib(g.get('size_mib'))} MiB, test accuracy "
                   f"{fmt_pct((g.get('test') or {}).get('accuracy'))}.")
    elif best is not None:
        out.append(f"Best pick of the search (not yet trained and tested): taps **{best['taps']}**, "
                   f"{fmt_int(best['params'])} parameters, {fmt_mib(best['size_mib'])} MiB, "
                   f"validation accuracy {fmt_pct(best['val_accuracy'])}.")
    else:
        out.append("No feasible selection was found; the front below holds the least-violating "
                   "selections. Relax the constraint (p_min or size_max) and resume.")
    return out + [""]


def _section_donor_vs_graft(m: Mapping[str, Any]) -> List[str]:
    d, g = m.get("donor") or {}, m.get("graft") or {}
    dv, dt = d.get("val") or {}, d.get("test") or {}
    gv, gt = g.get("val") or {}, g.get("test") or {}
    rows = [
        ["Total parameters", fmt_int(d.get("params")), fmt_int(g.get("params")),
         fmt_int(d["params"] - g["params"]) if d.get("params") and g.get("params") else "n/a"],
        ["Model size (MiB)", fmt_mib(d.get("size_mib")), fmt_mib(g.get("size_mib")),
         fmt_mib(d["size_mib"] - g["size_mib"]) if d.get("size_mib") and g.get("size_mib") else "n/a"],
        ["Validation accuracy", fmt_pct(dv.get("accuracy")), fmt_pct(gv.get("accuracy")), ""],
        ["Validation loss", fmt_float(dv.get("loss")), fmt_float(gv.get("loss")), ""],
        ["Test accuracy", fmt_pct(dt.get("accuracy")), fmt_pct(gt.get("accuracy")), ""],
        ["Test loss", fmt_float(dt.get("loss")), fmt_float(gt.get("loss")), ""],
    ]
    out = ["## Donor vs rootstock", "",
           table(["Metric", f"Donor ({d.get('name', 'donor')})", "Rootstock (graft)",
                  "Absolute reduction"], rows), ""]
    red = m.get("size_reduction") or {}
    if red.get("factor"):
        out.append(f"The rootstock is **{red['factor']:.2f}x smaller** than the donor "
                   f"({red['percent']:.2f}% fewer parameters).")
    if d.get("note"):
        out.append(f"Donor accuracy: {d['note']}")
    return out + [""]


def _section_test_metrics(m: Mapping[str, Any]) -> List[str]:
    g, d = m.get("graft") or {}, m.get("donor") or {}
    gt, dt = g.get("test") or {}, d.get("test") or {}
    keys = [("accuracy", "Accuracy", fmt_pct), ("loss", "Loss (cross-entropy)", fmt_float),
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
    per_class = g.get("per_class") or []
    if per_class:
        out += ["### Per class (rootstock)", "",
                table(["Class", "Precision", "Recall", "F1", "ROC AUC", "Support"],
                      [[r["class"], fmt_pct(r["precision"]), fmt_pct(r["recall"]), fmt_pct(r["f1"]),
                        fmt_float(r.get("roc_auc")), fmt_int(r["support"])] for r in per_class]), ""]
    confusion = g.get("confusion")
    names = m.get("class_names") or [r["class"] for r in per_class]
    if confusion and names:
        out += ["### Confusion matrix (rootstock; rows: true class, columns: predicted)", "",
                table(["true \\ predicted"] + list(names),
                      [[n] + list(row) for n, row in zip(names, confusion)]), ""]
    return out


def _section_deployment(m: Mapping[str, Any]) -> List[str]:
    lat, mem, q = m.get("latency"), m.get("memory"), m.get("int8")
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
            rows = [["Serialized size (MiB)", fmt_mib(q.get("float32_mib")), fmt_mib(q.get("int8_mib"))],
                    ["Test accuracy", fmt_pct(q.get("float32_test_accuracy")),
                     fmt_pct(q.get("int8_test_accuracy"))]]
            if q.get("int8_latency_ms") is not None:
                rows.append(["Latency per image, median (ms)", fmt_float(q.get("float32_latency_ms"), 2),
                             fmt_float(q.get("int8_latency_ms"), 2)])
            engines = q.get("int8_val_accuracy_by_engine") or {}
            tried = ", ".join(f"{e} {fmt_pct(a)}" for e, a in engines.items())
            out += ["### int8 post-training quantisation (beyond the paper)", "",
                    table(["", "float32", "int8"], rows),
                    "", f"Static quantisation with torch.ao ({q.get('engine', '')} engine), "
                    f"calibrated on {fmt_int(q.get('calibration_images'))} training images"
                    + (f"; the engine was chosen on validation accuracy ({tried})" if tried else "")
                    + ". Accuracy can drop: check it before deploying the int8 model.", ""]
    return out


def _front_rows(run: RunFiles, chosen_bits: Optional[str]) -> List[List[str]]:
    front = run.pareto.copy()
    if not len(front):
        return []
    sort = ["rank", run.size_metric] if "rank" in front.columns else [run.size_metric]
    front = front.sort_values(sort + ["bits"])
    rows = []
    for _, r in front.iterrows():
        mark = " (chosen)" if chosen_bits is not None and r["bits"] == chosen_bits else ""
        rows.append([f"{r['taps']}{mark}", fmt_int(r["n_taps"]), fmt_int(r["params"]),
                     fmt_mib(r["size_mib"]), fmt_int(r["macs"]), fmt_pct(r["val_accuracy"]),
                     fmt_float(r.get("val_loss")), "yes" if parse_bool(r["feasible"]) else "no"])
    return rows


def render_report(run: RunFiles) -> str:
    best = pick_best(run.pareto, run.objective, run.size_metric)
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
    lines += _section_result(run, best)
    chosen_bits = (run.metrics or {}).get("bits") or (best["bits"] if best is not None else None)
    if run.metrics is not None:
        lines += _section_donor_vs_graft(run.metrics)
        lines += _section_test_metrics(run.metrics)
        lines += _section_deployment(run.metrics)
    lines += ["## Pareto front", "",
              f"Feasible non-dominated selections (validation accuracy vs {run.size_metric}).", ""]
    rows = _front_rows(run, chosen_bits)
    lines += [table(["Taps", "n", "Params", "MiB", "MACs", "Val acc", "Val loss", "Feasible"], rows)
              if rows else "The front is empty.", "",
              f"![Pareto front]({PARETO_PNG})", "", "## Convergence", "",
              f"![Convergence]({CONVERGENCE_PNG})", ""]
    if len(run.convergence):
        last = run.convergence.iloc[-1]
        lines += [f"Last generation {int(last['generation'])}: hypervolume "
                  f"{fmt_float(last['hypervolume'], 6)}, best feasible val accuracy "
                  f"{fmt_pct(last['best_val_accuracy'])}.", ""]
    lines += ["## Settings", ""]
    lines += ([table(["Setting", "Value"], _settings_rows(run.config), align="ll"), ""] if run.config else
              ["No config.json in the run directory (a search run through the Python API); the "
               "objective is taken as min-size.", ""])
    files = ["config.json", "taps.csv", "evaluations.csv", "pareto.csv", "convergence.csv"]
    best_dir = run.root / "best"
    if best_dir.is_dir():
        files += [f"best/{p.name}" for p in sorted(best_dir.iterdir()) if p.is_file()
                  and not p.name.startswith(".")]
    lines += ["## Files", ""] + [f"- `{f}`" for f in files if (run.root / f).exists()] + [""]
    lines += ["Regenerate this report with `graftsearch report " + run.root.name + "`.", ""]
    return "\n".join(lines)


def _donor_point(metrics: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if not metrics or not metrics.get("donor"):
        return None
    d = metrics["donor"]
    return {"params": d.get("params"), "size_mib": d.get("size_mib"), "macs": d.get("macs"),
            "val_accuracy": (d.get("val") or {}).get("accuracy")}


def _chosen_point(run: RunFiles, best: Optional[pd.Series]) -> Optional[Dict[str, Any]]:
    bits = (run.metrics or {}).get("bits")
    if bits is not None:
        match = run.evaluations[run.evaluations["bits"] == bits]
        if len(match):
            return match.iloc[0].to_dict()
    return best.to_dict() if best is not None else None


def write_report(run_dir) -> Path:
    """Write ``report.md``, ``pareto.png`` and ``convergence.png`` into ``run_dir``; return the
    report's path. Uses only the files in the run directory."""
    run = load_run(run_dir)
    best = pick_best(run.pareto, run.objective, run.size_metric)
    objective = run.objective
    p_min = run.setting("p_min") if objective == "min-size" else None
    size_max = (size_limit(run.setting("size_max"), run.size_metric)
                if objective == "max-accuracy" else None)
    plot_pareto(run.evaluations, run.pareto, run.root / PARETO_PNG, size_metric=run.size_metric,
                objective=objective, p_min=float(p_min) if p_min is not None else None,
                size_max=size_max, chosen=_chosen_point(run, best),
                donor=_donor_point(run.metrics))
    plot_convergence(run.convergence, run.root / CONVERGENCE_PNG, size_metric=run.size_metric)
    path = run.root / REPORT
    write_text(path, render_report(run))
    return path
