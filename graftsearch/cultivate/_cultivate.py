"""Donor cultivation, the paper's step 1: fine-tune a pretrained donor on the dataset's images.

The paper loads VGG16 without its top, freezes "the early layers, up to the 17th from the end",
adds Flatten -> Dense 256 (LeakyReLU) -> Dropout -> Dense 256 (LeakyReLU) -> Dropout -> Dense
(softmax) and trains with Adam and categorical cross-entropy. Keras' ``VGG16(include_top=False)``
has 19 layers (the input layer and graftsearch's 18 vgg16 taps), so ``layers[:-17]`` freezes the
input layer and ``block1_conv1`` only. graftsearch states the rule in taps: ``trainable_taps=17``
trains the last 17 taps and freezes everything needed for the earlier ones (for vgg16: tap 1,
``features.0``, the first convolution). The same rule applies to any donor (its own taps), and
``trainable_taps=None`` trains every layer. Frozen batch-norm layers also keep their statistics.

Other donors keep their own classifier with its last Linear replaced by one for the dataset's
classes (``head="replace"``), so that the checkpoint loads into the same torchvision
architecture with ``num_classes`` classes.
"""

from __future__ import annotations

import copy
import logging
import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from graftsearch._utils.device import resolve_device
from graftsearch.training._imagetrain import logits_on_images, loss_and_accuracy, train_epoch
from graftsearch._utils.errors import DonorError, ParameterError, param_message
from graftsearch.training._recipe import make_optimizer, make_scheduler
from graftsearch.training._metrics import ClassificationMetrics, compute_metrics
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch._utils.seeding import derive_seed
from graftsearch.taps._records import params_mib
from graftsearch.taps._trace import build_trunk, count_params
from graftsearch.cultivate._settings import CultivateSettings

logger = logging.getLogger("graftsearch")

_VGG16_NAMES = ("vgg16", "vgg16_bn", "paper_vgg16")


@dataclass
class Cultivation:
    """A cultivated donor and the paper's Table 2 donor row for it.

    ``donor`` is the fine-tuned :class:`Donor` (eval mode; its ``class_names`` are the dataset's
    classes, so the final model's report can test it). ``metrics[split]`` holds accuracy and
    loss of train, val and test; ``test`` the full test metrics; ``history`` one dict per epoch;
    ``frozen`` the names of the frozen parameters.
    """

    donor: Any
    history: List[Dict[str, float]]
    best_epoch: int
    metrics: Dict[str, Dict[str, float]]
    test: ClassificationMetrics
    params: int
    trainable_params: int
    frozen: List[str] = field(repr=False)
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def size_mib(self) -> float:
        return params_mib(self.params)

    def table_row(self) -> Dict[str, Any]:
        """The donor row of the paper's Table 2 (plus accuracy and loss of every split)."""
        row: Dict[str, Any] = {"model": self.donor.name, "params": self.params,
                               "size_mib": self.size_mib}
        for split in ("train", "val", "test"):
            row[f"{split}_accuracy"] = self.metrics[split]["accuracy"]
            row[f"{split}_loss"] = self.metrics[split]["loss"]
        return row

    def save(self, path) -> Path:
        """Write a donor checkpoint that ``load_donor(checkpoint=path)`` loads."""
        from graftsearch.donors._checkpoints import save_donor_checkpoint

        save_donor_checkpoint(self.donor, path, class_names=self.donor.class_names,
                              extra={"cultivation": {"table_row": self.table_row(),
                                                     "best_epoch": self.best_epoch,
                                                     "history": self.history,
                                                     "settings": self.settings}})
        return Path(path)


# ---------------------------------------------------------------------------------------------
# building the donor to train


def _resolve_head(donor, head: str) -> str:
    if head == "auto":
        return "paper" if donor.name in _VGG16_NAMES else "replace"
    return head


def _last_linear(module: nn.Module) -> Tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DonorError("The donor has no Linear classifier layer to replace; use a donor with "
                         "a Linear classifier or `--head paper` (VGG16).")
    return linears[-1]


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def new_classifier_names(module: nn.Module, name: str) -> List[str]:
    """The modules of a cultivar that start from random weights (its new classifier), which the
    standard recipe trains at a higher rate than the pretrained body."""
    if name == "paper_vgg16":
        return [n for n, _ in module.named_children() if n != "features"]
    return [_last_linear(module)[0]]


def build_cultivar(donor, num_classes: int, settings: CultivateSettings):
    """A copy of ``donor`` with a fresh classifier for ``num_classes`` classes: (module, name,
    image size). Initialisation draws from the settings' seed."""
    from graftsearch.donors._zoo import PaperDonor

    head = _resolve_head(donor, settings.head)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(settings.seed, "cultivate", "init"))
        if head == "paper":
            features = getattr(donor.module, "features", None)
            if donor.name not in _VGG16_NAMES or features is None:
                raise DonorError(param_message(
                    "head", "'replace' or 'auto' for this donor ('paper' needs a VGG16 donor)",
                    head, "The paper's head sits on VGG16's 512-channel trunk."))
            size = settings.image_size or 128
            module: nn.Module = PaperDonor(num_classes=num_classes, image_size=size,
                                           dropout=float(settings.dropout),
                                           features=copy.deepcopy(features))
            return module, "paper_vgg16", size
        module = copy.deepcopy(donor.module)
        name, old = _last_linear(module)
        _set_submodule(module, name, nn.Linear(old.in_features, num_classes,
                                               bias=old.bias is not None))
        return module, donor.name, settings.image_size or donor.image_size


def freeze_prefix(module: nn.Module, image_size: int, trainable_taps: Optional[int], *,
                  tap_names: Optional[Sequence[str]] = None,
                  donor_name: str = "donor") -> Tuple[List[str], Set[str]]:
    """Freeze what the taps before the last ``trainable_taps`` need; return (frozen parameter
    names, frozen module names)."""
    from graftsearch.taps._discovery import discover_taps

    for p in module.parameters():
        p.requires_grad_(True)
    if trainable_taps is None:
        return [], set()
    taps = discover_taps(module, image_size, names=tap_names, donor_name=donor_name)
    n_frozen = len(taps) - trainable_taps
    if n_frozen <= 0:
        return [], set()
    trunk = build_trunk(module, [taps.tap(n_frozen).name], donor_name=donor_name)
    frozen_params = [n for n, _ in trunk.named_parameters()]
    frozen_modules = {n for n, _ in trunk.named_modules() if n}
    params = dict(module.named_parameters())
    for n in frozen_params:
        params[n].requires_grad_(False)
    return frozen_params, frozen_modules


def _keep_frozen_batchnorm(module: nn.Module, frozen_modules: Set[str]) -> None:
    for name, m in module.named_modules():
        if name in frozen_modules and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


# ---------------------------------------------------------------------------------------------
# training


def cultivate_donor(donor, dataset, *, settings: Optional[CultivateSettings] = None,
                    progress: Optional[ProgressCallback] = None) -> Cultivation:
    """Fine-tune ``donor`` (a :class:`Donor`, a :class:`DonorSpec` or a donor name) on
    ``dataset`` (an :class:`ImageDataset` or a ``--data`` source) and test it.

    Deterministic on CPU for a given seed (with ``num_workers`` loaders too: shuffling and
    augmentation are drawn in the main process). Reports one ``Progress(stage="cultivate")``
    per epoch. Save the result with :meth:`Cultivation.save`.
    """
    from graftsearch.data._sources import ImageDataset, load_dataset
    from graftsearch.data._loading import make_loader
    from graftsearch.donors._donor import Donor
    from graftsearch.donors._spec import DonorSpec
    from graftsearch.donors._zoo import load_donor

    settings = settings if settings is not None else CultivateSettings()
    if not isinstance(settings, CultivateSettings):
        raise ParameterError(param_message("settings", "a CultivateSettings", type(settings).__name__))
    if isinstance(donor, (str, DonorSpec)):
        donor = load_donor(donor)
    if not isinstance(donor, Donor):
        raise ParameterError(param_message("donor", "a Donor, a DonorSpec or a donor name",
                                           type(donor).__name__))
    if not isinstance(dataset, ImageDataset):
        dataset = load_dataset(dataset)
    classes = list(dataset.classes)
    module, name, size = build_cultivar(donor, len(classes), settings)
    pre = dataclasses.replace(donor.preprocessing, image_size=size)
    frozen, frozen_modules = freeze_prefix(module, size, settings.trainable_taps,
                                           tap_names=donor.spec.taps, donor_name=name)
    trainable = [p for p in module.parameters() if p.requires_grad]
    device = resolve_device(settings.device)
    module.to(device)

    rec = settings.resolved_recipe()

    def loader(split: str, train: bool = False):
        return make_loader(dataset, split, pre, batch_size=rec.batch_size if train else 64,
                           num_workers=settings.num_workers, shuffle=train,
                           seed=derive_seed(settings.seed, "cultivate", "loader"),
                           augment=rec.augment and train)

    train_loader, val_loader = loader("train", train=True), loader("val")
    history: List[Dict[str, float]] = []
    best_loss, best_epoch, best_state, since_best = math.inf, 0, None, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(settings.seed, "cultivate", "dropout"))
        opt = make_optimizer(module, rec, head_prefixes=new_classifier_names(module, name))
        sched = make_scheduler(opt, rec, settings.epochs * max(1, len(train_loader)))

        def loss(logits, y, _):
            return torch.nn.functional.cross_entropy(logits, y, label_smoothing=rec.label_smoothing)

        for epoch in range(1, settings.epochs + 1):
            trained = train_epoch(module, train_loader, opt, device, scheduler=sched, loss=loss,
                                  before=lambda m: _keep_frozen_batchnorm(m, frozen_modules))
            if not math.isfinite(trained["train_loss"]):
                raise ParameterError(param_message(
                    "lr", "a smaller learning rate (training diverged)", settings.lr,
                    "Lower --lr, e.g. to 1e-5."))
            zv, yv = logits_on_images(module, val_loader, device)
            val_loss, val_acc = loss_and_accuracy(zv, yv)
            entry = {"epoch": epoch, **trained, "val_loss": val_loss, "val_accuracy": val_acc}
            history.append(entry)
            if val_loss < best_loss:
                best_loss, best_epoch, since_best = val_loss, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                since_best += 1
            report(progress, "cultivate", epoch, settings.epochs, **entry)
            logger.info("cultivate epoch %d: train loss %.4f acc %.4f, val loss %.4f acc %.4f",
                        epoch, entry["train_loss"], entry["train_accuracy"], val_loss,
                        entry["val_accuracy"])
            if settings.patience is not None and since_best >= settings.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    metrics: Dict[str, Dict[str, float]] = {}
    test_metrics = None
    for split in ("train", "val", "test"):
        z, y = logits_on_images(module, loader(split), device)
        m = compute_metrics(y, z, classes=classes)
        metrics[split] = {"accuracy": m.accuracy, "loss": m.loss}
        if split == "test":
            test_metrics = m
    module.cpu()
    for p in module.parameters():
        p.requires_grad_(True)
    # the fine-tuned weights are no named weights set: rebuilding this spec gives the architecture
    spec = DonorSpec(name=name, weights=None, num_classes=len(classes), image_size=size,
                     taps=donor.spec.taps, mean=pre.mean, std=pre.std)
    cultivated = Donor(module, name=name, spec=spec, image_size=size, mean=pre.mean, std=pre.std,
                       class_names=classes)
    params = count_params(module)
    return Cultivation(donor=cultivated, history=history, best_epoch=best_epoch, metrics=metrics,
                       test=test_metrics, params=params,
                       trainable_params=sum(p.numel() for p in trainable), frozen=frozen,
                       settings=settings.as_dict())
