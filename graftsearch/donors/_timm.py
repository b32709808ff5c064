"""Donors from timm (``timm:NAME``), behind the optional extra ``timm``.

A timm donor is any model timm builds by name; its weights are a timm pretrained tag (the
model's default tag for ``"DEFAULT"``), random, or a local state dict (``--donor-checkpoint``,
.pth or .safetensors). Input size and normalisation come from the tag's pretrained config, which
timm knows without downloading anything, so taps and costs never need the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # timm brings torch; the names here load without either
    from torch import nn

from graftsearch._utils.errors import DonorError, close_matches_hint, param_message
from graftsearch.donors._spec import DEFAULT_WEIGHTS, NO_WEIGHTS

PREFIX = "timm:"
INSTALL_HINT = 'pip install "graftsearch[timm]"'


def is_timm_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def import_timm():
    try:
        import timm
    except ImportError as exc:
        raise DonorError(
            "Donors named 'timm:NAME' need the package timm (and safetensors), which is not "
            f"installed. Install them with `{INSTALL_HINT}`, or use a torchvision donor "
            "(`graftsearch taps --list`).") from exc
    return timm


def arch_of(name: str) -> str:
    """The timm architecture of ``timm:NAME``, checked against timm's registry."""
    timm = import_timm()
    arch = name[len(PREFIX):].strip()
    if "." in arch:
        raise DonorError(param_message(
            "donor", "timm:ARCH without a pretrained tag", name,
            f"Name the tag with --weights: `--donor {PREFIX}{arch.split('.', 1)[0]} --weights "
            f"{arch.split('.', 1)[1]}`."))
    if not arch or not timm.is_model(arch):
        hint = close_matches_hint(arch, timm.list_models()) if arch else ""
        raise DonorError(param_message(
            "donor", "timm:NAME with NAME a timm model (timm.list_models())", name,
            (hint + " Use `graftsearch taps --list` to see the timm families.").strip()))
    return arch


def resolve_tag(arch: str, weights: Optional[str]) -> Optional[str]:
    """The pretrained tag ``weights`` stands for on ``arch`` (``"DEFAULT"``: the model's default
    tag); None for random weights. Reads timm's registry only, never the network."""
    timm = import_timm()
    if weights is None or weights == NO_WEIGHTS:
        return None
    tags = [full.split(".", 1)[1] for full in timm.list_pretrained(f"{arch}.*")
            if "." in full and full.split(".", 1)[0] == arch]
    if not tags:
        raise DonorError(param_message(
            "weights", f"'{NO_WEIGHTS}' for '{PREFIX}{arch}' (timm has no pretrained weights for it)",
            weights, "Use `--weights none` or your own weights with `--donor-checkpoint FILE`."))
    if weights == DEFAULT_WEIGHTS:
        cfg = timm.models.get_pretrained_cfg(arch)
        default = getattr(cfg, "tag", None) if cfg is not None else None
        return default if default in tags else tags[0]
    tag = weights[len(arch) + 1:] if weights.startswith(arch + ".") else weights
    if tag not in tags:
        raise DonorError(param_message(
            "weights", f"a pretrained tag of '{PREFIX}{arch}' ({', '.join(tags)}), "
            f"'{DEFAULT_WEIGHTS}' or '{NO_WEIGHTS}'", weights, close_matches_hint(tag, tags)))
    return tag


def preprocessing_of(model: nn.Module) -> Tuple[int, Tuple[float, ...], Tuple[float, ...]]:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = cfg.get("input_size") or (3, 224, 224)
    mean = tuple(float(v) for v in cfg.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(float(v) for v in cfg.get("std") or (0.229, 0.224, 0.225))
    if len(mean) != 3 or len(std) != 3:
        raise DonorError(f"The timm model '{cfg.get('architecture')}' expects "
                         f"{len(mean)}-channel inputs; graftsearch feeds RGB images (3 channels).")
    return int(size[-1]), mean, std


def pretrained_classes(arch: str, tag: Optional[str]) -> Optional[int]:
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
    n = getattr(cfg, "num_classes", None) if cfg is not None else None
    return int(n) if n else None


def create(arch: str, tag: Optional[str], *, num_classes: Optional[int],
           pretrained: bool) -> nn.Module:
    """The timm model, with the tag's pretrained config (and its weights when ``pretrained``)."""
    timm = import_timm()
    kwargs = {"num_classes": num_classes} if num_classes else {}
    full = f"{arch}.{tag}" if tag else arch
    if not pretrained:
        return timm.create_model(full, pretrained=False, **kwargs)
    try:
        return timm.create_model(full, pretrained=True, **kwargs)
    except Exception as exc:  # downloads fail in many ways (no network, hub, hash)
        raise DonorError(
            f"Could not load the timm weights '{full}' ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). timm downloads them from the "
            "Hugging Face Hub or the model's URL. Without network access, save the weights once "
            "on a machine that has it (safetensors.torch.save_file(timm.create_model("
            f"'{full}', pretrained=True).state_dict(), 'donor.safetensors')) and load them with "
            f"`--donor {PREFIX}{arch} --donor-checkpoint donor.safetensors`, or use random "
            f"weights (`--weights {NO_WEIGHTS}`).") from exc


def families() -> Dict[str, List[str]]:
    """timm's model names by the module that defines them (its family), when timm is installed;
    empty without it."""
    try:
        import timm
    except ImportError:
        return {}
    out: Dict[str, List[str]] = {}
    for family in timm.list_modules():
        names = timm.list_models(module=family)
        if names:
            out[family] = list(names)
    return out
