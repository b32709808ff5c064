"""Cache extraction speed: tapping every candidate layer vs a plain forward pass.

On ``../shared/data/plant-seedlings/images`` at 128 px, for EfficientNet-Lite0 (ImageNet
weights) and VGG16 (no weights; speed does not depend on them), measured side by side in one run:

- baseline: the donor trunk cut after its deepest tap, returning only that output, over the same
  batches from the same loader (image decoding included in both);
- cache: ``build_cache`` end to end into an empty cache directory (input fingerprints, every tap
  pooled, chunk files, assembly, manifest);
- the time to reopen the finished cache (``FeatureCache.open``) and to ask for it again
  (``build_cache`` finding it: file and weight fingerprints, zero forward passes);
- bytes per image on disk.

Usage: ``python -m benchmarks.cache_extraction [--vgg16-images 240] [--lite0-images 0 (all)]
[--reps 2] [--threads 1] [--workers 1] [--donors efficientnet_lite0,vgg16] [--out DIR]``.
Writes ``benchmarks/results/cache_extraction.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._machine import cpu_name  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "plant-seedlings" / "images"
RESULTS = ROOT / "benchmarks" / "results"
IMAGE_SIZE = 128
BATCH = 64


def _subset(n_images: int, workdir: Path) -> str:
    """A data source: the whole folder, or a CSV listing of the first images of every class."""
    if n_images <= 0:
        return str(DATA)
    classes = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    per_class = max(3, n_images // len(classes))
    listing = workdir / "subset.csv"
    with open(listing, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for c in classes:
            for p in sorted((DATA / c).iterdir())[:per_class]:
                w.writerow([str(p), c])
    return f"csv:{listing}"


def _baseline(donor, dataset, workers: int) -> float:
    """Seconds for a plain forward pass of the trunk over the cache's own batches."""
    import torch

    from graftsearch.features._options import DEFAULT_CHUNK
    from graftsearch.data._spec import SPLITS
    from graftsearch.data._loading import SplitImages
    from graftsearch.features._extract import chunk_loader, plan_chunks
    from graftsearch.donors._preprocessing import Preprocessing
    from graftsearch.taps._trace import build_trunk
    from graftsearch.training._imagetrain import BatchFormat

    taps = donor.taps(IMAGE_SIZE)
    pre = Preprocessing(image_size=IMAGE_SIZE, mean=donor.preprocessing.mean,
                        std=donor.preprocessing.std)
    trunk = build_trunk(donor.module, [taps.names[-1]]).eval()
    chunks = plan_chunks({s: len(dataset.split(s)) for s in SPLITS}, DEFAULT_CHUNK)
    formatted = BatchFormat(trunk)  # chosen as the cache chooses it (on this plain trunk)
    began = time.perf_counter()
    with torch.inference_mode():
        for split in SPLITS:
            images = SplitImages(dataset.split(split), pre)
            loader = chunk_loader(images, [c for c in chunks if c.split == split],
                                  batch_size=BATCH, num_workers=workers,
                                  device=torch.device("cpu"))
            for x, _, _, _ in loader:
                formatted.infer(lambda b: trunk(b)["t0"], x)
    return time.perf_counter() - began


def _interleaved(donor, dataset, workers: int) -> Dict[str, float]:
    """Seconds of the plain trunk and of the cache's tapped trunk + GAP on each batch of one
    pass over the loader, timed back to back (order rotating per batch), so that the machine's
    load hits all alike; decoding is left out. Both take the batches in the format the cache
    uses (channels-last where the trunk allows it); ``plain_contiguous`` is the plain trunk on
    contiguous (NCHW) batches, a plain forward pass as PyTorch gives it by default."""
    import torch

    from graftsearch.data._spec import SPLITS
    from graftsearch.data._loading import SplitImages
    from graftsearch.features._extract import forward_gap, prepare_trunk
    from graftsearch.donors._preprocessing import Preprocessing
    from graftsearch.taps._trace import build_trunk
    from graftsearch.training._imagetrain import input_format

    taps = donor.taps(IMAGE_SIZE)
    pre = Preprocessing(image_size=IMAGE_SIZE, mean=donor.preprocessing.mean,
                        std=donor.preprocessing.std)
    plain = build_trunk(donor.module, [taps.names[-1]]).eval()
    tapped = prepare_trunk(donor.module, taps.names, torch.device("cpu"), donor.name)
    fmt = input_format(tapped, torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    runs = {
        "plain": lambda x: plain(x.contiguous(memory_format=fmt))["t0"],
        "tapped": lambda x: [f.numpy() for f in
                             forward_gap(tapped, x.contiguous(memory_format=fmt), len(taps))],
        "plain_contiguous": lambda x: plain(x.contiguous())["t0"],
    }
    seconds = {k: 0.0 for k in runs}
    names = list(runs)
    k = 0
    with torch.inference_mode():
        for split in SPLITS:
            loader = torch.utils.data.DataLoader(SplitImages(dataset.split(split), pre),
                                                 batch_size=BATCH, num_workers=workers)
            for x, _, _, _ in loader:
                for which in names[k % len(names):] + names[:k % len(names)]:
                    t0 = time.perf_counter()
                    runs[which](x)
                    seconds[which] += time.perf_counter() - t0
                k += 1
    seconds["format"] = "channels_last" if fmt == torch.channels_last else "contiguous"
    return seconds


def _warm_files(dataset) -> float:
    """Read every image file once, so the first timed pass does not pay for a cold disk."""
    from graftsearch.data._spec import SPLITS

    began = time.perf_counter()
    for split in SPLITS:
        for path in dataset.split(split).paths:
            with open(path, "rb") as fh:
                fh.read()
    return time.perf_counter() - began


def _cache(donor, dataset, workers: int, root: Path) -> tuple[float, object]:
    import graftsearch as gs

    began = time.perf_counter()
    cache = gs.build_cache(donor, dataset, image_size=IMAGE_SIZE, cache_dir=root, device="cpu",
                           batch_size=BATCH, num_workers=workers)
    return time.perf_counter() - began, cache


def measure(name: str, weights, n_images: int, *, reps: int, workers: int, log) -> dict:
    import torch

    import graftsearch as gs

    work = Path(tempfile.mkdtemp(prefix="gs-bench-"))
    try:
        dataset = gs.load_dataset(_subset(n_images, work), seed=0)
        n = len(dataset)
        donor = gs.load_donor(name, weights=weights)
        taps = donor.taps(IMAGE_SIZE)  # discovered once, outside the timings
        warm_s = _warm_files(dataset)
        log(f"{name}: read every image file once ({warm_s:.1f} s)")
        with torch.inference_mode():  # warm up the kernels
            donor.module.eval()(torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE))
        base_s, cache_s, last = [], [], None
        for rep in range(reps):  # ABBA order from 2 reps on, so that a load drift hits both alike
            for which in (("baseline", "cache") if rep % 2 == 0 else ("cache", "baseline")):
                if which == "baseline":
                    base_s.append(_baseline(donor, dataset, workers))
                    log(f"{name}: baseline rep {rep}: {n / base_s[-1]:.1f} images/s")
                else:
                    t, last = _cache(donor, dataset, workers, work / f"cache{rep}")
                    cache_s.append(t)
                    log(f"{name}: cache rep {rep}: {n / t:.1f} images/s")
        per_batch = _interleaved(donor, dataset, workers)
        t_plain, t_tapped = per_batch["plain"], per_batch["tapped"]
        log(f"{name}: interleaved: plain {n / t_plain:.1f}, tapped {n / t_tapped:.1f}, plain "
            f"contiguous {n / per_batch['plain_contiguous']:.1f} images/s")
        reopen = []
        for _ in range(5):
            t0 = time.perf_counter()
            gs.FeatureCache.open(last.path)
            reopen.append(time.perf_counter() - t0)
        reuse = []
        for _ in range(3):
            t0 = time.perf_counter()
            again = gs.build_cache(donor, dataset, image_size=IMAGE_SIZE, cache_dir=work / f"cache{reps - 1}",
                                   device="cpu", batch_size=BATCH, num_workers=workers)
            reuse.append(time.perf_counter() - t0)
            assert again.path == last.path
        t0 = time.perf_counter()
        for s in last.splits:
            for tap in last.taps:
                last.features(s, tap.index).sum()
        read_all = time.perf_counter() - t0
        dim = sum(taps.channels)
        return {
            "donor": name, "weights": weights or "none", "image_size": IMAGE_SIZE, "images": n,
            "taps": len(taps), "feature_dim": dim, "batch_size": BATCH, "workers": workers,
            "torch_threads": torch.get_num_threads(), "reps": reps,
            "baseline_images_per_s": round(n * reps / sum(base_s), 2),
            "cache_images_per_s": round(n * reps / sum(cache_s), 2),
            "ratio": round(sum(base_s) / sum(cache_s), 3),
            "plain_forward_images_per_s": round(n / t_plain, 2),
            "tapped_forward_images_per_s": round(n / t_tapped, 2),
            "ratio_forward": round(t_plain / t_tapped, 3),
            "batch_format": per_batch["format"],
            "plain_contiguous_images_per_s": round(n / per_batch["plain_contiguous"], 2),
            "reopen_ms": round(1000 * statistics.median(reopen), 2),
            "reuse_ms": round(1000 * statistics.median(reuse), 1),
            "read_all_features_ms": round(1000 * read_all, 1),
            "bytes_per_image": round(last.nbytes / n, 1),
            "bytes_per_image_float16": round((last.nbytes - n * (4 * dim)) / n + 2 * dim, 1),
            "cache_mib": round(last.nbytes / 2**20, 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lite0-images", type=int, default=0, help="0 = all 3,566 images")
    parser.add_argument("--vgg16-images", type=int, default=240,
                        help="VGG16 runs on a per-class subset of about this many images")
    parser.add_argument("--reps", type=int, default=2,
                        help="repetitions of baseline and cache each (ABBA order from 2 on)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the loader's worker takes the other core)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--donors", default="efficientnet_lite0,vgg16",
                        help="comma-separated subset of efficientnet_lite0,vgg16")
    parser.add_argument("--out", default=str(RESULTS), help="where the table goes")
    args = parser.parse_args(argv)
    donors = [d.strip() for d in args.donors.split(",") if d.strip()]
    if not DATA.is_dir():
        print(f"skipped: {DATA} is not there", file=sys.stderr)
        return 0
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = _run(args, donors)
    finally:
        torch.set_num_threads(threads_before)
    _write(rows, args, argv)
    return 0


def _run(args, donors) -> list:
    rows = []
    for name, weights, n in (("efficientnet_lite0", "IMAGENET", args.lite0_images),
                             ("vgg16", None, args.vgg16_images)):
        if name not in donors:
            continue
        rows.append(measure(name, weights, n, reps=args.reps, workers=args.workers,
                            log=lambda m: print(m, flush=True)))
    return rows


def _headline(rows: list) -> list:
    """One computed sentence per donor: the per-batch ratio (the target), the end-to-end ratio
    and what the batch format gives."""
    out = []
    for r in rows:
        met = "meets" if r["ratio_forward"] >= 0.9 else "misses"
        gain = r["plain_forward_images_per_s"] / r["plain_contiguous_images_per_s"]
        out.append(
            f"- **{r['donor']}**: tapping every layer (all {r['taps']} taps pooled, per batch) "
            f"runs at {r['tapped_forward_images_per_s']} images/s against the plain trunk's "
            f"{r['plain_forward_images_per_s']}: ratio {r['ratio_forward']:.3f}, which {met} the "
            f"0.9 target. End to end, `build_cache` (decoding, fingerprints, chunks, assembly) "
            f"reaches {r['ratio']:.3f} of the baseline pass. Batches in the {r['batch_format']} "
            f"format make the plain trunk {gain:.2f}x as fast as on contiguous batches "
            f"({r['plain_contiguous_images_per_s']} images/s).")
    return out


def _write(rows: list, args, argv) -> None:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "cache_extraction.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    given = argv if argv is not None else sys.argv[1:]
    command = "python -m benchmarks.cache_extraction " + " ".join(given)
    lines = [
        "# Cache extraction: every tap pooled vs a plain forward pass",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu_name()}), shared with other jobs; torch "
        f"{torch.__version__}, {args.threads} torch thread(s), {args.workers} loader worker(s), "
        f"batch {BATCH}, CPU, {IMAGE_SIZE} px. Data: ../shared/data/plant-seedlings/images "
        "(VGG16 on a per-class subset, see `images`).",
        "",
        "Every image file was read once before the timings (a warm file cache for all). "
        "`baseline`: the trunk up to the deepest tap, only its output, over the same batches "
        "from the same loader, in the cache's batch format (`batch_format`). `cache`: `build_cache` end to end into an empty directory "
        "(fingerprints, all taps pooled, chunks, assembly, manifest). Both in one run, "
        + (f"in ABBA order over {args.reps} repetitions each. " if args.reps >= 2 else
           "one repetition each, the baseline first (no ABBA order: pass `--reps 2` or more). ")
        + "`ratio` = cache images/s / baseline images/s (end to end, decoding included). "
        "`reopen_ms`: `FeatureCache.open`; `reuse_ms`: `build_cache` finding the finished cache "
        "(fingerprints of files and weights, zero forward passes). `bytes_per_image_float16` is "
        "computed from the float32 size (features at 2 bytes). `ratio_forward`: the plain trunk "
        "vs the cache's trunk returning every tap + GAP + copy to numpy, timed back to back on "
        "each batch of one more pass (order rotating per batch, decoding left out): the cost "
        "of tapping every layer, with the machine's load drift cancelled (the 0.9 target); "
        "`plain_contiguous_images_per_s`: the plain trunk on contiguous (NCHW) batches in the "
        "same rotation.",
        "",
    ]
    lines += _headline(rows) + [
        "",
        "| " + " | ".join(rows[0]) + " |",
        "| " + " | ".join("---" for _ in rows[0]) + " |",
    ]
    lines += ["| " + " | ".join(str(r[k]) for k in rows[0]) + " |" for r in rows]
    (out / "cache_extraction.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
