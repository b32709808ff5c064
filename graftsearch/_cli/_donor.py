"""``graftsearch donor train``: cultivate a donor on a dataset (the paper's step 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from graftsearch.cultivate._cultivate import HEADS, PAPER_TRAINABLE_TAPS, CultivateSettings, cultivate_donor
from graftsearch.data._sources import load_dataset
from graftsearch.donors._zoo import load_donor
from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.report._report import fmt_float, fmt_int, fmt_mib, fmt_pct
from ._common import (add_data_arguments, add_donor_arguments, console, data_spec_from_args,
                      donor_spec_from_args)


def register(sub) -> None:
    p = sub.add_parser("donor", help="cultivate (fine-tune) a donor on your data",
                       description="Work with donors. `donor train` fine-tunes one on a dataset.")
    donor_sub = p.add_subparsers(dest="donor_command", metavar="ACTION")
    donor_sub.required = True
    t = donor_sub.add_parser(
        "train", help="fine-tune a donor on a dataset and save a checkpoint",
        description="The paper's step 1: fine-tune a pretrained donor on the dataset's training "
                    "split (Adam, cross-entropy, early stopping on the validation loss), then "
                    "report its train/val/test accuracy and loss, parameters and MiB (the donor "
                    "row of the paper's Table 2) and save a checkpoint that --donor-checkpoint "
                    "loads.")
    add_donor_arguments(t)
    add_data_arguments(t)
    g = t.add_argument_group("training")
    g.add_argument("--head", choices=HEADS, default="auto",
                   help="'paper': Flatten + 2 x Dense 256 (LeakyReLU, dropout) on a VGG16 trunk; "
                        "'replace': the donor's own classifier with a new last Linear; 'auto': "
                        "paper for vgg16, else replace (default: auto)")
    g.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="input side (default: 128 with the paper head, else the donor's own)")
    g.add_argument("--trainable-taps", default=str(PAPER_TRAINABLE_TAPS), metavar="N|all",
                   help="train the last N taps and the head, freeze the rest (default: "
                        f"{PAPER_TRAINABLE_TAPS}, the paper's 'frozen up to the 17th layer from "
                        "the end'; 'all' trains every layer)")
    d = CultivateSettings()  # the flags' defaults are the settings' own
    g.add_argument("--epochs", type=int, default=d.epochs, metavar="N",
                   help=f"at most N epochs (default: {d.epochs})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   help=f"default: {d.batch_size}")
    g.add_argument("--lr", type=float, default=d.lr, metavar="LR",
                   help=f"Adam learning rate (default: {d.lr:g})")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="W",
                   help=f"default: {d.weight_decay:g}")
    g.add_argument("--patience", type=int, default=d.patience, metavar="N",
                   help="stop after N epochs without a lower validation loss; 0: never "
                        f"(default: {d.patience}); the best epoch's weights are kept")
    g.add_argument("--augment", action="store_true",
                   help="random horizontal flips and crops of the training images")
    g.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (CUDA when present), cpu or cuda (default: auto)")
    g.add_argument("--workers", type=int, default=0, metavar="N",
                   help="image-decoding worker processes (default: 0)")
    g.add_argument("--out", default=None, metavar="FILE",
                   help="checkpoint to write (default: donor-NAME.pt in the current directory)")
    t.set_defaults(handler=run_train)


def _trainable(value: str):
    if value.strip().lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise ParameterError(param_message("trainable_taps", "an integer >= 0 or 'all'", value)) from None


def run_train(args: argparse.Namespace) -> int:
    settings = CultivateSettings(
        head=args.head, image_size=args.image_size, trainable_taps=_trainable(args.trainable_taps),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, patience=args.patience or None, augment=args.augment,
        seed=args.seed, device=args.device, num_workers=args.workers)
    dataset = load_dataset(data_spec_from_args(args))
    donor = load_donor(donor_spec_from_args(args))
    out = Path(args.out) if args.out else Path(f"donor-{donor.name}.pt")
    with Progress(TextColumn("cultivate {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(), transient=True) as bar:
        task = bar.add_task("", total=settings.epochs)

        def callback(p) -> None:
            info = p.info
            bar.update(task, completed=p.done,
                       description=f"val acc {info.get('val_accuracy', 0):.3f}")
            console().print(f"epoch {p.done}: train loss {info['train_loss']:.4f} acc "
                            f"{info['train_accuracy']:.4f}, val loss {info['val_loss']:.4f} acc "
                            f"{info['val_accuracy']:.4f}", highlight=False)

        result = cultivate_donor(donor, dataset, settings=settings, progress=callback)
    result.save(out)
    row = result.table_row()
    table = Table(title=f"cultivated donor {row['model']} (best epoch {result.best_epoch} of "
                        f"{len(result.history)})")
    for col in ("", "train", "val", "test"):
        table.add_column(col, justify="right")
    table.add_row("accuracy", *(fmt_pct(row[f"{s}_accuracy"]) for s in ("train", "val", "test")))
    table.add_row("loss", *(fmt_float(row[f"{s}_loss"]) for s in ("train", "val", "test")))
    console().print(table)
    console().print(f"parameters {fmt_int(row['params'])} ({fmt_int(result.trainable_params)} "
                    f"trained), {fmt_mib(row['size_mib'])} MiB; checkpoint {out}. Graft from it "
                    f"with `--donor-checkpoint {out}`.", highlight=False, soft_wrap=True)
    return 0
