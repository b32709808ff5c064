"""Startup: what the everyday commands cost before they do any work, beside `import torch`.

Each command runs in a fresh interpreter, as a user starts it; the commands take turns round by
round and the median of the rounds is kept (the machine is shared, so a slow round hits one
command, not all). Measured side by side in one run:

- the floor, ``python -c "import torch"``: a command that needs the donor cannot start faster;
- ``graftsearch --help``, ``graftsearch taps --list`` (the donor names kept from an earlier
  listing) and an argument error: these should not import torch at all (the table says whether
  they did, from ``python -X importtime``);
- ``graftsearch taps --donor efficientnet_lite0 --image-size 128``;
- ``graftsearch cache`` on a finished cache, against the build of that cache (timed once);
- ``graftsearch predict`` on one image with an exported EfficientNet-Lite0 graft.

In one process, on one torch thread: tap discovery of Lite0 at 128 px, in seconds and in
forward passes' worth (one forward at batch 1, warm, median of 20), against the per-prefix
discovery it replaced (one torch.fx cut and one flop-counted forward per tap); both must give
the same numbers.

Usage: ``python -m benchmarks.startup [--rounds 5] [--quick]``. Writes
``benchmarks/results/startup.csv`` and ``.md``. Plant seedlings at 128 px for the cache (the
worked example's data); ``--quick`` uses 36 generated images and 1 round.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._machine import cpu_name, results_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
WORK = ROOT / "benchmarks" / "cache" / "startup"
IMAGE_SIZE = 128
DONOR = "efficientnet_lite0"
COLUMNS = ["part", "row", "seconds", "rounds", "imports_torch", "of_floor", "detail"]
TAP_FORWARDS_TARGET = 25      # issue 17: at most ~25 forward passes' worth for Lite0 at 128 px
REUSE_SHARE_TARGET = 1 / 5    # issue 17: a cache reuse within 1/5 of its build


def _env(cache: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env["GRAFTSEARCH_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _timed(argv: List[str], env: Dict[str, str], *, ok=(0,)) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def _imports_torch(argv: List[str], env: Dict[str, str]) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime"] + argv[1:], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    return any(re.search(r"\|\s+torch$", line.rstrip()) for line in done.stderr.splitlines())


def _gs(*args: str) -> List[str]:
    return [sys.executable, "-m", "graftsearch", *args]


def _generated_data(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            pixels[..., c] = 230
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _exported_graft(out: Path) -> Path:
    """A Lite0 graft (ImageNet weights, taps 1-6, a 3-class head) exported as a run would."""
    import graftsearch as gs
    from graftsearch.graft import DeployableModel

    donor = gs.load_donor(DONOR, image_size=IMAGE_SIZE)
    graft = gs.GraftedModel(donor, [1, 2, 3, 4, 5, 6], gs.HeadSpec(num_classes=3),
                            image_size=IMAGE_SIZE)
    model = DeployableModel(graft, mean=donor.preprocessing.mean, std=donor.preprocessing.std,
                            image_size=IMAGE_SIZE, class_names=["a", "b", "c"])
    gs.export_model(model, out, donor=donor, onnx=False)
    return out


def _discovery(rows: List[Dict[str, object]]) -> None:
    """Tap discovery in one process, one torch thread: one pass against one cut per tap."""
    import torch

    import graftsearch as gs
    from graftsearch.taps import discover_taps
    from graftsearch.taps._trace import build_trunk, count_macs, count_params

    torch.set_num_threads(1)
    module = gs.load_donor(DONOR, image_size=IMAGE_SIZE).module.eval()
    x = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        for _ in range(5):
            module(x)
        forward = []
        for _ in range(20):
            began = time.perf_counter()
            module(x)
            forward.append(time.perf_counter() - began)
    one = statistics.median(forward)
    passes = []
    for _ in range(5):
        began = time.perf_counter()
        taps = discover_taps(module, IMAGE_SIZE, donor_name=DONOR)
        passes.append(time.perf_counter() - began)
    began = time.perf_counter()
    example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    per_cut = []
    for name in taps.names:
        trunk = build_trunk(module, [name])
        per_cut.append((count_params(trunk), count_macs(trunk, example)))
    cut_seconds = time.perf_counter() - began
    same = per_cut == [(t.params_upto, t.macs_upto) for t in taps]
    fast = statistics.median(passes)
    rows.append({"part": "discovery", "row": "one forward at batch 1", "seconds": one,
                 "rounds": len(forward), "detail": "warm, median"})
    rows.append({"part": "discovery", "row": f"discover_taps ({len(taps)} taps, one pass)",
                 "seconds": fast, "rounds": len(passes),
                 "detail": f"{fast / one:.1f} forward passes' worth"})
    rows.append({"part": "discovery", "row": "one torch.fx cut + flop count per tap (before)",
                 "seconds": cut_seconds, "rounds": 1,
                 "detail": f"{cut_seconds / one:.1f} forward passes' worth; "
                           f"{'the same' if same else 'DIFFERENT'} parameters and MACs"})


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    work = WORK / ("quick" if args.quick else "full")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names_cache = work / "home-cache"
    env = _env(names_cache)
    if args.quick or not DATA.is_dir():
        data = _generated_data(work / "images")
    else:
        data = DATA
    image = next(p for p in sorted(Path(data).rglob("*")) if p.suffix.lower() in (".png", ".jpg"))
    model_dir = _exported_graft(work / "graft")

    rows: List[Dict[str, object]] = []
    cache_flags = ["--donor", DONOR, "--data", str(data), "--image-size", str(IMAGE_SIZE),
                   "--cache-dir", str(work / "features")]
    began = time.perf_counter()
    _timed(_gs("cache", *cache_flags), env)
    build = time.perf_counter() - began
    _timed(_gs("taps", "--list"), env)  # keeps the donor names, as a user's first listing does

    commands = {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "graftsearch --help": _gs("--help"),
        "graftsearch taps --list": _gs("taps", "--list"),
        "graftsearch run --generations x (an argument error)": _gs("run", "--generations", "x"),
        f"graftsearch taps --donor {DONOR} --image-size {IMAGE_SIZE}":
            _gs("taps", "--donor", DONOR, "--image-size", str(IMAGE_SIZE)),
        "graftsearch cache (finished cache)": _gs("cache", *cache_flags),
        "graftsearch predict (one image)": _gs("predict", str(model_dir), str(image)),
    }
    errors = {"graftsearch run --generations x (an argument error)": (2,)}
    times: Dict[str, List[float]] = {k: [] for k in commands}
    for _ in range(args.rounds):  # rounds in turn: a noisy moment costs one round of each
        for label, argv in commands.items():
            times[label].append(_timed(argv, env, ok=errors.get(label, (0,))))
    floor = statistics.median(times['python -c "import torch"'])
    for label, argv in commands.items():
        seconds = statistics.median(times[label])
        rows.append({"part": "commands", "row": label, "seconds": seconds, "rounds": args.rounds,
                     "imports_torch": _imports_torch(argv, env), "of_floor": seconds / floor})
    rows.append({"part": "cache", "row": "graftsearch cache (build)", "seconds": build,
                 "rounds": 1, "detail": f"{data}"})
    _discovery(rows)

    out = results_dir(RESULTS, args.quick, work / "results")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "startup.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                             for k, v in row.items()})
    (out / "startup.md").write_text(render(rows, args, data))
    print((out / "startup.md").read_text())
    return 0


def _row(rows, part, prefix):
    return next(r for r in rows if r["part"] == part and str(r["row"]).startswith(prefix))


def render(rows: List[Dict[str, object]], args, data) -> str:
    import torch

    floor = _row(rows, "commands", 'python -c "import torch"')
    lines = ["# Startup: the everyday commands beside `import torch`", "",
             f"Command: `python -m benchmarks.startup --rounds {args.rounds}"
             f"{' --quick' if args.quick else ''}`; {cpu_name()}, {os.cpu_count()} cores (shared "
             f"with other jobs), torch {torch.__version__}; each command in a fresh interpreter, "
             f"rounds in turn, median of {args.rounds}. Data for the cache: `{data}` at "
             f"{IMAGE_SIZE} px; donor {DONOR} (ImageNet weights).", "",
             "| command | median s | x `import torch` | imports torch |", "|---|---:|---:|---|"]
    for r in rows:
        if r["part"] == "commands":
            lines.append(f"| `{r['row']}` | {r['seconds']:.2f} | {r['of_floor']:.2f} | "
                         f"{'yes' if r['imports_torch'] else 'no'} |")
    build = _row(rows, "cache", "graftsearch cache (build)")
    reuse = _row(rows, "commands", "graftsearch cache (finished")
    lines += ["", f"Building that cache took {build['seconds']:.1f} s (once)."]

    out = []
    light = [r for r in rows if r["part"] == "commands" and r["row"] != floor["row"]
             and not str(r["row"]).startswith(("graftsearch taps --donor", "graftsearch cache",
                                               "graftsearch predict"))]
    heavy_free = [r for r in light if not r["imports_torch"]]
    out.append(f"{len(heavy_free)} of the {len(light)} commands that need no donor "
               f"({', '.join('`' + str(r['row']) + '`' for r in light)}) started without "
               f"importing torch, in {max(r['seconds'] for r in light):.2f} s at most against "
               f"{floor['seconds']:.2f} s for `import torch` alone.")
    share = reuse["seconds"] / build["seconds"]
    verdict = "within" if share <= REUSE_SHARE_TARGET else "over"
    out.append(f"Reusing the finished cache took {reuse['seconds']:.2f} s, {share:.2f} of its "
               f"build ({verdict} the 1/5 target), of which {floor['seconds']:.2f} s is the "
               f"`import torch` floor.")
    one = _row(rows, "discovery", "one forward")
    fast = _row(rows, "discovery", "discover_taps")
    slow = _row(rows, "discovery", "one torch.fx cut")
    worth = fast["seconds"] / one["seconds"]
    verdict = "within" if worth <= TAP_FORWARDS_TARGET else "over"
    out.append(f"Tap discovery of {DONOR} at {IMAGE_SIZE} px took {fast['seconds'] * 1000:.0f} ms "
               f"on one thread, {worth:.1f} forward passes' worth ({verdict} the "
               f"{TAP_FORWARDS_TARGET}-pass target), against {slow['seconds'] * 1000:.0f} ms "
               f"({slow['seconds'] / one['seconds']:.0f} passes) for one cut per tap; "
               f"{slow['detail'].split('; ')[1]}.")
    lines += ["", " ".join(out), "",
              "| discovery (one process, 1 thread) | s | rounds | |", "|---|---:|---:|---|"]
    for r in rows:
        if r["part"] == "discovery":
            lines.append(f"| {r['row']} | {r['seconds']:.4f} | {r['rounds']} | {r.get('detail', '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
