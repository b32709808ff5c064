"""Worked example: the default knowledge-grafting path on real images, on a CPU.

Plant seedlings (12 weed and crop species, 3,566 RGB images, resized once to 128 px, in
``../shared/data/plant-seedlings/images`` beside the repository) with the offline
EfficientNet-Lite0 ImageNet donor, through ``graftsearch.run`` with the defaults a user gets:

1. cultivate the donor with the standard recipe until validation loss stops improving (at most
   8 epochs, the best epoch kept);
2. cache the global-average-pooled output of every candidate tap of the cultivated donor;
3. search for the most accurate graft of at most 30% of the cultivated donor's parameters
   (``size_max="30%"``, resolved to an exact number before the search);
4. train the pick's head, fine-tune the graft end to end with and without distillation from the
   donor, keep the variant best on val, test it (the test split is used here for the first time),
   compare it with the donor, export it;
5. write report.md.

These are the settings of seed 0 of ``benchmarks/grafting.py`` (which also measures the
alternatives: probes, the paper's manual rule, the truncated donor); the README's worked example
quotes that run.

Usage: ``python examples/plant_seedlings.py [--run-dir runs/plant_seedlings] [--seed 0]
[--threads 2]``. A stopped run resumes where it stopped when started again.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import graftsearch as gs  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
IMAGE_SIZE = 128
SIZE_MAX = "30%"


def settings(*, data: str, run_dir: str, seed: int = 0, cache_dir=None, latency_runs: int = 30,
             image_size: int = IMAGE_SIZE, **smaller) -> "gs.RunSettings":
    """The run this example makes: the defaults, the most accurate graft within 30% of the donor.

    ``smaller`` (e.g. ``generations=1``) shrinks it for a smoke test; the example passes none.
    """
    return gs.RunSettings(donor="efficientnet_lite0", data=data, image_size=image_size,
                          objective="max-accuracy", size_max=SIZE_MAX, seed=seed,
                          run_dir=run_dir, cache_dir=cache_dir, latency_runs=latency_runs,
                          **smaller)


def summarise(run_dir: Path, outcome) -> dict:
    """The paper's Table 2 shape (donor vs graft) from the run's metrics.json."""
    m = json.loads((run_dir / "best" / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    g, d = m["graft"], m["donor"]

    def scores(part):
        return {"val_accuracy": part["val"]["accuracy"], "test_accuracy": part["test"]["accuracy"],
                "test_f1_macro": part["test"]["f1_macro"]}

    return {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads",
        "timings_s": {k: round(v, 1) for k, v in outcome.timings.items()},
        "size_max": outcome.settings.size_max, "size_max_params": config["search"]["size_max"],
        "chosen_taps": m["taps"], "tap_names": m["tap_names"], "kept_variant": g.get("variant"),
        "variants": {k: scores(v) for k, v in (g.get("variants") or {}).items()},
        "graft": {"params": g["params"], "size_mib": g["size_mib"]} | scores(g),
        "donor": {"params": d["params"], "size_mib": d["size_mib"]} | scores(d),
        "size_reduction": m["size_reduction"],
        "latency_ratio": (m.get("latency") or {}).get("ratio")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="knowledge grafting on plant seedlings")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "plant_seedlings"))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=30)
    # a smoke test only (tests/test_final.py): the worked example uses the run's defaults
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not Path(args.data).is_dir():
        print(f"The plant-seedlings images are not in {args.data}; pass --data DIR.")
        return 2
    run_dir = Path(args.run_dir)

    def progress(p) -> None:
        print(f"  {p.stage}: {p.done}/{p.total or '?'}", flush=True)

    smaller = dict(image_size=32, cultivate="1", fine_tune_epochs=1, population=6,
                   generations=1, final_epochs=2) if args.smoke else {}
    outcome = gs.run(settings(data=args.data, run_dir=str(run_dir), seed=args.seed,
                              cache_dir=args.cache_dir, latency_runs=args.latency_runs,
                              **smaller), progress=progress)
    summary = summarise(run_dir, outcome)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
