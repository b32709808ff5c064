"""``graftsearch donor train``: cultivate a donor on a dataset (the paper's step 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from graftsearch.cultivate._settings import HEADS, CultivateSettings
from graftsearch.training._recipe import RECIPES
from graftsearch._utils import labels as L
from graftsearch._utils.errors import ParameterError, param_message
from graftsearch.pipeline._settings import build_part, prepare_data
from ._common import DATA_SETTINGS, DONOR_SETTINGS, add_settings, console, donor_spec, settings_values


def register(sub) -> None:
    p = sub.add_parser("donor", help="cultivate (fine-tune) a donor on your data",
                       description="Work with donors. `donor train` fine-tunes one on a dataset.")
    donor_sub = p.add_subparsers(dest="donor_command", metavar="ACTION")
    donor_sub.required = True
    t = donor_sub.add_parser(
        "train", help="fine-tune a donor on a dataset and save a checkpoint",
        description="The paper's step 1: fine-tune a pretrained donor on the dataset's training "
                    "split (by default the standard recipe: AdamW, warm-up and cosine decay, "
                    "label smoothing, flips and crops; --recipe paper for the paper's Adam "
                    "settings; early stopping on the validation loss), then "
                    "report its train/val/test accuracy and loss, parameters and MiB (the donor "
                    "row of the paper's Table 2) and save a checkpoint that --donor-checkpoint "
                    "loads. The flags it shares with `graftsearch run` mean the same and have "
                    "the same defaults (what `run --cultivate N` trains).")
    add_settings(t.add_argument_group("donor"), DONOR_SETTINGS)
    add_settings(t.add_argument_group("data"), DATA_SETTINGS)
    g = t.add_argument_group("training")
    d = CultivateSettings()  # the flags' defaults are the settings' own
    g.add_argument("--head", choices=HEADS, default=d.head,
                   help="'paper': Flatten + 2 x Dense 256 (LeakyReLU, dropout) on a VGG16 trunk; "
                        "'replace': the donor's own classifier with a new last Linear; 'auto': "
                        f"paper for vgg16, else replace (default: {d.head})")
    g.add_argument("--trainable-taps", default="all" if d.trainable_taps is None
                   else str(d.trainable_taps), metavar="N|all",
                   help="train the last N taps and the head, freeze the rest (default: "
                        f"{d.trainable_taps}, the paper's 'frozen up to the 17th layer from "
                        "the end'; 'all' trains every layer)")
    g.add_argument("--recipe", choices=RECIPES, default=d.recipe,
                   help="fine-tuning recipe: 'standard' (AdamW, warm-up + cosine, 10x rate for "
                        "the new classifier, label smoothing, flips and crops) or 'paper' (Adam "
                        f"1e-4, batch 16, no augmentation) (default: {d.recipe})")
    g.add_argument("--epochs", type=int, default=d.epochs, metavar="N",
                   help=f"at most N epochs (default: {d.epochs})")
    # not run's --batch-size (the batch of an image pass): a training setting of this command
    g.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   dest="train_batch_size",
                   help="images per training batch (default: the recipe's)")
    g.add_argument("--lr", type=float, default=d.lr, metavar="LR",
                   help="learning rate of the pretrained body (default: the recipe's)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="W",
                   help="default: the recipe's")
    g.add_argument("--patience", type=int, default=d.patience, metavar="N",
                   help="stop after N epochs without a lower validation loss; 0: never "
                        f"(default: {d.patience}); the best epoch's weights are kept")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment,
                   help="random horizontal flips and crops of the training images (default: "
                        "the recipe's)")
    add_settings(g, ("image_size", "device", "workers"))
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
    values = settings_values(args)
    # the run's cultivation part, with the training flags only this command has
    settings = build_part("cultivate", values, head=args.head, recipe=args.recipe,
                          trainable_taps=_trainable(args.trainable_taps), epochs=args.epochs,
                          batch_size=args.train_batch_size, lr=args.lr, weight_decay=args.weight_decay,
                          patience=args.patience or None, augment=args.augment)
    donor_part = donor_spec(values)
    # The stages load here, not with the parser: --help and argument errors stay free of torch.
    from graftsearch.cultivate._cultivate import cultivate_donor
    from graftsearch.data import load_dataset
    from graftsearch.donors._zoo import load_donor
    from graftsearch.report._report import fmt_float, fmt_int, fmt_mib, fmt_pct

    prepare_data(values["data"])
    dataset = load_dataset(build_part("data", values))
    donor = load_donor(donor_part)
    console().print(f"donor {donor.name}: {donor.weights_text}", highlight=False, markup=False,
                    soft_wrap=True)
    out = Path(args.out) if args.out else Path(f"donor-{donor.name}.pt")
    with Progress(TextColumn("cultivate {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(), transient=True) as bar:
        task = bar.add_task("", total=settings.epochs)

        shown = L.accuracy(L.CULTIVATION_VAL)

        def callback(p) -> None:
            info = p.info
            bar.update(task, completed=p.done,
                       description=f"{shown} {info.get('val_accuracy', 0):.3f}")
            console().print(f"epoch {p.done}: train loss {info['train_loss']:.4f} acc "
                            f"{info['train_accuracy']:.4f}, val loss {info['val_loss']:.4f}, "
                            f"{shown} {info['val_accuracy']:.4f}", highlight=False)

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
