"""``graftsearch taps``: the candidate taps of a donor with their exact costs."""

from __future__ import annotations

import argparse

from rich import box
from rich.table import Table

from graftsearch.donors import _timm
from graftsearch.donors._names import donor_names, timm_families
from graftsearch.donors._spec import NO_WEIGHTS
from graftsearch.pipeline._settings import build_part
from ._common import DONOR_SETTINGS, add_settings, console, donor_spec, settings_values


def register(sub) -> None:
    p = sub.add_parser("taps", help="list a donor's candidate taps and their costs",
                       description="List the candidate taps of a donor at an image size, with "
                                   "channels, spatial size, and the exact parameters and MACs of "
                                   "the donor prefix up to each tap. Taps and costs do not "
                                   "depend on weight values, so named weights are neither read "
                                   "nor downloaded (a checkpoint is read).")
    add_settings(p.add_argument_group("donor"), DONOR_SETTINGS)
    add_settings(p, ("image_size", "head_width"))
    p.add_argument("--classes", type=int, default=9, metavar="N",
                   help="classes of the grafted head, for the 'graft' columns (default: 9)")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    p.add_argument("--list", action="store_true", help="list every donor name and exit")
    p.set_defaults(handler=run)


def _print_timm_families() -> None:
    # timm has 1000+ models: one line per family keeps --list readable
    families = timm_families()
    if not families:
        console().print(f"timm:NAME (timm's models: not installed; `{_timm.INSTALL_HINT}`)",
                        highlight=False, markup=False, soft_wrap=True)
        return
    total = sum(len(v) for v in families.values())
    console().print(f"timm:NAME, {total} timm models in {len(families)} families "
                    "(all names: python -c \"import timm; print(timm.list_models())\"):",
                    highlight=False, markup=False, soft_wrap=True)
    for family, names in families.items():
        shown = ", ".join(f"{_timm.PREFIX}{n}" for n in names[:3])
        more = f", ... ({len(names)})" if len(names) > 3 else ""
        console().print(f"  {family}: {shown}{more}", highlight=False, markup=False,
                        soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in donor_names():
            console().print(name, highlight=False)
        _print_timm_families()
        return 0
    values = settings_values(args)
    head = build_part("head", values, num_classes=args.classes)
    spec = donor_spec(values)
    # torch loads here, not with the parser: --help, --list and argument errors stay free of it
    from graftsearch.donors._zoo import load_donor

    donor = load_donor(spec, load_weights=False)
    taps = donor.taps(values["image_size"])
    # Numbers never wrap or shrink (a cut number is worse than none); without side borders and
    # with two-line headers VGG16 at 224 px takes 76 columns, and a long tap name folds.
    table = Table(title=f"{donor.name} at {taps.image_size} px: {len(taps)} taps",
                  box=box.SIMPLE_HEAVY, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("name", overflow="fold")
    for col in ("ch", "HxW", "params\nupto", "MACs\nupto", "graft\nparams", "graft\nMiB"):
        table.add_column(col, justify="right", no_wrap=True)
    for t in taps:
        cost = taps.cost([t.index], head)
        table.add_row(str(t.index), t.name, str(t.channels), f"{t.height}x{t.width}",
                      f"{t.params_upto:,}", f"{t.macs_upto:,}", f"{cost.params:,}",
                      f"{cost.size_mib:.2f}")
    console().print(table)
    console().print(f"'graft' columns: that tap alone with a head of {head.hidden} hidden "
                    f"units and {args.classes} classes.", highlight=False)
    unread = donor.weights not in (None, NO_WEIGHTS)
    console().print(f"donor {donor.name}: {donor.weights_text}"
                    + (" (not read: taps and costs do not depend on weight values)" if unread
                       else ""), highlight=False, markup=False, soft_wrap=True)
    if args.csv:
        taps.to_csv(args.csv)
        console().print(f"wrote {args.csv}", highlight=False, markup=False)
    return 0
