"""What a grafted model saves at inference on a CPU: latency, memory and size, graft vs donor.

Two pairs, each measured side by side in one run:

- the paper's pair: the VGG16 graft of taps {8, 9, 10} (block3_conv2, block3_conv3, block3_pool)
  with the paper's head, vs the paper's donor (VGG16 trunk + Flatten + Dense 256 + Dense 256 +
  Dense 9), at 128 px, 9 classes;
- EfficientNet-Lite0 for plant seedlings (12 classes) at 128 px: the graft of taps {10, 11, 12}
  (the three 112-channel blocks before the stride-2 stage: the paper's "three consecutive taps
  before a pooling boundary"), vs the donor with a 12-class classifier.

Weights are random: latency, memory and size do not depend on weight values. Every model takes
RGB in [0, 1] and normalises it itself (the deployed form). Latency: batch 1, models interleaved
run by run after a warm-up, median of N, at the stated torch thread count. Memory: growth of the
resident set of a fresh process (plain torch, TorchScript copy) from before loading to the peak
of two forward passes. The int8 row is the graft after post-training static quantisation
(torch.ao, calibrated on random images: its accuracy is not measured here).

Usage: ``python -m benchmarks.graft_vs_donor [--runs 50] [--warmup 10] [--threads 1]``.
Writes ``benchmarks/results/graft_vs_donor.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._machine import cpu_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
IMAGE_SIZE = 128
COLUMNS = ["pair", "model", "taps", "params", "size_mib", "macs", "latency_median_ms",
           "latency_p90_ms", "loaded_mib", "peak_mib", "threads"]




def _pairs():
    import torch

    import graftsearch as gs
    from graftsearch.donors._normalize import Normalize

    def deployable(donor, taps, classes):
        torch.manual_seed(0)
        graft = gs.GraftedModel(donor, taps, gs.HeadSpec(num_classes=classes), image_size=IMAGE_SIZE)
        return gs.graft.DeployableModel(graft, mean=donor.preprocessing.mean, std=donor.preprocessing.std,
                                        image_size=IMAGE_SIZE, class_names=[str(i) for i in range(classes)])

    def whole(donor):
        return torch.nn.Sequential(Normalize(donor.preprocessing.mean, donor.preprocessing.std),
                                   donor.module).eval()

    vgg = gs.load_donor("paper_vgg16", num_classes=9, image_size=IMAGE_SIZE, load_weights=False)
    yield "vgg16 (paper)", "8;9;10", deployable(vgg, [8, 9, 10], 9), whole(vgg)
    lite = gs.load_donor("efficientnet_lite0", num_classes=12, load_weights=False)
    yield "efficientnet_lite0", "10;11;12", deployable(lite, [10, 11, 12], 12), whole(lite)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 row")
    args = parser.parse_args(argv)

    import torch

    from graftsearch.graft._measure import compare_latency, measure_peak_memory
    from graftsearch.graft._quantize import quantize_int8, serialized_mib
    from graftsearch.taps._trace import count_macs

    torch.set_num_threads(args.threads)
    rows = []
    began = time.perf_counter()
    for pair, taps, graft, donor in _pairs():
        models = {"graft": graft, "donor": donor}
        if not args.no_int8:
            calibration = [torch.rand(8, 3, IMAGE_SIZE, IMAGE_SIZE,
                                      generator=torch.Generator().manual_seed(i)) for i in range(4)]
            models["graft int8"] = quantize_int8(graft, calibration)
        latency = compare_latency(models, IMAGE_SIZE, runs=args.runs, warmup=args.warmup,
                                  threads=args.threads)
        example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        for name, model in models.items():
            mem = measure_peak_memory(model, IMAGE_SIZE, threads=args.threads)
            params = sum(p.numel() for p in model.parameters())
            int8 = name.endswith("int8")
            rows.append({
                "pair": pair, "model": name, "taps": taps if name != "donor" else "",
                "params": "" if int8 else params,
                "size_mib": round(serialized_mib(model) if int8 else params * 4 / 2**20, 3),
                "macs": "" if int8 else count_macs(model, example),
                "latency_median_ms": round(latency[name].median_ms, 3),
                "latency_p90_ms": round(latency[name].p90_ms, 3),
                "loaded_mib": None if mem.loaded_mib is None else round(mem.loaded_mib, 1),
                "peak_mib": None if mem.peak_mib is None else round(mem.peak_mib, 1),
                "threads": latency[name].threads})
            print(rows[-1], flush=True)
    elapsed = time.perf_counter() - began

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "graft_vs_donor.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (RESULTS / "graft_vs_donor.md").write_text(_markdown(rows, args, elapsed))
    print(f"wrote {RESULTS / 'graft_vs_donor.csv'} and .md")
    return 0


def _markdown(rows, args, elapsed: float) -> str:
    import torch

    lines = ["# Graft vs donor at inference (CPU)", "",
             f"Command: `python -m benchmarks.graft_vs_donor --runs {args.runs} --warmup "
             f"{args.warmup} --threads {args.threads}`{' --no-int8' if args.no_int8 else ''}", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores visible (shared with other jobs), "
             f"torch {torch.__version__}, {args.threads} torch thread(s), batch 1, "
             f"{IMAGE_SIZE} px; {elapsed:.0f} s in all.", "",
             "| pair | model | taps | params | MiB | MACs | latency median (ms) | p90 (ms) | "
             "memory loaded (MiB) | peak (MiB) |",
             "| :-- | :-- | :-- | --: | --: | --: | --: | --: | --: | --: |"]
    for r in rows:
        fmt = lambda v: f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v))  # noqa: E731
        lines.append("| " + " | ".join(fmt(r[c]) for c in COLUMNS[:-1]) + " |")
    lines += ["", "Ratios (donor / graft, measured in the same run):", ""]
    for pair in dict.fromkeys(r["pair"] for r in rows):
        g = next(r for r in rows if r["pair"] == pair and r["model"] == "graft")
        d = next(r for r in rows if r["pair"] == pair and r["model"] == "donor")
        parts = [f"params {d['params'] / g['params']:.2f}x", f"MACs {d['macs'] / g['macs']:.2f}x",
                 f"latency {d['latency_median_ms'] / g['latency_median_ms']:.2f}x"]
        if g["peak_mib"] and d["peak_mib"]:
            parts.append(f"peak memory {d['peak_mib'] / g['peak_mib']:.2f}x")
        q = next((r for r in rows if r["pair"] == pair and r["model"] == "graft int8"), None)
        if q:
            parts.append(f"int8 graft: {g['size_mib'] / q['size_mib']:.2f}x smaller file and "
                         f"runs {g['latency_median_ms'] / q['latency_median_ms']:.2f}x faster than "
                         "the float32 graft")
        lines.append(f"- {pair}: " + ", ".join(parts) + ".")
    lines += ["", "Weights are random (latency, memory and size do not depend on them). Memory "
              "is the growth of a fresh process's resident set (plain torch, TorchScript copy) "
              "from before loading the model to the peak of two forward passes. The int8 graft "
              "is calibrated on random images: its accuracy is measured by the final model on "
              "real data (`FinalSettings(quantize='ptq')`, `benchmarks/quantization.py`), not here.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
