"""``graftsearch predict MODEL IMAGE...``: class and probability of images with an exported model."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from graftsearch._utils.errors import ExportError, ParameterError, param_message
from graftsearch.graft._export import MODEL_PT, TORCHSCRIPT, is_torchscript, load_model, load_torchscript
from graftsearch.data._images import open_rgb, to_tensor01

logger = logging.getLogger("graftsearch")


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with an exported model",
                       description="Print the predicted class and its probability for each image, "
                                   "using a run's best/model.pt, best/model.torchscript.pt or the "
                                   "best/ directory.")
    p.add_argument("model", metavar="MODEL", help="model.pt, model.torchscript.pt or their directory")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--top", type=int, default=1, metavar="K",
                   help="show the K most probable classes per image (default: 1)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="default: 32")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(handler=run)


def open_model(path) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The model behind ``path`` and its description (image size, class names)."""
    path = Path(path)
    if path.is_dir():
        for name in (TORCHSCRIPT, MODEL_PT):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise ExportError(param_message("model", "a model.pt or model.torchscript.pt file (or their "
                                        "directory)", str(path), "Use a run's best/ directory."))
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


def predict_files(model: torch.nn.Module, meta: Dict[str, Any], paths: List[str], *,
                  top: int = 1, batch_size: int = 32) -> List[Dict[str, Any]]:
    size = int(meta["image_size"])
    names = list(meta.get("class_names") or [])
    out: List[Dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        x = torch.stack([to_tensor01(open_rgb(p), size) for p in chunk])
        with torch.inference_mode():
            probs = torch.softmax(model(x), dim=1)
        p, idx = probs.topk(min(top, probs.shape[1]), dim=1)
        for path, pi, ii in zip(chunk, p.tolist(), idx.tolist()):
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
        else:
            text = f"{r['image']}\t" + ", ".join(f"{p['class']} {p['probability']:.4f}"
                                                for p in r["predictions"])
        print(text, flush=True)  # plain lines (tab-separated or JSON) for scripts to read
    return 0
