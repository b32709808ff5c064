"""The paper's setup on DeepWeeds: its hand-picked rootstock beside the searched one.

Knowledge Grafting (Almurshed et al., 2025) grafted VGG16 layers 8, 9 and 10 (block3_conv2,
block3_conv3, block3_pool), pooled, onto Dense 256 -> Dense 9, trained 18 epochs with batch 16,
at 128 x 128 pixels, on the stratified 60/20/20 split of DeepWeeds: 1,934,665 parameters
(7.38 MB), 90.45% test accuracy. This script

1. checks the exact cost of that rootstock and of the paper's donor (no weights needed),
2. runs the whole path (``graftsearch.run``, what `graftsearch run` does) with the paper's
   defaults and a p_min equal to the manual pick's validation accuracy, so the search looks for
   something smaller that is at least as accurate,
3. trains and tests the manual pick with the same final schedule, and prints both.

It needs the DeepWeeds images (downloaded on first use, ~935 MB) and VGG16's ImageNet weights
(its pretrained DEFAULT weights, downloaded by torchvision). Offline, point it at local copies::

    python examples/paper_reproduction.py                       # downloads what it needs
    python examples/paper_reproduction.py --data ~/data/deepweeds --run-dir runs/paper
    python examples/paper_reproduction.py --cultivate 18        # graft from a fine-tuned donor

`--donor`/`--weights`/`--image-size` let the same script run on other data (the tests run it on
generated images with a small donor).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: use the checkout's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graftsearch as gs  # noqa: E402

MANUAL_PICK = (8, 9, 10)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="deepweeds")
    p.add_argument("--donor", default="vgg16")
    p.add_argument("--weights", default="DEFAULT", help="the donor's weights ('none': random)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--manual", default=";".join(map(str, MANUAL_PICK)),
                   help="the hand-picked taps to compare with (default: the paper's 8;9;10)")
    p.add_argument("--cultivate", type=int, default=0)
    p.add_argument("--generations", type=int, default=40)
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--run-dir", default="runs/paper-reproduction")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    # 1. exact costs, as in the paper's Table 2
    if args.donor == "vgg16" and args.image_size == 128:
        taps = gs.load_donor("vgg16", load_weights=False).taps(128)
        cost = taps.cost(MANUAL_PICK, gs.HeadSpec(num_classes=9))
        # counting parameters needs no weights: build the architecture with random ones
        donor = gs.load_donor("paper_vgg16", weights="none", num_classes=9, image_size=128)
        n = sum(q.numel() for q in donor.module.parameters())
        print(f"paper rootstock (taps 8;9;10): {cost.params:,} params, {cost.size_mib:.2f} MiB "
              f"(paper: 1,934,665, 7.38 MB)")
        print(f"paper donor: {n:,} params, {n * 4 / 2**20:.2f} MiB (paper: 16,880,201, 64.39 MB)")

    # 2. the manual pick's validation accuracy sets p_min; then the search
    dataset = gs.load_dataset(args.data, seed=args.seed)
    donor = gs.load_donor(args.donor, weights=args.weights)
    cache = gs.build_cache(donor, dataset, image_size=args.image_size, cache_dir=args.cache_dir)
    manual = cache.taps.normalize(args.manual)
    manual_p = gs.make_fitness("mlp", cache, seed=args.seed).evaluate(manual).val_accuracy
    print(f"manual pick {args.manual}: proxy validation accuracy {manual_p:.4f}")
    outcome = gs.run(gs.RunSettings(
        data=args.data, donor=args.donor, weights=args.weights, image_size=args.image_size,
        seed=args.seed, cache_dir=args.cache_dir, objective="min-size", p_min=round(manual_p, 4),
        cultivate=str(args.cultivate), population=args.population, generations=args.generations,
        run_dir=args.run_dir))

    # 3. the manual pick, trained and tested with the same final schedule
    if args.cultivate:
        donor = gs.load_donor(checkpoint=str(Path(args.run_dir) / "donor.pt"))
        cache = gs.build_cache(donor, dataset, image_size=args.image_size, cache_dir=args.cache_dir)
    final = gs.train_final(donor, cache, manual, dataset=dataset,
                           settings=gs.FinalSettings(seed=args.seed, latency_runs=0, memory=False))
    searched = json.loads((Path(args.run_dir) / "best" / "metrics.json").read_text()) \
        if outcome.feasible else None
    print()
    print(f"{'':<10}{'taps':>14}{'params':>12}{'MiB':>8}{'val acc':>10}{'test acc':>10}")
    g = final.metrics["graft"]
    print(f"{'manual':<10}{args.manual:>14}{g['params']:>12,}{g['size_mib']:>8.2f}"
          f"{g['val']['accuracy']:>10.4f}{g['test']['accuracy']:>10.4f}")
    if searched:
        s = searched["graft"]
        print(f"{'searched':<10}{searched['taps']:>14}{s['params']:>12,}{s['size_mib']:>8.2f}"
              f"{s['val']['accuracy']:>10.4f}{s['test']['accuracy']:>10.4f}")
    else:
        print("searched: nothing reached the manual pick's accuracy (see the run's report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
