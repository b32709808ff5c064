"""The donor names, listed without importing torch whenever that can be avoided.

torchvision's and timm's model lists come from importing them (and torch with them: seconds of
every `graftsearch taps --list`). The lists change only with the installed versions, so they are
computed once per pair of versions and kept as JSON in the cache directory; a later listing reads
the file. A file that cannot be written (a read-only home) only costs the next listing its speed.
"""

from __future__ import annotations

import json
import logging
from importlib import metadata
from typing import Dict, List, Optional

from graftsearch._utils.atomic import write_json
from graftsearch._utils.errors import DonorError, close_matches_hint, param_message
from graftsearch._utils.paths import default_cache_dir

logger = logging.getLogger("graftsearch")

PAPER_DONOR = "paper_vgg16"
LITE0 = "efficientnet_lite0"
_FORMAT = 1


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _compute() -> Dict[str, object]:
    import torchvision

    from graftsearch.donors import _timm

    return {"format": _FORMAT,
            "torchvision": sorted(torchvision.models.list_models(module=torchvision.models)),
            "timm": _timm.families()}


def model_lists() -> Dict[str, object]:
    """``{"torchvision": [names], "timm": {family: [names]}}`` for the installed versions."""
    from graftsearch._version import __version__

    # graftsearch's own version too: how the lists are made (timm's families) may change with it
    key = f"gs{__version__}-tv{_version('torchvision')}-timm{_version('timm')}"
    path = default_cache_dir() / "donor-names" / f"{key}.json"
    try:
        listed = json.loads(path.read_text())
        if (listed.get("format") == _FORMAT and isinstance(listed.get("torchvision"), list)
                and isinstance(listed.get("timm"), dict)):
            return listed
    except (OSError, ValueError, AttributeError):
        pass
    listed = _compute()
    try:
        write_json(path, listed)
    except OSError as exc:
        logger.debug("could not keep the donor names in %s: %s", path, exc)
    return listed


def donor_names() -> List[str]:
    """Every donor name :func:`load_donor` accepts besides ``timm:NAME`` (timm's 1000+ models
    are listed by :func:`timm_families`)."""
    return sorted(set(model_lists()["torchvision"]) | {LITE0, PAPER_DONOR})


def timm_families() -> Dict[str, List[str]]:
    """timm's model names by the module that defines them (its family); empty without timm."""
    return dict(model_lists()["timm"])


def check_donor_name(name: str) -> None:
    """Raise :class:`DonorError` unless :func:`load_donor` can build ``name`` (a timm name is
    checked against timm itself, which imports it)."""
    from graftsearch.donors import _timm

    if _timm.is_timm_name(name):
        _timm.arch_of(name)
        return
    if name not in donor_names():
        raise DonorError(param_message(
            "donor", "a torchvision classification model, 'efficientnet_lite0', 'paper_vgg16' "
            "or 'timm:NAME'",
            name, (close_matches_hint(name, donor_names()) + " Use `graftsearch taps --list` to "
                   "see every name, or load a checkpoint with `--donor-checkpoint FILE`.").strip()))
