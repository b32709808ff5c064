"""The int8 copy of the final graft: how it is chosen, and what metrics.json says about it.

Post-training quantisation is tried with each int8 engine of this machine and each activation
observer; the best on val may then keep the first convolution (the layer on raw pixels) in
float32. With ``quantize="qat"``, when the best post-training copy still loses more than
``QAT_TRIGGER`` of val accuracy, the float32 graft is fine-tuned with fake quantisation,
distilled from itself, and the better of the two on val is kept. The test split is used only
to report the kept copy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from graftsearch.graft._quantize import (OBSERVERS, Int8Recipe, convert_qat, first_convolution,
                                         prepare_qat, quantization_engines, quantize_int8,
                                         serialized_mib)
from graftsearch.taps._int8 import int8_payload_bytes
from graftsearch.taps._records import MIB
from graftsearch.graft._settings import QAT_TRIGGER, FinalSettings
from graftsearch._utils.seeding import derive_seed
from graftsearch.training._imagetrain import logits_on_images

logger = logging.getLogger("graftsearch")


def _accuracy(model: nn.Module, loader) -> float:
    z, y = logits_on_images(model, loader, torch.device("cpu"))
    return float((z.argmax(1) == y).mean())


def loses_too_much(float_val: float, int8_val: float) -> bool:
    """Whether an int8 copy loses more than ``QAT_TRIGGER`` of the float32 graft's val accuracy
    (what makes PTQ try the first convolution in float32, and ``quantize="qat"`` fine-tune)."""
    return int8_val < float_val - QAT_TRIGGER


def kept_method(float_val: float, ptq_val: float, qat_val: Optional[float] = None) -> str:
    """``"qat"`` or ``"ptq"``: the copy ``quantize="qat"`` keeps, from val accuracies alone.

    Quantisation-aware fine-tuning runs only when the post-training copy loses too much
    (:func:`loses_too_much`), and its copy is kept only when it is better on val; ``qat_val`` is
    None when it did not run or failed."""
    if qat_val is not None and loses_too_much(float_val, ptq_val) and qat_val > ptq_val:
        return "qat"
    return "ptq"


def calibration_batches(dataset, pre, settings: FinalSettings, make_loader, skip_bad: bool
                        ) -> Tuple[List[torch.Tensor], int]:
    """``settings.calibration_images`` normalised training images (shuffled under the seed)."""
    batches, seen = [], 0
    for images, _, _ in make_loader(dataset, "train", pre, settings, shuffle=True,
                                    seed=derive_seed(settings.seed, "calibration"),
                                    skip_bad=skip_bad):
        batches.append(images[: settings.calibration_images - seen])
        seen += len(batches[-1])
        if seen >= settings.calibration_images:
            break
    return batches, seen


def quantization_aware(graft: nn.Module, calibration: List[torch.Tensor], recipe: Int8Recipe,
                       settings: FinalSettings, tune: Callable[..., List[Dict[str, float]]]
                       ) -> Tuple[Int8Recipe, nn.Module, List[Dict[str, float]]]:
    """(its recipe, the int8 model, the epochs) of quantisation-aware fine-tuning of ``graft``
    (a network on normalised images) with ``recipe``'s engine and float32 layers:
    ``settings.qat_epochs`` at ``settings.qat_lr``, distilled from ``graft`` itself."""
    from torch.ao.quantization import disable_observer, enable_observer

    qat_recipe = dataclasses.replace(recipe, observer="moving-average", bias_correction=False)
    prepared = prepare_qat(graft, calibration, qat_recipe)

    def observe_only_in_training(module, inputs):
        # fake quantisers observe in eval mode too: the val passes that pick the best epoch
        # must not move the ranges
        module.apply(enable_observer if module.training else disable_observer)

    hook = prepared.register_forward_pre_hook(observe_only_in_training)
    try:
        history = tune(prepared, settings=dataclasses.replace(
            settings, fine_tune_epochs=settings.qat_epochs, fine_tune_lr=settings.qat_lr),
            teacher=graft, tag="qat")
    finally:
        hook.remove()
    return qat_recipe, convert_qat(prepared, recipe.engine), history


def make_int8(graft: nn.Module, dataset, pre, settings: FinalSettings, *, make_loader,
              tune: Callable[..., List[Dict[str, float]]], skip_bad: bool = False
              ) -> Tuple[Dict[str, Any], Optional[nn.Module]]:
    """(what metrics.json says under ``int8``, the kept int8 graft or None on failure).

    ``make_loader(dataset, split, pre, settings, ...)`` makes image loaders and ``tune(graft,
    settings=..., teacher=..., tag=...)`` fine-tunes a graft on images (final training's own);
    a failure is reported in the dictionary (``error``) and never raised."""
    previous = torch.backends.quantized.engine
    began = time.perf_counter()
    try:
        engines = quantization_engines()
        if not engines:
            return {"mode": settings.quantize, "error": "no int8 engine in this torch build"}, None
        calibration, seen = calibration_batches(dataset, pre, settings, make_loader, skip_bad)
        val = make_loader(dataset, "val", pre, settings, skip_bad=skip_bad)
        float_val = _accuracy(graft, val)
        candidates: List[Dict[str, Any]] = []
        best: Optional[Tuple[float, Int8Recipe, nn.Module]] = None

        def attempt(recipe: Int8Recipe) -> None:
            nonlocal best
            try:
                quantized = quantize_int8(graft, calibration, recipe=recipe)
                acc = _accuracy(quantized, val)
            except Exception as exc:  # one candidate failing leaves the others
                candidates.append({**recipe.as_dict(), "error": f"{type(exc).__name__}: {exc}"})
                logger.warning("int8 %s failed: %s", recipe.as_dict(), exc)
                return
            candidates.append({**recipe.as_dict(), "val_accuracy": acc})
            logger.info("int8 %s: val accuracy %.4f (float32 %.4f)", recipe.as_dict(), acc,
                        float_val)
            if best is None or acc > best[0]:
                best = (acc, recipe, quantized)

        for engine in engines:
            for observer in OBSERVERS:
                attempt(Int8Recipe(engine, observer))
        if best is None:
            errors = "; ".join(c["error"] for c in candidates)
            return {"mode": settings.quantize, "ptq_candidates": candidates,
                    "error": f"every int8 candidate failed ({errors})"}, None
        first = first_convolution(getattr(graft, "trunk", graft))
        if loses_too_much(float_val, best[0]) and first is not None:
            # the layer on raw pixels is the usual casualty of per-tensor activation ranges
            attempt(dataclasses.replace(best[1], float_layers=(first,)))
        ptq_val, recipe, quantized = best
        out: Dict[str, Any] = {"mode": settings.quantize, "method": "ptq",
                               "calibration_images": seen, "float32_val_accuracy": float_val,
                               "ptq_candidates": candidates, "ptq_val_accuracy": ptq_val}
        if settings.quantize == "qat" and loses_too_much(float_val, ptq_val):
            logger.info("int8: post-training loses %.4f of val accuracy; quantisation-aware "
                        "fine-tuning", float_val - ptq_val)
            try:
                qat_recipe, qat_model, history = quantization_aware(graft, calibration, recipe,
                                                                    settings, tune)
                qat_val = _accuracy(qat_model, val)
            except Exception as exc:  # the post-training copy stands
                logger.warning("int8 quantisation-aware fine-tuning failed: %s", exc)
                out["qat_error"] = f"{type(exc).__name__}: {exc}"
            else:
                logger.info("int8 after quantisation-aware fine-tuning: val accuracy %.4f "
                            "(post-training %.4f)", qat_val, ptq_val)
                out.update(qat_val_accuracy=qat_val, qat_history=history, qat_epochs=len(history))
                if kept_method(float_val, ptq_val, qat_val) == "qat":
                    out["method"], recipe, quantized = "qat", qat_recipe, qat_model
        elif settings.quantize == "qat":
            out["qat_note"] = (f"not needed: post-training int8 is within {QAT_TRIGGER:.0%} of "
                               "float32 on val")
        torch.backends.quantized.engine = recipe.engine
        test = make_loader(dataset, "test", pre, settings, skip_bad=skip_bad)
        zq, yq = logits_on_images(quantized, test, torch.device("cpu"))
        zf, _ = logits_on_images(graft, test, torch.device("cpu"))
        out.update({**recipe.as_dict(),
                    "int8_val_accuracy": out["qat_val_accuracy"] if out["method"] == "qat"
                    else ptq_val,
                    "float32_test_accuracy": float((zf.argmax(1) == yq).mean()),
                    "int8_test_accuracy": float((zq.argmax(1) == yq).mean()),
                    "test_agreement": float((zf.argmax(1) == zq.argmax(1)).mean()),
                    "float32_mib": serialized_mib(graft), "int8_mib": serialized_mib(quantized),
                    # what --size-metric int8_mib predicts (the tensors without the archive)
                    "int8_tensors_mib": int8_payload_bytes(quantized) / MIB,
                    "seconds": time.perf_counter() - began})
        return out, quantized
    except Exception as exc:  # int8 is an extra: say why it failed, keep the run
        logger.warning("int8 quantisation failed: %s", exc)
        return {"mode": settings.quantize, "error": f"{type(exc).__name__}: {exc}"}, None
    finally:
        torch.backends.quantized.engine = previous


def int8_latency(graft: nn.Module, quantized: nn.Module, engine: str, image_size: int,
                 settings: FinalSettings) -> Dict[str, float]:
    """Median CPU latency at batch 1 of the float32 and int8 grafts, measured side by side."""
    from graftsearch.graft._measure import compare_latency

    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        lat = compare_latency({"float32": graft, "int8": quantized}, image_size,
                              runs=settings.latency_runs, warmup=settings.latency_warmup,
                              threads=settings.threads)
    finally:
        torch.backends.quantized.engine = previous
    return {"float32_latency_ms": lat["float32"].median_ms, "int8_latency_ms": lat["int8"].median_ms}
