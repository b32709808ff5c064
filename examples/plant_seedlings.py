"""Worked example: the whole knowledge-grafting path on real images, on a CPU.

Plant seedlings (12 weed and crop species, 3,566 RGB images at 128 px, in
``../shared/data/plant-seedlings/images`` beside the repository) with the offline
EfficientNet-Lite0 ImageNet donor:

1. cultivate the donor briefly (the paper's step 1: a new 12-class classifier, the last taps
   fine-tuned, the rest frozen);
2. cache the global-average-pooled output of every candidate tap of the cultivated donor;
3. search the taps with the constraint-handling NSGA-II: the smallest graft whose validation
   accuracy reaches ``--p-min``;
4. train the chosen graft's head with the paper's schedule, test it (test split, first use),
   compare it with the donor (accuracy, size, CPU latency, peak memory), quantise it to int8,
   export it (model.pt, TorchScript, ONNX);
5. write report.md with the Pareto and convergence plots.

Usage: ``python examples/plant_seedlings.py [--run-dir runs/plant_seedlings] [--p-min 0.85]
[--cultivate-epochs 2] [--generations 8]``. About 11 minutes on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import graftsearch as gs  # noqa: E402
from graftsearch.fitness import MLPProxy  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="knowledge grafting on plant seedlings")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "plant_seedlings"))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--cultivate-epochs", type=int, default=2)
    parser.add_argument("--trainable-taps", type=int, default=3,
                        help="taps fine-tuned while cultivating (the paper: 17 of VGG16's 18)")
    parser.add_argument("--p-min", type=float, default=0.85)
    parser.add_argument("--population", type=int, default=24)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not Path(args.data).is_dir():
        print(f"The plant-seedlings images are not in {args.data}; pass --data DIR.")
        return 2
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    began = time.perf_counter()

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {timings[name]} s", flush=True)

    dataset = gs.load_dataset(args.data, split="paper", seed=args.seed)
    print(dataset, flush=True)

    # 1. cultivate the donor (the paper's step 1), briefly, on the CPU
    t0 = time.perf_counter()
    donor_file = run_dir / "donor.pt"
    if donor_file.is_file():
        donor = gs.load_donor(checkpoint=str(donor_file))
        cultivation = torch.load(donor_file, weights_only=True)["meta"]["cultivation"]["table_row"]
    else:
        base = gs.load_donor("efficientnet_lite0", weights="IMAGENET")
        result = gs.cultivate_donor(base, dataset, settings=gs.CultivateSettings(
            image_size=args.image_size, trainable_taps=args.trainable_taps,
            # this example keeps the previous release's path (Adam at a constant rate, 2 epochs):
            # the numbers the README quotes; benchmarks/grafting.py measures the default path
            recipe="paper", augment=False, epochs=args.cultivate_epochs, batch_size=32, lr=1e-3,
            patience=None, seed=args.seed, device="auto"), progress=lambda p: print(f"  cultivate epoch {p.done}: "
                                                     f"val acc {p.info['val_accuracy']:.4f}",
                                                     flush=True))
        result.save(donor_file)
        donor, cultivation = result.donor, result.table_row()
    step("cultivate", t0)
    print("donor (Table 2 row):", json.dumps(cultivation), flush=True)

    # 2. the feature cache of every tap
    t0 = time.perf_counter()
    cache = gs.build_cache(donor, dataset, image_size=args.image_size, cache_dir=args.cache_dir,
                           device="auto")
    step("cache", t0)

    # 3. the search
    t0 = time.perf_counter()
    head = gs.HeadSpec(num_classes=len(dataset.classes))
    settings = gs.SearchSettings(objective="min-size", p_min=args.p_min,
                                 population=args.population, generations=args.generations,
                                 seed=args.seed)
    (run_dir / "config.json").write_text(json.dumps({
        "search": settings.as_dict(), "head": head.as_dict(),
        "donor": {"name": donor.name, "checkpoint": str(donor_file), "base": "efficientnet_lite0",
                  "weights": "IMAGENET", "cultivation": cultivation},
        "data": {"source": args.data, "split": "paper", "seed": args.seed,
                 "image_size": args.image_size},
        "versions": {"graftsearch": gs.__version__, "torch": torch.__version__}},
        indent=2, sort_keys=True))
    fitness = MLPProxy(cache, seed=args.seed)  # P(G_s): the paper's head, trained briefly
    search = gs.run_search(cache.taps, head, fitness, settings, run_dir=run_dir)
    step("search", t0)
    print(search.message, flush=True)

    # 4. final training, test, comparison with the donor, int8, export
    t0 = time.perf_counter()
    final = gs.train_final_from_run(run_dir, donor, cache, dataset=dataset, settings=gs.FinalSettings(
        seed=args.seed, quantize=True, threads=1, latency_runs=args.latency_runs, fine_tune=False,
        latency_warmup=min(10, args.latency_runs)))
    step("final", t0)

    # 5. the report
    report = gs.write_report(run_dir)
    m = final.metrics
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads",
        "timings_s": timings, "total_s": round(time.perf_counter() - began, 1),
        "fitness": type(fitness).__name__,
        "evaluations": len(search.records), "chosen_taps": m["taps"],
        "tap_names": m["tap_names"],
        "graft": {k: m["graft"][k] for k in ("params", "size_mib")} | {
            "val_accuracy": m["graft"]["val"]["accuracy"],
            "test_accuracy": m["graft"]["test"]["accuracy"],
            "test_f1_macro": m["graft"]["test"]["f1_macro"],
            "test_roc_auc": m["graft"]["test"]["roc_auc_macro"]},
        "donor": {"params": m["donor"]["params"], "size_mib": m["donor"]["size_mib"],
                  "val_accuracy": (m["donor"]["val"] or {}).get("accuracy"),
                  "test_accuracy": (m["donor"]["test"] or {}).get("accuracy")},
        "size_reduction": m["size_reduction"],
        "latency_ms": {k: (m["latency"][k] or {}).get("median_ms") for k in ("graft", "donor")},
        "peak_memory_mib": {k: m["memory"][k]["peak_mib"] for k in ("graft", "donor")},
        "int8": m["int8"], "report": str(report)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
