"""How the chosen graft is trained, measured and exported (the settings of final training)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from graftsearch._utils.checks import is_int
from graftsearch._utils.device import check_device
from graftsearch._utils.errors import ParameterError, param_message

# ptq: post-training static quantisation; qat: ptq, then quantisation-aware fine-tuning when
# ptq loses more than QAT_TRIGGER of validation accuracy
QUANTIZE_MODES = ("ptq", "qat")
QAT_TRIGGER = 0.01


@dataclass(frozen=True, kw_only=True)
class FinalSettings:
    """How the chosen graft is trained, measured and exported.

    ``schedule`` trains the head on cached features (None: the paper's, ``PAPER_SCHEDULE``).
    ``fine_tune`` then trains the kept trunk and the head end to end on the training images
    (None: whenever images are given) with the fine-tuning ``recipe`` (``standard``: AdamW,
    warm-up and cosine decay, label smoothing, flips and crops; ``paper``: Adam, constant rate),
    at ``fine_tune_lr`` and batch ``fine_tune_batch_size`` (None: the recipe's), for at most
    ``fine_tune_epochs``, stopping after ``fine_tune_patience`` epochs without a lower validation
    loss and keeping the best epoch; batch-norm statistics stay those of the donor. With
    ``distill`` a second copy is fine-tuned with knowledge distillation from the donor when its
    classifier has the dataset's classes (a cultivated donor): ``(1 - distill_alpha) * CE +
    distill_alpha * T^2 * KL`` at temperature ``distill_temperature``. Of head-only, fine-tuned
    and distilled, the one with the best validation accuracy is kept; all three are reported.
    ``donor_metrics`` also tests
    the donor when its classifier has exactly the dataset's classes (a cultivated donor).
    ``latency_runs`` timed CPU passes at batch 1 after ``latency_warmup`` (0 runs: no latency),
    with ``threads`` torch threads (None: as set); ``memory`` measures peak memory in a child
    process. ``quantize`` (None, ``ptq`` or ``qat``) adds an int8 copy, exported as
    ``model.int8.torchscript.pt``: post-training quantisation calibrated on
    ``calibration_images`` training images, its engine, activation observer and float32 layers
    chosen on val; with ``qat``, when that loses more than 1 pp of val accuracy, also
    ``qat_epochs`` of quantisation-aware fine-tuning at ``qat_lr`` distilled from the float32
    graft (the better on val is kept). (``True`` / ``False`` from older files mean ``ptq`` / None.)
    ``device`` (``auto``, ``cpu``, ``cuda``) runs image passes; ``batch_size`` and
    ``num_workers`` are those of the image loaders; ``onnx`` as :func:`export_model`.
    """

    schedule: Any = None
    seed: int = 0
    fine_tune: Optional[bool] = None
    recipe: str = "standard"
    fine_tune_epochs: int = 6
    fine_tune_lr: Optional[float] = None
    fine_tune_batch_size: Optional[int] = None
    fine_tune_patience: Optional[int] = 2
    distill: bool = True
    distill_temperature: float = 4.0
    distill_alpha: float = 0.5
    donor_metrics: bool = True
    latency_runs: int = 50
    latency_warmup: int = 5
    threads: Optional[int] = None
    memory: bool = True
    quantize: Optional[str] = None
    calibration_images: int = 512
    qat_epochs: int = 2
    qat_lr: float = 3e-5
    device: str = "auto"
    batch_size: int = 64
    num_workers: int = 0
    onnx: Optional[bool] = None

    def __post_init__(self) -> None:
        from graftsearch.training._schedule import PAPER_SCHEDULE, TrainSchedule

        if self.schedule is None:
            object.__setattr__(self, "schedule", PAPER_SCHEDULE)
        if not isinstance(self.schedule, TrainSchedule):
            raise ParameterError(param_message("schedule", "a TrainSchedule or None (the paper's)",
                                               self.schedule))
        from graftsearch.training._recipe import check_distillation, recipe

        recipe(self.recipe)
        check_distillation(self.distill_temperature, self.distill_alpha)
        for name in ("fine_tune_batch_size", "fine_tune_patience"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ParameterError(param_message(name, "an integer >= 1 or None", value))
        if isinstance(self.quantize, bool):  # settings written before the modes existed
            object.__setattr__(self, "quantize", "ptq" if self.quantize else None)
        if self.quantize is not None and self.quantize not in QUANTIZE_MODES:
            raise ParameterError(param_message("quantize", f"None or one of {list(QUANTIZE_MODES)}",
                                               self.quantize))
        for name, low in (("seed", 0), ("fine_tune_epochs", 1), ("qat_epochs", 1),
                          ("latency_runs", 0), ("latency_warmup", 0), ("calibration_images", 1),
                          ("batch_size", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise ParameterError(param_message(name, f"an integer >= {low}", value))
        for name, none in (("fine_tune_lr", " or None (the recipe's)"), ("qat_lr", "")):
            value = getattr(self, name)
            if (value is not None or not none) and (
                    not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value <= 0):
                raise ParameterError(param_message(name, f"a float > 0{none}", value))
        if self.fine_tune is not None and not isinstance(self.fine_tune, bool):
            raise ParameterError(param_message("fine_tune", "True, False or None (when images are "
                                               "given)", self.fine_tune))
        if self.threads is not None and (not is_int(self.threads) or self.threads < 1):
            raise ParameterError(param_message("threads", "a positive integer or None", self.threads))
        for name in ("distill", "donor_metrics", "memory"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(param_message(name, "a bool", getattr(self, name)))
        if self.onnx is not None and not isinstance(self.onnx, bool):
            raise ParameterError(param_message("onnx", "True, False or None (when installed)", self.onnx))
        check_device(self.device)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["schedule"] = self.schedule.as_dict()
        return d
