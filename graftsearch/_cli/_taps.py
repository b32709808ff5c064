"""``graftsearch taps``: the candidate taps of a donor with their exact costs."""

from __future__ import annotations

import argparse

from rich.table import Table

from graftsearch.donors._zoo import donor_names, load_donor
from graftsearch.taps._head import HeadSpec
from ._common import add_donor_arguments, console, donor_spec_from_args


def register(sub) -> None:
    p = sub.add_parser("taps", help="list a donor's candidate taps and their costs",
                       description="List the candidate taps of a donor at an image size, with "
                                   "channels, spatial size, and the exact parameters and MACs of "
                                   "the donor prefix up to each tap.")
    add_donor_arguments(p)
    p.add_argument("--image-size", type=int, default=128, metavar="PX",
                   help="input side length in pixels (default: 128, as the paper)")
    p.add_argument("--classes", type=int, default=9, metavar="N",
                   help="classes of the grafted head, for the 'graft' columns (default: 9)")
    p.add_argument("--head-width", type=int, default=256, metavar="N",
                   help="hidden units of the grafted head (default: 256; 0 for a linear head)")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    p.add_argument("--list", action="store_true", help="list every donor name and exit")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in donor_names():
            console().print(name, highlight=False)
        return 0
    head = HeadSpec(num_classes=args.classes, hidden=args.head_width)
    donor = load_donor(donor_spec_from_args(args), load_weights=False)
    taps = donor.taps(args.image_size)
    table = Table(title=f"{donor.name} at {taps.image_size} px: {len(taps)} taps")
    table.add_column("#", justify="right")
    table.add_column("name", no_wrap=True)
    for col in ("ch", "HxW", "params_upto", "MACs_upto", "graft params", "graft MiB"):
        table.add_column(col, justify="right")
    for t in taps:
        cost = taps.cost([t.index], head)
        table.add_row(str(t.index), t.name, str(t.channels), f"{t.height}x{t.width}",
                      f"{t.params_upto:,}", f"{t.macs_upto:,}", f"{cost.params:,}",
                      f"{cost.size_mib:.2f}")
    console().print(table)
    console().print(f"'graft' columns: that tap alone with a head of {args.head_width} hidden "
                    f"units and {args.classes} classes.", highlight=False)
    if args.csv:
        taps.to_csv(args.csv)
        console().print(f"wrote {args.csv}", highlight=False, markup=False)
    return 0
