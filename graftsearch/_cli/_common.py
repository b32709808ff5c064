"""Arguments and helpers shared by several commands."""

from __future__ import annotations

import argparse
from functools import lru_cache

from rich.console import Console

from graftsearch.donors._zoo import DonorSpec

# The command line's exit codes (listed in `graftsearch run --help` and the README).
EXIT_OK, EXIT_INFEASIBLE, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@lru_cache(maxsize=None)
def console() -> Console:
    return Console()


@lru_cache(maxsize=None)
def console_err() -> Console:
    return Console(stderr=True)


def add_donor_arguments(parser: argparse.ArgumentParser, *, default: str = "vgg16") -> None:
    g = parser.add_argument_group("donor")
    g.add_argument("--donor", default=None, metavar="NAME",
                   help="torchvision model name, 'efficientnet_lite0' or 'paper_vgg16' "
                        f"(default: {default}, or what --donor-checkpoint holds)")
    g.add_argument("--weights", default=None, metavar="W",
                   help="weights name of the donor, e.g. IMAGENET1K_V1 or DEFAULT (default: none)")
    g.add_argument("--donor-checkpoint", default=None, metavar="FILE",
                   help="state dict, graftsearch donor checkpoint, TorchScript or whole model file")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a pickled whole-model checkpoint (it can run code when loaded)")
    g.add_argument("--donor-classes", type=int, default=None, metavar="N",
                   help="number of outputs of the donor's classifier (checkpoints, paper_vgg16)")
    g.add_argument("--taps", default=None, metavar="NAMES",
                   help="comma-separated module names to tap instead of the automatic taps")
    parser.set_defaults(_donor_default=default)


def donor_spec_from_args(args: argparse.Namespace, *, image_size: int | None = None) -> DonorSpec:
    name = args.donor
    if name is None and args.donor_checkpoint is None:
        name = args._donor_default
    return DonorSpec(name=name, weights=args.weights, checkpoint=args.donor_checkpoint,
                     num_classes=args.donor_classes, trust_checkpoint=args.trust_checkpoint,
                     taps=args.taps, image_size=image_size)


def add_data_arguments(parser: argparse.ArgumentParser, *, required: bool = True,
                       seed: bool = True) -> None:
    """``--data``, ``--split``, ``--seed`` and ``--split-column`` (see :class:`DataSpec`)."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", required=required, default=None, metavar="SOURCE",
                   help="image folder (one sub-folder per class), CSV listing (path,label), "
                        "DeepWeeds directory (labels.csv + images/); 'folder:', 'csv:' or "
                        "'deepweeds:' before PATH forces the kind; 'deepweeds' alone is the "
                        "default data directory ($GRAFTSEARCH_DATA/deepweeds, downloaded on "
                        "first use)")
    g.add_argument("--split", default=None, metavar="MODE",
                   help="'paper' (stratified 60/20/20 drawn with the seed; default), "
                        "'official:K' (DeepWeeds fold K = 0..4) or 'column' (a CSV column)")
    if seed:
        g.add_argument("--seed", type=int, default=0, metavar="N",
                       help="the run's seed; also draws the 'paper' split (default: 0)")
    g.add_argument("--split-column", default=None, metavar="NAME",
                   help="column of the CSV listing holding train/val/test (implies "
                        "--split column; default name with --split column: 'split')")


def data_spec_from_args(args: argparse.Namespace):
    from graftsearch.data._sources import DataSpec

    split = args.split
    if split is None:
        split = "column" if args.split_column is not None else "paper"
    return DataSpec(source=args.data, split=split, seed=getattr(args, "seed", 0),
                    split_column=args.split_column)
