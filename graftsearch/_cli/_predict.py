"""``graftsearch predict MODEL IMAGE...``: class and probability of images with an exported model."""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from rich.markup import escape

from graftsearch._utils.errors import DataError, ExportError, ParameterError, param_message
from graftsearch.optimize._runfiles import RunFiles, parse_bool

if TYPE_CHECKING:
    import torch
from ._common import EXIT_OK, console_err

logger = logging.getLogger("graftsearch")

EXIT_SOME_FAILED = 1  # finished with a partial answer, as `run` exits 1 without a feasible pick
EXIT_CODES = """output: one line per image, 'IMAGE<tab>CLASS PROBABILITY, ...' (or a JSON
object with --json); an image that cannot be read gets an error line instead (on stderr, or a
JSON object with "error" on stdout with --json) and the other images are still classified.
exit codes: 0 every image classified, 1 some image could not be read, 2 usage or model error
(no model in MODEL, a run with nothing feasible)"""


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with an exported model",
                       description="Print the predicted class and its probability for each image, "
                                   "using a run directory (its best/ model), a run's best/ "
                                   "directory, best/model.pt, best/model.torchscript.pt or the "
                                   "int8 copy best/model.int8.torchscript.pt (--quantize).",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="a run directory, its best/ directory, model.pt, model.torchscript.pt or "
                        "model.int8.torchscript.pt")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--top", type=int, default=1, metavar="K",
                   help="show the K most probable classes per image (default: 1)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="default: 32")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(handler=run)


def _model_dir(run_dir: Path) -> Path:
    """The best/ directory of a run directory, or an error saying why the run has none."""
    files = RunFiles(run_dir)
    if files.best.is_dir():
        return files.best
    if files.pareto.is_file():
        with open(files.pareto, newline="") as fh:
            feasible = any(parse_bool(row.get("feasible")) for row in csv.DictReader(fh))
        if not feasible:
            raise ExportError(f"The run directory '{run_dir}' holds no model: its search found "
                              "nothing feasible, so nothing was exported (the closest selections "
                              f"are in {files.pareto} and report.md). Relax --p-min or --size-max "
                              "and run again in a new --run-dir, or search longer with "
                              f"`graftsearch resume {run_dir} --generations N`.")
    raise ExportError(f"The run directory '{run_dir}' holds no best/ model yet: the run stopped "
                      f"before its final training. Finish it with `graftsearch resume {run_dir}`.")


def open_model(path) -> Tuple["torch.nn.Module", Dict[str, Any]]:
    """The model behind ``path`` and its description (image size, class names)."""
    # torch loads here, not with the parser: --help and argument errors stay free of it
    from graftsearch.graft._export import (MODEL_PT, TORCHSCRIPT, is_torchscript, load_model,
                                           load_torchscript)

    path = Path(path)
    if path.is_dir() and not any((path / n).is_file() for n in (TORCHSCRIPT, MODEL_PT)) \
            and (RunFiles(path).config.is_file() or RunFiles(path).best.is_dir()):
        path = _model_dir(path)
    if path.is_dir():
        for name in (TORCHSCRIPT, MODEL_PT):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise ExportError(param_message("model", "a model.pt or model.torchscript.pt file, their "
                                        "directory or a run directory", str(path),
                                        "Use a run directory or its best/ directory."))
    if is_torchscript(path):
        return load_torchscript(path)
    try:
        model = load_model(path)
    except ExportError:
        scripted = path.with_name(TORCHSCRIPT)
        if not scripted.is_file():
            raise
        logger.info("model.pt cannot be rebuilt here; using %s", scripted)
        return load_torchscript(scripted)
    return model, model.describe()


def predict_files(model: "torch.nn.Module", meta: Dict[str, Any], paths: List[str], *,
                  top: int = 1, batch_size: int = 32) -> List[Dict[str, Any]]:
    """One result per path, in order: its ``predictions``, or the ``error`` that kept the image
    from being read (one bad file does not cost the others their answer)."""
    import torch

    from graftsearch.data._images import open_rgb, to_tensor01

    size = int(meta["image_size"])
    names = list(meta.get("class_names") or [])
    out: List[Dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk, tensors, errors = paths[start:start + batch_size], [], {}
        for path in chunk:
            try:
                tensors.append(to_tensor01(open_rgb(path), size))
            except DataError as exc:
                errors[path] = str(exc)
        if tensors:
            with torch.inference_mode():
                probs = torch.softmax(model(torch.stack(tensors)), dim=1)
            p, idx = probs.topk(min(top, probs.shape[1]), dim=1)
            ranked = iter(zip(p.tolist(), idx.tolist()))
        for path in chunk:
            if path in errors:
                out.append({"image": path, "error": errors[path]})
                continue
            pi, ii = next(ranked)
            out.append({"image": path, "predictions": [
                {"class": names[i] if i < len(names) else str(i), "probability": q}
                for q, i in zip(pi, ii)]})
    return out


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ParameterError(param_message("top", "an integer >= 1", args.top))
    if args.batch_size < 1:
        raise ParameterError(param_message("batch_size", "an integer >= 1", args.batch_size))
    model, meta = open_model(args.model)
    results = predict_files(model, meta, list(args.images), top=args.top,
                            batch_size=args.batch_size)
    for r in results:
        if args.json:
            text = json.dumps(r)
        elif "error" in r:
            console_err().print(f"[bold red]error:[/] {escape(r['error'])}", highlight=False,
                                soft_wrap=True)
            continue
        else:
            text = f"{r['image']}\t" + ", ".join(f"{p['class']} {p['probability']:.4f}"
                                                for p in r["predictions"])
        print(text, flush=True)  # plain lines (tab-separated or JSON) for scripts to read
    failed = sum("error" in r for r in results)
    if failed:
        console_err().print(f"{failed} of {len(results)} image(s) could not be read.",
                            highlight=False, markup=False)
    return EXIT_SOME_FAILED if failed else EXIT_OK
