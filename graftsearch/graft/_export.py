"""The deployable model and its files: ``model.pt``, ``model.torchscript.pt``, ``model.onnx``.

A deployed model takes RGB float tensors (N, 3, S, S) with values in [0, 1] at the run's image
size S, normalises them itself and returns logits, so a user needs nothing but torch (or an ONNX
runtime) to run it. ``model.pt`` holds the weights and everything needed to rebuild the module
with graftsearch; it loads with ``torch.load(weights_only=True)``. The TorchScript file (frozen,
its zip entries compressed; ``torch.jit.load`` reads it as it is) carries the same description
as ``graftsearch.json`` in its extra files.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import logging
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from graftsearch._utils.atomic import atomic_path
from graftsearch.donors._checkpoints import is_torchscript, jit_load
from graftsearch._utils.errors import ExportError, ParameterError, param_message
from graftsearch.graft._model import GraftedModel
from graftsearch.taps._head import HeadSpec
from graftsearch.donors._normalize import Normalize
from graftsearch.taps._records import TapList
from graftsearch._version import __version__

logger = logging.getLogger("graftsearch")

MODEL_FORMAT = "graftsearch-model"
FORMAT_VERSION = 1
META_FILE = "graftsearch.json"  # name of the description inside the TorchScript archive
MODEL_PT, TORCHSCRIPT, ONNX = "model.pt", "model.torchscript.pt", "model.onnx"
INT8_TORCHSCRIPT = "model.int8.torchscript.pt"
# the description's key naming the int8 engine an int8 file must be loaded and run with
QUANTIZED_ENGINE = "quantized_engine"
_TOLERANCE = 1e-4


class DeployableModel(nn.Module):
    """``Normalize`` followed by a :class:`GraftedModel`: RGB in [0, 1] at ``image_size`` -> logits.

    ``class_names`` are the names of the outputs in order; ``predict`` returns the arg-max class
    indices and their softmax probabilities.
    """

    def __init__(self, graft: nn.Module, *, mean: Sequence[float], std: Sequence[float],
                 image_size: int, class_names: Sequence[str]):
        super().__init__()
        self.normalize = Normalize(tuple(float(v) for v in mean), tuple(float(v) for v in std))
        self.graft = graft
        self.image_size = int(image_size)
        self.class_names: List[str] = [str(c) for c in class_names]
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graft(self.normalize(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(class index, probability of that class) for each image of ``x``."""
        was_training = self.training
        self.eval()
        try:
            probs = torch.softmax(self(x), dim=1)
        finally:
            self.train(was_training)
        p, idx = probs.max(dim=1)
        return idx, p

    def describe(self) -> Dict[str, Any]:
        """What a user of the exported files needs: input size, normalisation, output names."""
        d: Dict[str, Any] = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION,
                             "graftsearch_version": __version__, "image_size": self.image_size,
                             "mean": list(self.mean), "std": list(self.std),
                             "class_names": list(self.class_names),
                             "input": "RGB float32 (N, 3, S, S) in [0, 1]", "output": "logits"}
        if isinstance(self.graft, GraftedModel):
            d.update({"selection": list(self.graft.selection),
                      "tap_names": list(self.graft.tap_names)})
        return d


@dataclass
class ExportResult:
    """Where the files went and how closely each one reproduces the eager model."""

    model_pt: Path
    torchscript: Path
    onnx: Optional[Path] = None
    onnx_note: str = ""
    max_abs_diff: Dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {"model_pt": str(self.model_pt), "torchscript": str(self.torchscript),
                "onnx": str(self.onnx) if self.onnx else None, "onnx_note": self.onnx_note,
                "max_abs_diff": dict(self.max_abs_diff)}


# ---------------------------------------------------------------------------------------------
# model.pt


def rebuild_spec(donor, graft: GraftedModel) -> Optional[Dict[str, Any]]:
    """The DonorSpec (as a dict) that rebuilds ``graft``'s architecture without weights, or None.

    The spec names the architecture only (no checkpoint): the weights come from model.pt. It is
    kept only when rebuilding it really gives the same trunk tensors; donors made with
    :meth:`Donor.from_module`, TorchScript donors and pickled models cannot be rebuilt.
    """
    from graftsearch.donors._spec import DonorSpec
    from graftsearch.donors._zoo import is_donor_name

    if donor is None or not is_donor_name(donor.name):
        return None
    spec = donor.spec
    from_checkpoint = spec.checkpoint is not None
    num_classes = spec.num_classes if not from_checkpoint else (
        len(donor.class_names) if donor.class_names and len(donor.class_names) >= 2 else None)
    candidate = DonorSpec(name=donor.name, weights=None if from_checkpoint else spec.weights,
                          num_classes=num_classes, image_size=donor.image_size, taps=spec.taps,
                          mean=donor.preprocessing.mean, std=donor.preprocessing.std).as_dict()
    try:
        rebuilt = _rebuild_graft(candidate, graft.selection, graft._tap_list, graft._head_spec)
    except Exception as exc:  # any failure means: not rebuildable; the TorchScript file still is
        logger.debug("donor '%s' is not rebuildable from its name: %s", donor.name, exc)
        return None
    if not _same_tensors(rebuilt.state_dict(), graft.state_dict()):
        return None
    return candidate


def _same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(tuple(a[k].shape) == tuple(b[k].shape) for k in a)


def _rebuild_graft(spec: Mapping[str, Any], selection: Sequence[int], taps: TapList,
                   head: Optional[HeadSpec], donor=None) -> GraftedModel:
    from graftsearch.donors._spec import DonorSpec
    from graftsearch.donors._zoo import load_donor

    if head is None:
        raise ExportError("The grafted model's head was not built from a HeadSpec, so model.pt "
                          "cannot describe it.")
    if donor is None:
        fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items()}
        donor = load_donor(DonorSpec(**fields), load_weights=False)
    return GraftedModel(donor, list(selection), head, taps=taps)


def model_record(model: DeployableModel, donor=None, *,
                 metrics: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The contents of model.pt: weights plus what rebuilds the module (weights_only-safe)."""
    graft = model.graft
    if not isinstance(graft, GraftedModel):
        raise ExportError(param_message("model", "a DeployableModel around a GraftedModel",
                                        type(graft).__name__))
    head = graft._head_spec
    record = model.describe()
    record.update({
        "donor_name": donor.name if donor is not None else None,
        "donor": rebuild_spec(donor, graft) if head is not None else None,
        "taps": graft._tap_list.to_records(),
        "taps_image_size": graft._tap_list.image_size,
        "head": head.as_dict() if head is not None else None,
        "metrics": _plain(metrics or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    })
    return record


def _plain(obj: Any) -> Any:
    """JSON-like containers of str/int/float/bool/None only, so weights_only loading accepts them."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def save_model_pt(model: DeployableModel, path, donor=None, *,
                  metrics: Optional[Mapping[str, Any]] = None) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(model_record(model, donor, metrics=metrics), tmp)
    return path


def load_model(path, *, donor=None) -> DeployableModel:
    """Rebuild the :class:`DeployableModel` saved in ``model.pt`` (weights-only loading).

    The donor architecture is rebuilt from its name without downloading weights. A model grafted
    from a donor that cannot be rebuilt by name (one made with ``Donor.from_module``, a
    TorchScript or pickled donor) needs that donor passed as ``donor=`` (its weights are
    replaced by the saved ones), or use ``model.torchscript.pt`` beside it.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(param_message("path", "an existing model.pt file", str(path)))
    if is_torchscript(path):
        raise ExportError(f"'{path}' is a TorchScript file; load it with torch.jit.load('{path}') "
                          "(or `graftsearch predict` it); load_model reads model.pt.")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(f"'{path}' cannot be read as a graftsearch model.pt: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(record, Mapping) or record.get("format") != MODEL_FORMAT:
        raise ExportError(f"'{path}' is not a graftsearch model.pt (no '{MODEL_FORMAT}' marker). "
                          "Pass the model.pt written by graftsearch into a run's best/ directory.")
    scripted = path.with_name(TORCHSCRIPT)
    head = HeadSpec(**record["head"]) if record.get("head") else None
    if donor is None and record.get("donor") is None:
        raise ExportError(
            f"The model in '{path}' was grafted from the donor '{record.get('donor_name')}', which "
            "graftsearch cannot rebuild from a name (a module passed in memory, TorchScript or a "
            f"pickled model). Load '{scripted}' with torch.jit.load instead, or pass the donor: "
            "load_model(path, donor=...).")
    taps = TapList.from_records(record["taps"], donor_name=record.get("donor_name") or "donor",
                                image_size=int(record["taps_image_size"]))
    try:
        graft = _rebuild_graft(record.get("donor") or {}, record["selection"], taps, head, donor)
        model = DeployableModel(graft, mean=record["mean"], std=record["std"],
                                image_size=record["image_size"], class_names=record["class_names"])
        model.load_state_dict(record["state_dict"])
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"The model in '{path}' cannot be rebuilt ({type(exc).__name__}: {exc}). "
                          f"Load '{scripted}' with torch.jit.load instead.") from exc
    return model.eval()


def read_record(path) -> Dict[str, Any]:
    """model.pt's description without the weights."""
    record = torch.load(Path(path), map_location="cpu", weights_only=True)
    return {k: v for k, v in record.items() if k != "state_dict"}


# ---------------------------------------------------------------------------------------------
# TorchScript and ONNX


def read_torchscript_meta(path) -> Dict[str, Any]:
    """The description inside a TorchScript file written by graftsearch ({} when none), read
    from the archive without loading the model (an int8 model must be loaded with its engine)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{META_FILE}")), None)
            return json.loads(archive.read(name)) if name else {}
    except (OSError, zipfile.BadZipFile, ValueError):
        return {}


def load_torchscript(path) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """The scripted model and its description (class names, image size, normalisation).

    An int8 file names its engine in the description; torch's quantised engine is set to it
    before loading (packed int8 weights are rebuilt for the engine in use when loaded)."""
    meta = read_torchscript_meta(path)
    engine = meta.get(QUANTIZED_ENGINE)
    if engine:
        if engine not in torch.backends.quantized.supported_engines:
            raise ExportError(f"'{path}' is an int8 model for the '{engine}' engine, which this "
                              f"torch build lacks ({torch.backends.quantized.supported_engines}). "
                              f"Use '{Path(path).with_name(TORCHSCRIPT)}' (float32) instead.")
        torch.backends.quantized.engine = engine
    extra = {META_FILE: ""}
    module = jit_load(path, map_location="cpu", _extra_files=extra)
    text = extra[META_FILE]
    meta = json.loads(text.decode() if isinstance(text, bytes) else text) if text else {}
    return module.eval(), meta


def _example(image_size: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))


def _deflated(archive: bytes, path: Path) -> None:
    """Rewrite the zip archive ``torch.jit.save`` wrote (its entries stored uncompressed) with
    every entry DEFLATE-compressed, in the same order and with a fixed timestamp (one model, one
    file, byte for byte). torch.jit.load reads compressed entries as they are: nothing changes
    for whoever loads the file, and int8 weights, with most values near zero and per-channel
    zero points that are all zero, shrink more than float32 ones."""
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(entry, src.read(info), compresslevel=9)


def save_torchscript(model: DeployableModel, path, *,
                     extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Trace ``model`` (eval mode, CPU), freeze it and save it with its description (and
    ``extra`` entries) as an extra file, compressed.

    Freezing (``torch.jit.freeze``) turns the weights into constants of one inlined graph: the
    file carries no per-submodule code and, for float32, batch norms are folded into their
    convolutions. It is what a deployed copy should be, and it is applied alike to float32 and
    int8 files, so that their sizes and speeds compare like with like."""
    path = Path(path)
    model = model.eval()
    meta = {**model.describe(), **(extra or {})}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(model.image_size, 2), check_trace=False)
        frozen = torch.jit.freeze(traced.eval())
        buffer = io.BytesIO()
        torch.jit.save(frozen, buffer, _extra_files={META_FILE: json.dumps(meta, sort_keys=True)})
        with atomic_path(path) as tmp:
            _deflated(buffer.getvalue(), Path(tmp))
    return path


def export_int8(model: DeployableModel, path, *, engine: str, method: str,
                check: Optional[torch.Tensor] = None) -> float:
    """Write the int8 ``model`` as TorchScript (it runs with torch alone, after setting torch's
    quantised engine to ``engine``, as its description says), read it back and return the
    largest difference of its logits from the in-process int8 model's on ``check``."""
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        save_torchscript(model, path, extra={QUANTIZED_ENGINE: engine, "int8_method": method,
                                             "input": "RGB float32 (N, 3, S, S) in [0, 1]; set "
                                             f"torch.backends.quantized.engine = '{engine}' "
                                             "before torch.jit.load"})
        x = check if check is not None else _example(model.image_size, 3, seed=1)
        with torch.no_grad():
            want = model(x)
            scripted, _ = load_torchscript(path)
            return float((scripted(x) - want).abs().max())
    finally:
        torch.backends.quantized.engine = previous


def onnx_available() -> bool:
    return importlib.util.find_spec("onnx") is not None


def save_onnx(model: DeployableModel, path) -> Path:
    """Export with a dynamic batch dimension through torch's TorchScript-based ONNX exporter."""
    path = Path(path)
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(path) as tmp:
            # torch < 2.5 has no `dynamo` switch (and only the TorchScript-based exporter)
            legacy = ({"dynamo": False}
                      if "dynamo" in inspect.signature(torch.onnx.export).parameters else {})
            torch.onnx.export(model, (_example(model.image_size, 2),), str(tmp), **legacy,
                              input_names=["images"], output_names=["logits"], opset_version=17,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
            import onnx

            onnx.checker.check_model(str(tmp))
    return path


def onnx_outputs(path, x: torch.Tensor) -> Optional[np.ndarray]:
    """Logits from onnxruntime, or None when onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def export_model(model: DeployableModel, out_dir, *, donor=None,
                 metrics: Optional[Mapping[str, Any]] = None, onnx: Optional[bool] = None,
                 check: Optional[torch.Tensor] = None) -> ExportResult:
    """Write model.pt, model.torchscript.pt and (when the onnx extra is installed) model.onnx.

    Each file is read back and run on ``check`` (default: a few random images); its logits must
    equal the eager model's within 1e-4 or an :class:`ExportError` says which file differs.
    ``onnx=None`` exports ONNX when the ``onnx`` package is installed; True requires it.
    """
    if not isinstance(model, DeployableModel):
        raise ParameterError(param_message("model", "a DeployableModel", type(model).__name__))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    x = check if check is not None else _example(model.image_size, 3, seed=1)
    with torch.no_grad():
        want = model(x)

    result = ExportResult(model_pt=save_model_pt(model, out / MODEL_PT, donor, metrics=metrics),
                          torchscript=save_torchscript(model, out / TORCHSCRIPT))
    scripted, _ = load_torchscript(result.torchscript)
    with torch.no_grad():
        result.max_abs_diff["torchscript"] = float((scripted(x) - want).abs().max())

    if onnx is None:
        onnx = onnx_available()
        if not onnx:
            result.onnx_note = "not exported: install the 'onnx' extra (pip install graftsearch[onnx])"
    elif onnx and not onnx_available():
        raise ExportError(param_message("onnx", "False when the 'onnx' package is missing", True,
                                        "Install it with `pip install graftsearch[onnx]`."))
    if onnx:
        result.onnx = save_onnx(model, out / ONNX)
        got = onnx_outputs(result.onnx, x)
        if got is None:
            result.onnx_note = "exported; not checked (onnxruntime is not installed)"
        else:
            diff = float(np.abs(got - want.numpy()).max())
            if diff <= _TOLERANCE:
                result.max_abs_diff["onnx"] = diff
                result.onnx_note = "exported and checked with onnxruntime"
            else:
                # ONNX is an optional extra: a file that disagrees is removed, not shipped
                result.onnx.unlink()
                result.onnx = None
                result.onnx_note = (f"not exported: onnxruntime's output differed from the eager "
                                    f"model by {diff:.3g} (tolerance {_TOLERANCE})")
                logger.warning("ONNX export dropped: %s", result.onnx_note)
    for name, diff in result.max_abs_diff.items():
        if not diff <= _TOLERANCE:
            raise ExportError(f"The exported {name} model differs from the eager model by {diff:.3g} "
                              f"(tolerance {_TOLERANCE}); the export is not faithful.")
    return result
