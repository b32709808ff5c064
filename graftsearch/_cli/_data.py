"""``graftsearch data download deepweeds --to DIR``."""

from __future__ import annotations

import argparse

from graftsearch.data._spec import default_deepweeds_dir
from graftsearch.data._download import download_deepweeds
from ._cache import _bar
from ._common import console


def register(sub) -> None:
    p = sub.add_parser("data", help="fetch datasets",
                       description="Fetch datasets graftsearch knows by name.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    d = data_sub.add_parser(
        "download", help="download a dataset (resumable, checksummed)",
        description="Download DeepWeeds (17,509 images, about 935 MB, and its labels and "
                    "official splits) into DIR: resumes a partial download, checks SHA-256, "
                    "unpacks atomically.")
    d.add_argument("dataset", choices=("deepweeds",), help="the dataset to fetch")
    d.add_argument("--to", default=None, metavar="DIR",
                   help=f"target directory (default: {default_deepweeds_dir()}, "
                        "under $GRAFTSEARCH_DATA when set)")
    d.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="base URL of a mirror serving images.zip, labels.csv and the split files "
                        "(repeatable; default: the official locations)")
    d.add_argument("--keep-archive", action="store_true", help="keep images.zip after unpacking")
    d.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    target = args.to if args.to is not None else default_deepweeds_dir()
    with _bar("download") as (_, callback):
        path = download_deepweeds(target, progress=callback, base_urls=args.mirror,
                                  keep_archive=args.keep_archive)
    also = " (or `--data deepweeds`)." if args.to is None else "."
    console().print(f"DeepWeeds is in {path}. Use it with `--data deepweeds:{path}`{also}",
                    highlight=False, soft_wrap=True, markup=False)
    return 0
