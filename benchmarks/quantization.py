"""int8 copies of the worked example's graft and of its donor: float32 vs post-training (PTQ)
vs quantisation-aware (QAT), on the test images.

For each seed whose grafting run (``benchmarks/grafting.py``, the worked example's settings) has
finished, the kept graft (``best/model.pt``) and the cultivated donor (``donor.pt``) of that run
are quantised with graftsearch's own code (``graftsearch.graft._int8``): PTQ tries every int8
engine and activation observer of this machine on the val split (and the first convolution in
float32 when the best still loses more than 1 pp), QAT fine-tunes with fake quantisation for
``--qat-epochs`` epochs distilled from the float32 network (here always, so that its row exists;
``--quantize qat`` runs it only when PTQ loses more than 1 pp on val); the row "kept by
--quantize qat" is, per seed, whichever of the two the library's own rule keeps from their val
accuracies, the int8 graft a user gets and the one the issue's targets are about. Every row: test accuracy,
the TorchScript file's size (as graftsearch exports it: frozen, entries DEFLATE-compressed; the
uncompressed size beside it), the median CPU latency at batch 1 of the files loaded back (float32
and int8 side by side, interleaved, at the stated torch threads) and the peak resident memory of
a fresh process running the file. Beside them, the same networks through ONNX Runtime (float32,
and its static quantiser on the same calibration images) and torchao (its PT2E flow with the x86
quantiser's default recipe, saved with ``torch.export`` and run under ``torch.compile`` beside
the float32 graft compiled alike and the float32 TorchScript file), the other int8 paths the
issue names; the page says which path meets the issue's targets on more seeds.
The test split chose nothing.

Usage: ``python -m benchmarks.quantization [--seeds 0,1,2] [--threads 1] [--qat-epochs 2]
[--quick]``. Writes ``benchmarks/results/quantization.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._machine import cpu_name, results_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
GRAFTING = ROOT / "benchmarks" / "cache" / "grafting"
COLUMNS = ["seed", "model", "variant", "recipe", "val_accuracy", "test_accuracy", "file_mib",
           "stored_mib", "latency_ms", "peak_mib", "seconds"]
TARGET_DROP, TARGET_SHRINK = 0.01, 3.5
VARIANTS = ("float32", "PTQ", "QAT", "float32 (ONNX Runtime)", "PTQ (ONNX Runtime)")
#: Not measured on its own: per seed, the PTQ or QAT row that ``--quantize qat`` keeps.
SHIPPED = "kept by --quantize qat"


def _finished(seed: int, quick: bool) -> Optional[Path]:
    run = GRAFTING / ("quick" if quick else "full") / f"seed{seed}"
    return run if (run / "best" / "model.pt").is_file() and (run / "donor.pt").is_file() else None


def _stamp(args) -> Dict[str, object]:
    return {"threads": args.threads, "qat_epochs": args.qat_epochs, "latency_runs": args.latency_runs,
            "calibration_images": args.calibration_images, "variants": list(VARIANTS),
            "torchscript": "frozen, deflated; latency and memory of the loaded files"}


def measure_seed(seed: int, run: Path, args) -> List[Dict[str, object]]:
    """The seed's rows, measured once: a later run with the same settings reuses them from
    ``quantization_rows.json`` in the grafting run's directory (the page says so)."""
    from graftsearch._utils.atomic import write_text

    done = run / "quantization_rows.json"
    if done.is_file() and not args.quick:
        saved = json.loads(done.read_text())
        if saved.get("settings") == _stamp(args):
            print(f"seed {seed}: reusing the rows in {done}", flush=True)
            return [dict(r, reused=True) for r in saved["rows"]]
    rows = _measure(seed, run, args)
    write_text(done, json.dumps({"settings": _stamp(args), "rows": rows}, default=float))
    return rows


def _context(seed: int, run: Path, args):
    """What every row of a seed starts from: its grafting run's kept graft and cultivated donor,
    the dataset with its cached images, the loaders and the final-training settings."""
    from types import SimpleNamespace

    import graftsearch as gs
    from graftsearch.data._store import build_image_store
    from graftsearch.graft._export import load_model
    from graftsearch.graft._final import make_loader_for

    deployed = load_model(run / "best" / "model.pt")
    donor = gs.load_donor(checkpoint=str(run / "donor.pt"))
    config = json.loads((run / "config.json").read_text())["settings"]
    dataset = gs.load_dataset(gs.data.DataSpec(source=config["data"], split=config["split"],
                                               seed=seed))
    size = deployed.image_size
    dataset.use_store(build_image_store(dataset, size, cache_dir=GRAFTING / "cache"))
    pre = dataclasses.replace(donor.preprocessing, image_size=size)
    settings = gs.FinalSettings(seed=seed, quantize="ptq", qat_epochs=args.qat_epochs,
                                calibration_images=args.calibration_images, num_workers=0,
                                latency_runs=args.latency_runs, threads=args.threads)
    return SimpleNamespace(graft=deployed.graft.eval(), donor=donor.module.eval(), size=size,
                           dataset=dataset, pre=pre, settings=settings,
                           classes=list(dataset.classes),
                           val=make_loader_for(dataset, "val", pre, settings),
                           test=make_loader_for(dataset, "test", pre, settings))


def _measure(seed: int, run: Path, args) -> List[Dict[str, object]]:
    import torch

    from graftsearch.graft._export import (DeployableModel, export_int8, load_torchscript,
                                           save_torchscript)
    from graftsearch.graft._final import fine_tune, make_loader_for
    from graftsearch.graft._int8 import (_accuracy, calibration_batches, make_int8,
                                         quantization_aware)
    from graftsearch.graft._measure import compare_latency, measure_peak_memory
    from graftsearch.graft._quantize import Int8Recipe

    ctx = _context(seed, run, args)
    dataset, pre, settings, classes, size = ctx.dataset, ctx.pre, ctx.settings, ctx.classes, ctx.size
    networks = {"graft": ctx.graft, "donor": ctx.donor}
    if args.quick:  # the harness only: the donor rows run the same code
        del networks["donor"]
    test, val = ctx.test, ctx.val
    rows: List[Dict[str, object]] = []
    previous = torch.backends.quantized.engine

    def tune(module, *, settings, teacher, tag):
        return fine_tune(module, dataset, pre, settings, teacher=teacher, tag=tag)

    import importlib.util

    has_ort = importlib.util.find_spec("onnxruntime") is not None  # the onnx extra
    for name, network in networks.items():
        if has_ort:
            rows += _onnxruntime_rows(seed, name, network, pre, classes, dataset, settings, args)
        began = time.perf_counter()
        info, ptq = make_int8(network, dataset, pre, settings, make_loader=make_loader_for,
                              tune=tune)
        if ptq is None:
            raise RuntimeError(f"seed {seed} {name}: PTQ failed: {info.get('error')}")
        ptq_seconds = time.perf_counter() - began
        recipe = Int8Recipe(info["engine"], info["observer"], tuple(info["float_layers"]),
                            info["bias_correction"])
        began = time.perf_counter()
        calibration, _ = calibration_batches(dataset, pre, settings, make_loader_for, False)
        qat_recipe, qat, history = quantization_aware(network, calibration, recipe, settings, tune)
        qat_seconds = time.perf_counter() - began
        torch.backends.quantized.engine = recipe.engine
        variants = {"float32": (network, None, math.nan),
                    "PTQ": (ptq, recipe, ptq_seconds), "QAT": (qat, qat_recipe, qat_seconds)}
        wrapped = {k: DeployableModel(m, mean=pre.mean, std=pre.std, image_size=size,
                                      class_names=classes).eval() for k, (m, _, _) in variants.items()}
        with tempfile.TemporaryDirectory() as tmp:
            paths, shipped = {}, {}
            for variant, (_, rec, _) in variants.items():
                paths[variant] = Path(tmp) / f"{name}-{variant}.pt"
                if rec is None:
                    save_torchscript(wrapped[variant], paths[variant])
                else:
                    export_int8(wrapped[variant], paths[variant], engine=rec.engine,
                                method=variant.lower())
                shipped[variant], _ = load_torchscript(paths[variant])
            # the files as a user runs them (frozen TorchScript, loaded back), side by side
            torch.backends.quantized.engine = recipe.engine
            lat = compare_latency(shipped, size, runs=args.latency_runs,
                                  warmup=max(1, args.latency_runs // 10), threads=args.threads)
            for variant, (module, rec, seconds) in variants.items():
                peak = measure_peak_memory(shipped[variant], size, threads=args.threads,
                                           engine=rec.engine if rec else None)
                torch.backends.quantized.engine = recipe.engine
                with zipfile.ZipFile(paths[variant]) as archive:
                    stored = sum(e.file_size for e in archive.infolist())
                rows.append({"seed": seed, "model": name, "variant": variant,
                             "recipe": "" if rec is None else json.dumps(rec.as_dict()),
                             "val_accuracy": _accuracy(module, val),
                             "test_accuracy": _accuracy(module, test),
                             "file_mib": paths[variant].stat().st_size / 2**20,
                             "stored_mib": stored / 2**20,
                             "latency_ms": lat[variant].median_ms, "peak_mib": peak.peak_mib,
                             "seconds": seconds, "qat_epochs": len(history)})
                print(json.dumps(rows[-1]), flush=True)
        torch.backends.quantized.engine = previous
    return rows


def _onnxruntime_rows(seed, name, network, pre, classes, dataset, settings, args
                      ) -> List[Dict[str, object]]:
    """The same network through ONNX Runtime: float32 and its static quantiser (QDQ, per-channel
    int8 weights, uint8 activations; MinMax or percentile calibration, chosen on val), calibrated
    on the same training images: the alternative to torch.ao that the int8 issue names."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    from graftsearch.graft._export import DeployableModel, save_onnx
    from graftsearch.graft._final import make_loader_for
    from graftsearch.graft._int8 import calibration_batches

    mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(1, 3, 1, 1)

    def raw(batch) -> np.ndarray:  # the loaders normalise; the exported file takes [0, 1]
        return batch.numpy() * std + mean

    calibration, _ = calibration_batches(dataset, pre, settings, make_loader_for, False)
    splits = {s: [(raw(x), y.numpy()) for x, y, _ in make_loader_for(dataset, s, pre, settings)]
              for s in ("val", "test")}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": raw(x)} for x in calibration])

        def get_next(self):
            return next(self.batches, None)

    def session(path, threads):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def accuracy(path, split):
        sess = session(path, max(2, args.threads))
        hits = sum(int((sess.run(None, {"images": x})[0].argmax(1) == y).sum()) for x, y in splits[split])
        return hits / sum(len(y) for _, y in splits[split])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "float32.onnx"
        save_onnx(DeployableModel(network, mean=pre.mean, std=pre.std, image_size=pre.image_size,
                                  class_names=classes).eval(), fp32)
        made = {"float32": (fp32, "", math.nan)}
        best = None
        for method in ("MinMax", "Percentile"):
            began = time.perf_counter()
            path = Path(tmp) / f"int8-{method}.onnx"
            quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method))
            acc = accuracy(path, "val")
            if best is None or acc > best[0]:
                best = (acc, path, method, time.perf_counter() - began)
        made["PTQ"] = (best[1], json.dumps({"calibration": best[2], "format": "QDQ",
                                            "per_channel": True}), best[3])
        x = np.random.default_rng(0).random((1, 3, pre.image_size, pre.image_size), dtype=np.float32)
        sessions = {k: session(p, args.threads) for k, (p, _, _) in made.items()}
        times: Dict[str, List[float]] = {k: [] for k in made}
        for k, sess in sessions.items():
            for _ in range(max(1, args.latency_runs // 10)):
                sess.run(None, {"images": x})
        for _ in range(args.latency_runs):  # interleaved, as compare_latency does
            for k, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, {"images": x})
                times[k].append(1000 * (time.perf_counter() - t0))
        for variant, (path, recipe, seconds) in made.items():
            rows.append({"seed": seed, "model": name, "variant": f"{variant} (ONNX Runtime)",
                         "recipe": recipe, "val_accuracy": accuracy(path, "val"),
                         "test_accuracy": accuracy(path, "test"),
                         "file_mib": path.stat().st_size / 2**20, "stored_mib": math.nan,
                         "latency_ms": statistics.median(times[variant]), "peak_mib": math.nan,
                         "seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    return rows


TORCHAO = ("float32 (torch.compile)", "PTQ (torchao PT2E)")


def _torchao_stamp(args) -> Dict[str, object]:
    from importlib.metadata import version

    return {"threads": args.threads, "latency_runs": args.latency_runs,
            "calibration_images": args.calibration_images, "variants": list(TORCHAO),
            "torchao": version("torchao"), "file": "torch.export, deflated, no example inputs"}


def torchao_rows(seed: int, run: Path, args) -> List[Dict[str, object]]:
    """torchao's post-training int8 (PT2E, its x86 quantiser's default recipe) of the seed's
    graft, measured once and saved beside the other rows (``torchao_rows.json``); none when
    torchao (the bench extra) is not installed."""
    import importlib.util

    from graftsearch._utils.atomic import write_text

    if importlib.util.find_spec("torchao") is None:
        return []
    done = run / "torchao_rows.json"
    if done.is_file() and not args.quick:
        saved = json.loads(done.read_text())
        if saved.get("settings") == _torchao_stamp(args):
            print(f"seed {seed}: reusing the torchao rows in {done}", flush=True)
            return [dict(r, reused=True) for r in saved["rows"]]
    rows = _measure_torchao(seed, run, args)
    write_text(done, json.dumps({"settings": _torchao_stamp(args), "rows": rows}, default=float))
    return rows


def _strip_unused(module) -> None:
    """Drops the tensors an exported graph no longer reads (convert_pt2e leaves the float32
    weights beside their int8 copies), so the saved file holds what runs."""
    used = {n.target for n in module.graph.nodes if n.op == "get_attr"}
    for name, _ in list(module.named_parameters()) + list(module.named_buffers()):
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(module.get_submodule(owner) if owner else module, leaf)


def _measure_torchao(seed: int, run: Path, args) -> List[Dict[str, object]]:
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    from graftsearch.graft._export import (DeployableModel, _deflated, load_torchscript,
                                           save_torchscript)
    from graftsearch.graft._final import make_loader_for
    from graftsearch.graft._int8 import _accuracy, calibration_batches
    from graftsearch.graft._measure import compare_latency

    ctx = _context(seed, run, args)
    deploy = DeployableModel(ctx.graft, mean=ctx.pre.mean, std=ctx.pre.std, image_size=ctx.size,
                             class_names=ctx.classes).eval()
    mean = torch.tensor(ctx.pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(ctx.pre.std).view(1, 3, 1, 1)

    class OnLoaderImages(torch.nn.Module):  # the loaders normalise; the exported model takes [0, 1]
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x * std + mean)

    began = time.perf_counter()
    calibration, _ = calibration_batches(ctx.dataset, ctx.pre, ctx.settings, make_loader_for, False)
    example = (calibration[0][:2] * std + mean).clone()
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(deploy, (example,), dynamic_shapes=({0: batch},)).module()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for images in calibration:
            prepared(images * std + mean)
    int8 = convert_pt2e(prepared)
    _strip_unused(int8)
    seconds = time.perf_counter() - began
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path, script = Path(tmp) / "graft-int8.pt2", Path(tmp) / "graft-float32.pt"
        program = torch.export.export(int8, (example,), dynamic_shapes=({0: batch},))
        program.example_inputs = None  # a deployed file carries no calibration images
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        _deflated(buffer.getvalue(), path)  # compressed as graftsearch's own files are
        save_torchscript(deploy, script)
        loaded = torch.export.load(path).module()  # the file as a user runs it
        allow_exported_model_train_eval(loaded)
        accuracy = {split: _accuracy(OnLoaderImages(loaded), loader)
                    for split, loader in (("val", ctx.val), ("test", ctx.test))}
        torch.set_num_threads(args.threads)  # inductor's kernels take the threads at compile time
        compiled = {"float32 (torch.compile)": torch.compile(deploy),
                    "PTQ (torchao PT2E)": torch.compile(loaded),
                    "float32": load_torchscript(script)[0]}
        lat = compare_latency(compiled, ctx.size, runs=args.latency_runs,
                              warmup=max(3, args.latency_runs // 10), threads=args.threads)
        torch.set_num_threads(max(args.threads, 2))
        float_acc = {split: _accuracy(ctx.graft, loader) for split, loader in
                     (("val", ctx.val), ("test", ctx.test))}
        for variant, acc, mib, took in (
                ("float32 (torch.compile)", float_acc, math.nan, math.nan),
                ("PTQ (torchao PT2E)", accuracy, path.stat().st_size / 2**20, seconds)):
            rows.append({"seed": seed, "model": "graft", "variant": variant,
                         "recipe": json.dumps({"quantizer": "X86InductorQuantizer",
                                               "config": "default (per-channel weights)",
                                               "file": "torch.export, deflated"})
                         if mib == mib else "",
                         "val_accuracy": acc["val"], "test_accuracy": acc["test"],
                         "file_mib": mib, "stored_mib": math.nan,
                         "latency_ms": lat[variant].median_ms, "peak_mib": math.nan,
                         "seconds": took, "torchscript_float32_ms": lat["float32"].median_ms})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def shipped_rows(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per seed and model, the copy of the measured PTQ and QAT rows that ``--quantize qat``
    keeps, picked by graftsearch's own rule (:func:`graftsearch.graft._int8.kept_method`) from
    their val accuracies; ``kept`` names it. Its time is what the library spends: post-training
    quantisation, plus the fine-tune when the rule runs one."""
    from graftsearch.graft._int8 import kept_method, loses_too_much

    out = []
    for seed, model in sorted({(int(r["seed"]), str(r["model"])) for r in rows}):
        found = {r["variant"]: r for r in rows if int(r["seed"]) == seed and r["model"] == model}
        base, ptq, qat = found.get("float32"), found.get("PTQ"), found.get("QAT")
        if base is None or ptq is None:
            continue
        float_val, ptq_val = float(base["val_accuracy"]), float(ptq["val_accuracy"])
        fine_tunes = qat is not None and loses_too_much(float_val, ptq_val)
        method = kept_method(float_val, ptq_val, float(qat["val_accuracy"]) if fine_tunes else None)
        picked = qat if method == "qat" else ptq
        seconds = float(ptq["seconds"]) + (float(qat["seconds"]) if fine_tunes else 0.0)
        out.append(dict(picked, variant=SHIPPED, kept=picked["variant"], seconds=seconds))
    return out


def _mean_sd(values: List[float], scale: float = 100.0, digits: int = 2) -> str:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def render(rows: List[Dict[str, object]], args, missing: List[int], seconds: float) -> str:
    seeds = sorted({int(r["seed"]) for r in rows})
    reused = sorted({int(r["seed"]) for r in rows if r.get("reused")})
    lines = ["# int8: float32 vs post-training vs quantisation-aware", "",
             f"Command: `python -m benchmarks.quantization --seeds {args.seeds} --threads "
             f"{args.threads} --qat-epochs {args.qat_epochs}`"
             f"{' --quick (harness smoke test: numbers mean nothing)' if args.quick else ''}. "
             f"Machine: {cpu_name()}, {os.cpu_count()} cores; latency and peak memory of the "
             f"exported files loaded back (TorchScript: frozen, its entries DEFLATE-compressed, "
             f"float32 and int8 alike), at torch threads {args.threads}, batch 1, median of "
             f"{args.latency_runs} interleaved passes. "
             f"Models: the kept graft and the cultivated donor of the grafting benchmark's run of "
             f"each seed (plant seedlings, Lite0). Seeds measured: {', '.join(map(str, seeds)) or 'none'}"
             + (f"; seed(s) {', '.join(map(str, missing))} had no finished grafting run" if missing else "")
             + f". Accuracies in % (mean ± sd over seeds). Total {seconds / 60:.1f} min"
             + (f" (seed(s) {', '.join(map(str, reused))} reused from an earlier run's "
                "`quantization_rows.json` and `torchao_rows.json`)" if reused else "") + ".", "",
             "| model | variant | val acc | test acc | file (MiB) | uncompressed (MiB) | "
             "latency b=1 (ms) | peak memory (MiB) | quantisation time (s) | recipe (seed "
             + str(seeds[0] if seeds else "") + ") |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for model in ("graft", "donor"):
        for variant in VARIANTS + TORCHAO + (SHIPPED,):
            rs = [r for r in rows if r["model"] == model and r["variant"] == variant]
            if not rs:
                continue
            lines.append("| " + " | ".join([
                model, variant, _mean_sd([r["val_accuracy"] for r in rs]),
                _mean_sd([r["test_accuracy"] for r in rs]),
                _mean_sd([r["file_mib"] for r in rs], 1, 2),
                _mean_sd([r.get("stored_mib") for r in rs], 1, 2),
                _mean_sd([r["latency_ms"] for r in rs], 1, 2),
                _mean_sd([r["peak_mib"] for r in rs], 1, 1),
                _mean_sd([r["seconds"] for r in rs], 1, 0),
                str(rs[0]["recipe"]).replace("|", "/") or "-"]) + " |")
    lines += ["", _verdicts(rows), ""]
    return "\n".join(lines) + "\n"


def _per_seed(rows: List[Dict[str, object]], variant: str, runtime: str = "float32"
              ) -> Dict[int, Dict[str, float]]:
    """The graft's ``variant`` against its own seed's float32 row: accuracy lost, how many times
    smaller the file, and its latency over that of the ``runtime`` row (float32 in the same
    runtime, measured side by side with it); seeds without these rows are left out."""
    def row(seed, name):
        return next((r for r in rows if r["model"] == "graft" and r["variant"] == name
                     and int(r["seed"]) == seed), None)

    out = {}
    for seed in sorted({int(r["seed"]) for r in rows}):
        base, other, own = row(seed, "float32"), row(seed, variant), row(seed, runtime)
        if base is None or other is None or own is None:
            continue
        out[seed] = {"drop": float(base["test_accuracy"]) - float(other["test_accuracy"]),
                     "shrink": float(base["file_mib"]) / float(other["file_mib"]),
                     "ratio": float(other["latency_ms"]) / float(own["latency_ms"])}
    return out


#: Each target of the int8 issue, on the values :func:`_per_seed` computes (and their means).
TARGETS = {"drop": lambda d: d <= TARGET_DROP, "shrink": lambda x: x >= TARGET_SHRINK,
           "ratio": lambda r: r <= 1.0}


def _verdict(key: str, value: float, seeds: Dict[int, Dict[str, float]]) -> str:
    """"met" or "missed" for the mean's ``value``, then how many seeds meet the target on their
    own (nothing for one seed, where the mean is it)."""
    holds = TARGETS[key]
    text = "met" if holds(value) else "missed"
    if len(seeds) < 2:
        return text
    failed = [s for s, v in seeds.items() if not holds(v[key])]
    text += f" by the mean; seeds meeting it: {len(seeds) - len(failed)} of {len(seeds)}"
    return text + (f", not seed {', '.join(map(str, failed))}" if failed else "")


def _mean(rows: List[Dict[str, object]], variant: str, key: str, model: str = "graft"
          ) -> Optional[float]:
    """The mean of ``key`` over the seeds' rows of ``model``'s ``variant``; None without any."""
    vals = [float(r[key]) for r in rows if r["model"] == model and r["variant"] == variant
            and r.get(key) is not None and r[key] == r[key]]
    return statistics.mean(vals) if vals else None


def _verdicts(rows: List[Dict[str, object]]) -> str:
    """The int8 issue's targets on the graft, computed from the rows: on the means over seeds,
    and how many seeds meet each on their own."""
    def mean(variant: str, key: str, model: str = "graft") -> Optional[float]:
        return _mean(rows, variant, key, model)

    base = {k: mean("float32", k) for k in ("test_accuracy", "file_mib", "latency_ms",
                                             "stored_mib")}
    if base["test_accuracy"] is None:
        return "No graft was measured."
    out = []
    for variant in ("PTQ", "QAT", SHIPPED):
        acc, mib, lat = (mean(variant, k) for k in ("test_accuracy", "file_mib", "latency_ms"))
        if acc is None:
            continue
        drop = base["test_accuracy"] - acc
        shrink = base["file_mib"] / mib
        change = (f"{100 * drop:.2f} pp lost" if drop > 0 else
                  f"{100 * -drop:.2f} pp gained" if drop < 0 else "no change")
        stored = mean(variant, "stored_mib")
        unpacked = (f", {base['stored_mib'] / stored:.2f}x before compression"
                    if stored and base["stored_mib"] else "")
        seeds = _per_seed(rows, variant)
        checks = [f"test accuracy {100 * acc:.2f}% against float32's "
                  f"{100 * base['test_accuracy']:.2f}% ({change}; target: at most "
                  f"{100 * TARGET_DROP:.0f} pp lost, {_verdict('drop', drop, seeds)})",
                  f"a file {shrink:.2f}x smaller (target >= {TARGET_SHRINK}x: "
                  f"{_verdict('shrink', shrink, seeds)}{unpacked})"]
        if lat is not None and base["latency_ms"] is not None:
            checks.append(f"latency {lat:.2f} ms against {base['latency_ms']:.2f} ms (target <= "
                          f"float32's: {_verdict('ratio', lat / base['latency_ms'], seeds)})")
        if variant == SHIPPED:
            out.append(_kept_sentence(rows))
        name = "int8 graft `--quantize qat` keeps" if variant == SHIPPED else f"graft's {variant} copy"
        out.append(f"The {name}: " + "; ".join(checks) + ".")
    out += _library_choice(rows)
    d_float, d_ptq = mean("float32", "test_accuracy", "donor"), mean("PTQ", "test_accuracy", "donor")
    if d_float is not None and d_ptq is not None:
        out.append(f"The donor's test accuracy goes from {100 * d_float:.2f}% in float32 to "
                   f"{100 * d_ptq:.2f}% after PTQ.")
    return " ".join(out)


def _kept_sentence(rows: List[Dict[str, object]]) -> str:
    """Which copy ``--quantize qat`` keeps on each seed, and the val numbers that decided it."""
    from graftsearch.graft._int8 import QAT_TRIGGER, loses_too_much

    def val(seed, variant):
        return next(float(r["val_accuracy"]) for r in rows if r["model"] == "graft"
                    and r["variant"] == variant and int(r["seed"]) == seed)

    parts = []
    for r in sorted((r for r in rows if r["model"] == "graft" and r["variant"] == SHIPPED),
                    key=lambda r: int(r["seed"])):
        seed = int(r["seed"])
        lost = val(seed, "float32") - val(seed, "PTQ")
        if not loses_too_much(val(seed, "float32"), val(seed, "PTQ")):
            why = (f"PTQ loses {100 * lost:.2f} pp on val, within {100 * QAT_TRIGGER:.0f} pp, so "
                   "no fine-tune runs")
        else:
            qat = val(seed, "QAT")
            why = (f"PTQ loses {100 * lost:.2f} pp on val, so QAT runs and reaches "
                   f"{100 * qat:.2f}% against PTQ's {100 * val(seed, 'PTQ'):.2f}% on val")
        parts.append(f"seed {seed}: {r['kept']} ({why})")
    return ("On each seed `--quantize qat` keeps, by val accuracy alone, " + "; ".join(parts)
            + ".")


#: The other int8 paths measured, each with the float32 row of its own runtime.
ALTERNATIVES = {"ONNX Runtime's static quantiser": ("PTQ (ONNX Runtime)", "float32 (ONNX Runtime)"),
                "torchao's PT2E quantiser": ("PTQ (torchao PT2E)", "float32 (torch.compile)")}


def _library_choice(rows: List[Dict[str, object]]) -> List[str]:
    """The int8 copy graftsearch keeps (torch.ao) against the other libraries' post-training int8
    on the same calibration images: each of the issue's targets, seed by seed, with the latency
    taken against float32 in the library's own runtime."""
    def mean(variant: str, key: str) -> Optional[float]:
        return _mean(rows, variant, key)

    def met_all(seeds):
        return sum(all(TARGETS[k](v[k]) for k in TARGETS) for v in seeds.values())

    kept = _per_seed(rows, SHIPPED)
    if not kept:
        return []
    scores = {"torch.ao (the copy `--quantize qat` keeps)": met_all(kept)}
    out = []
    for label, (variant, runtime) in ALTERNATIVES.items():
        seeds = _per_seed(rows, variant, runtime)
        if not seeds:
            continue
        scores[label] = met_all(seeds)
        held = {k: sum(TARGETS[k](v[k]) for v in seeds.values()) for k in TARGETS}
        out.append(
            f"{label} (no quantisation-aware fine-tune), on the same calibration images: test "
            f"accuracy {100 * mean(variant, 'test_accuracy'):.2f}% (within {100 * TARGET_DROP:.0f} "
            f"pp of float32 on {held['drop']} of {len(seeds)} seeds), a file "
            f"{statistics.mean(v['shrink'] for v in seeds.values()):.2f}x smaller than the float32 "
            f"TorchScript file (>= {TARGET_SHRINK}x on {held['shrink']}), "
            f"{mean(variant, 'latency_ms'):.2f} ms per image against its own runtime's float32 "
            f"{mean(runtime, 'latency_ms'):.2f} ms (no slower on {held['ratio']})"
            + (f" and the float32 TorchScript file's {script:.2f} ms, measured beside them"
               if (script := mean(variant, "torchscript_float32_ms")) is not None else "") + ".")
    latency = {"torch.ao (the copy `--quantize qat` keeps)": mean(SHIPPED, "latency_ms")}
    latency.update({k: mean(v[0], "latency_ms") for k, v in ALTERNATIVES.items() if k in scores})
    best = max(scores.values())
    leaders = [k for k, v in scores.items() if v == best]
    ours = next(iter(scores))
    counts = ", ".join(f"{k} on {v}" for k, v in scores.items())
    text = f"Seeds on which every target holds: {counts} of {len(kept)}; "
    if leaders == [ours]:
        text += "graftsearch ships torch.ao's int8, the one path that meets them on the most seeds."
    elif ours in leaders:
        fastest = min(leaders, key=lambda k: latency[k])
        others = " and ".join(k for k in leaders if k != ours)
        text += (f"torch.ao's int8, which graftsearch ships, meets them on as many seeds as "
                 f"{others}, " + (f"and runs fastest of these ({latency[ours]:.2f} ms per image "
                                  f"against " + ", ".join(f"{latency[k]:.2f} ms" for k in leaders
                                                          if k != ours) + ")."
                                  if fastest == ours else
                                  f"but {fastest} runs faster ({latency[fastest]:.2f} against "
                                  f"{latency[ours]:.2f} ms per image)."))
    else:
        text += (f"{' and '.join(leaders)} meet them on more seeds than torch.ao's int8, which "
                 "graftsearch ships.")
    return out + [text]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.latency_runs < 1 or args.threads < 1 or args.qat_epochs < 1 or args.calibration_images < 1:
        parser.error("--latency-runs, --threads, --qat-epochs and --calibration-images must be >= 1")
    import torch

    torch.set_num_threads(max(args.threads, 2))  # training and evaluation; latency sets its own
    if args.quick:
        args.seeds, args.qat_epochs, args.latency_runs = "0", 1, 2
        args.calibration_images = min(args.calibration_images, 16)
    began = time.perf_counter()
    rows: List[Dict[str, object]] = []
    missing: List[int] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run = _finished(seed, args.quick)
        if run is None:
            missing.append(seed)
            print(f"seed {seed}: no finished grafting run under {GRAFTING}; skipped", flush=True)
            continue
        rows += measure_seed(seed, run, args)
        rows += torchao_rows(seed, run, args)
    rows += shipped_rows(rows)
    out = results_dir(RESULTS, args.quick, GRAFTING / "quick-results")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "quantization.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS + ["qat_epochs", "kept", "torchscript_float32_ms"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "quantization.md").write_text(render(rows, args, missing, time.perf_counter() - began))
    print((out / "quantization.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
