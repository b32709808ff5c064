"""A search whose fitness evaluations run on a Dask cluster (extra `dask`).

Without an address the script starts a small `LocalCluster` on 127.0.0.1, so it runs anywhere;
with `--scheduler tcp://HOST:8786` it uses your cluster (e.g. one started by dask-jobqueue on
SLURM). The features come from an on-disk feature cache, which workers open from its path: on a
real cluster, put `--cache-dir` on a filesystem every worker sees. Results are identical to a
local run with the same seed.

    python examples/distributed_search.py --data ../shared/data/plant-seedlings/images
    python examples/distributed_search.py --data /shared/images --cache-dir /shared/cache \\
        --scheduler tcp://head-node:8786
    python examples/distributed_search.py --generated     # no images: generated features
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: use the checkout's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graftsearch as gs  # noqa: E402


def generated_features() -> gs.ArrayFeatures:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from custom_fitness import generated_features as make

    return make()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="images (a folder per class); see --generated")
    p.add_argument("--generated", action="store_true", help="use generated features instead")
    p.add_argument("--donor", default="efficientnet_lite0")
    p.add_argument("--weights", default="IMAGENET")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--scheduler", default=None, help="tcp://HOST:PORT (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default: 2)")
    p.add_argument("--p-min", type=float, default=0.8)
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--run-dir", default=None)
    args = p.parse_args(argv)
    if not args.generated and not args.data:
        p.error("pass --data PATH or --generated")

    cluster = None
    address = args.scheduler
    if address is None:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        address = cluster.scheduler_address
        print(f"started a LocalCluster at {address}")
    try:
        if args.generated:
            source = dict(features=generated_features())
        else:
            donor = gs.load_donor(args.donor, weights=None if args.weights == "none" else args.weights)
            dataset = gs.load_dataset(args.data)
            source = dict(features=gs.build_cache(donor, dataset, image_size=args.image_size,
                                                  cache_dir=args.cache_dir))
        result = gs.search(**source, fitness="fast", objective="min-size", p_min=args.p_min,
                           population=args.population, generations=args.generations,
                           dask_scheduler=address, run_dir=args.run_dir)
    finally:
        if cluster is not None:
            cluster.close()
    print(result.message)
    print(result.pareto[["taps", "params", "val_accuracy"]].to_string(index=False))
    return 0 if result.feasible else 1


if __name__ == "__main__":
    sys.exit(main())
