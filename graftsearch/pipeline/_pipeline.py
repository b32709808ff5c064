"""``graftsearch run``: taps -> cache -> search -> final training -> test -> export -> report.

Each stage saves what it makes, so a stopped run resumes where it stopped: the cultivated donor
(``donor.pt``), the feature cache (chunks), the search (``checkpoint.pkl``); the final training
and the report are deterministic and are simply redone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from graftsearch._utils.atomic import write_json
from graftsearch._utils.errors import (DataError, DonorError, GraftSearchError, ParameterError,
                                      SearchError, param_message)
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch.pipeline._settings import (BEFORE_ADDED, RunSettings, cache_kwargs, prepare_data, relative_size,
                                          resolve_size_max)
from graftsearch.optimize._runfiles import CHECKPOINT, EVALUATIONS, versions
from graftsearch.optimize._settings import RESUMABLE_CHANGES

logger = logging.getLogger("graftsearch")

CONFIG = "config.json"
DONOR_CHECKPOINT = "donor.pt"
CULTIVATION = "cultivation.json"
LOG = "log.txt"

# Settings a resumed run may change without becoming another run.
RESUMABLE = set(RESUMABLE_CHANGES) | {"workers", "device", "cache_dir", "latency_runs", "run_dir",
                                      "preset"}

OFFLINE_HINT = ("Two ways forward: give local files (`--data PATH` with your images, "
                "`--donor-checkpoint FILE` or the offline donor `--donor efficientnet_lite0`, "
                "whose ImageNet weights ship with the package), or try the offline demo: "
                "`graftsearch run --preset demo --objective min-size --p-min 0.9`.")


@dataclass
class RunOutcome:
    """What a run produced: its directory, the search result, the final model and the report."""

    run_dir: Path
    settings: RunSettings
    result: Any = None
    final: Any = None
    report: Optional[Path] = None
    cultivation: Optional[Dict[str, Any]] = None
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return bool(self.result is not None and self.result.feasible)


# What a run has made that other settings would not reproduce; until one exists (e.g. the first
# attempt stopped on bad input), the directory is free to take corrected settings.
WORK_FILES = (CHECKPOINT, EVALUATIONS, DONOR_CHECKPOINT)


def _check_run_dir(run_dir: Path, settings: RunSettings) -> None:
    path = run_dir / CONFIG
    if not path.is_file() or not any((run_dir / name).exists() for name in WORK_FILES):
        return
    import json

    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # a damaged config.json is rewritten below
    if not isinstance(stored, dict) or not isinstance(stored.get("settings"), dict):
        raise SearchError(f"The run directory '{run_dir}' holds files of a search that "
                          "`graftsearch run` did not start (its config.json has no 'settings'). "
                          "Pass another --run-dir, or resume that search from Python with the "
                          "same run_dir.")
    old = dict(stored["settings"])
    import dataclasses

    for k, v in BEFORE_ADDED.items():  # a setting added since: the value that run had
        old.setdefault(k, v)
    for f in dataclasses.fields(settings):  # any other setting added since: its default
        if f.name not in old and f.default is not dataclasses.MISSING:
            old[f.name] = f.default
    if isinstance(old.get("quantize"), bool):  # written before the int8 modes existed
        old["quantize"] = "ptq" if old["quantize"] else None
    new = settings.as_dict()
    differ = sorted(k for k in new if k not in RESUMABLE and old.get(k) != new[k]
                    and not _same_weights(k, old, new))
    if differ:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new[k]!r})" for k in differ[:4])
        raise SearchError(f"The run directory '{run_dir}' holds another run; its settings differ: "
                          f"{shown}. Use `graftsearch resume {run_dir}` to continue it, or pass "
                          "another --run-dir.")


def _same_weights(key: str, old: Dict[str, Any], new: Dict[str, Any]) -> bool:
    # "DEFAULT" and the name it resolves to are the same weights (runs made before DEFAULT was
    # the default stored IMAGENET1K_V1)
    if key != "weights" or old.get("donor") != new.get("donor"):
        return False
    from graftsearch.donors._zoo import resolve_weights

    try:
        return resolve_weights(old.get("donor"), old.get("weights")) == \
            resolve_weights(new.get("donor"), new.get("weights"))
    except GraftSearchError:
        return False


def write_config(run_dir: Path, settings: RunSettings, search=None) -> None:
    """config.json: every setting as given, and the search's settings as resolved (a relative
    ``size_max`` is written before the donor is loaded without them, and again with them)."""
    if search is None and relative_size(settings.size_max):
        search_part = None
    else:
        search_part = (search or settings.search_settings()).as_dict()
    write_json(run_dir / CONFIG, {"settings": settings.as_dict(), "search": search_part,
                                  "versions": versions()})


def _use_image_store(dataset, settings: RunSettings, progress) -> None:
    from graftsearch.data._store import build_image_store
    from graftsearch._utils.paths import default_cache_dir

    cache_dir = Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()
    dataset.use_store(build_image_store(dataset, settings.image_size, cache_dir=cache_dir,
                                        progress=progress))


def _stage(progress: Optional[ProgressCallback], name: str, message: str) -> None:
    logger.info("%s: %s", name, message)
    report(progress, "stage", 0, None, message=message, name=name)


def run(settings: RunSettings, *, progress: Optional[ProgressCallback] = None) -> RunOutcome:
    """Run (or resume) the whole path for ``settings``; see the module docstring."""
    from graftsearch.features._cache import build_cache
    from graftsearch.data._sources import load_dataset
    from graftsearch.donors._zoo import describe_weights, load_donor
    from graftsearch.graft._final import train_final_from_run
    from graftsearch.report._report import write_report
    from graftsearch.optimize._search import run_search

    settings = settings.resolved()
    run_dir = Path(settings.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ParameterError(param_message("run_dir", "a directory (created when missing)",
                                           str(run_dir), "Choose another --run-dir."))
    _check_run_dir(run_dir, settings)
    created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # deepest first
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(param_message("run_dir", "a directory that can be created",
                                           str(run_dir), f"({exc.strerror}) Choose a writable "
                                           "location with --run-dir.")) from None
    write_config(run_dir, settings)
    outcome = RunOutcome(run_dir=run_dir, settings=settings)
    handler = logging.FileHandler(run_dir / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    previous_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    failed = False
    try:
        t0 = time.perf_counter()
        # data first: without it nothing else is worth loading
        _stage(progress, "data", f"reading the data ({settings.data})")
        prepare_data(settings.data)
        try:
            dataset = load_dataset(settings.data_spec(), progress=progress,
                                   skip_missing=settings.skip_bad_images)
        except DataError as exc:
            if settings.data == "deepweeds":
                raise DataError(f"{exc} {OFFLINE_HINT}") from exc
            raise
        head = settings.head_spec(num_classes=len(dataset.classes))

        spec = settings.donor_spec()
        try:
            _stage(progress, "donor", f"loading the donor from {spec.checkpoint}" if spec.checkpoint
                   else f"loading the donor {spec.name} with {describe_weights(spec)}")
            donor = load_donor(spec)
        except DonorError as exc:
            if "download" in str(exc).lower():
                raise DonorError(f"{exc} {OFFLINE_HINT}") from exc
            raise
        from graftsearch.graft._final import donor_has_classifier_for

        epochs = settings.cultivate_epochs(donor_has_classifier_for(donor, dataset.classes))
        tunes = settings.fine_tune is not False
        if epochs or tunes:
            # images are read many times from here on: decode and resize each once
            _stage(progress, "images", "decoding and resizing every image once")
            _use_image_store(dataset, settings, progress)
        if epochs:
            donor = _cultivate(donor, dataset, settings, epochs, run_dir, outcome, progress)
        search_settings = settings.search_settings(size_max=resolve_size_max(
            settings.size_max, donor, settings.size_metric, settings.image_size))
        if search_settings.size_max is not None and relative_size(settings.size_max):
            logger.info("size_max %s of the donor: %s", settings.size_max,
                        search_settings.format_size(search_settings.size_max))
        write_config(run_dir, settings, search_settings)
        outcome.timings["prepare_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        _stage(progress, "cache", "caching the pooled features of every tap (one pass per image)")
        cache = build_cache(donor, dataset, **cache_kwargs(settings.as_dict()), progress=progress)
        outcome.timings["cache_s"] = time.perf_counter() - t0
        logger.info("cache: %s", cache.path)

        t0 = time.perf_counter()
        _stage(progress, "search", f"searching ({settings.objective}, {settings.proxy} proxy)")
        fitness, refine_fitness = _fitnesses(cache, settings)
        taps = cache.taps
        if search_settings.size_metric == "int8_mib":
            taps = taps.with_int8_sizes(donor.module)
        result = run_search(taps, head, fitness, search_settings, run_dir=run_dir,
                            refine_fitness=refine_fitness, progress=progress, resume=True)
        outcome.result = result
        outcome.timings["search_s"] = time.perf_counter() - t0
        logger.info("search: %s", result.message)

        if result.feasible:
            t0 = time.perf_counter()
            _stage(progress, "final", "training, testing and exporting the chosen graft")
            outcome.final = train_final_from_run(run_dir, donor, cache, dataset=dataset, head=head,
                                                 settings=settings.final_settings(),
                                                 top_k=settings.top_k, progress=progress)
            outcome.timings["final_s"] = time.perf_counter() - t0
        else:
            # No model meets the constraint: the closest selections are in pareto.csv and the
            # report; nothing is exported that would pass for a model meeting it. The caller
            # says so (outcome.feasible; the CLI's "nothing feasible" line), log.txt keeps it.
            logger.info("nothing feasible: %s", result.message)

        _stage(progress, "report", "writing report.md, pareto.png and convergence.png")
        outcome.report = write_report(run_dir)
        return outcome
    except Exception:  # not KeyboardInterrupt: an interrupted run is told to resume
        failed = True
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous_level)
        if failed and created:
            _remove_failed_start(run_dir, created)


def _remove_failed_start(run_dir: Path, created) -> None:
    """Remove the directories this run created when it stopped before making anything but its
    config.json and log.txt (a misspelt donor, missing data): they would only pile up beside the
    real runs. A file anyone else put there keeps the directory."""
    if any(p.name not in (CONFIG, LOG) for p in run_dir.iterdir()):
        return
    for name in (CONFIG, LOG):
        (run_dir / name).unlink(missing_ok=True)
    for d in created:
        try:
            d.rmdir()
        except OSError:  # not empty (another run's directory): keep it and what is above it
            return


def _fitnesses(cache, settings: RunSettings):
    from graftsearch.fitness._fast import FastProxy
    from graftsearch.fitness._mlp import MLPProxy

    mlp = MLPProxy(cache, seed=settings.seed, settings=settings.mlp_settings())
    if settings.proxy == "mlp":
        return mlp, None
    fast = FastProxy(cache, seed=settings.seed, settings=settings.fast_settings())
    return fast, (mlp if settings.refine != "none" else None)


def _cultivate(donor, dataset, settings: RunSettings, epochs: int, run_dir: Path,
               outcome: RunOutcome, progress: Optional[ProgressCallback]):
    """Fine-tune the donor once per run; a finished cultivation is reused on resume."""
    import json

    from graftsearch.cultivate._cultivate import cultivate_donor
    from graftsearch.donors._zoo import load_donor

    checkpoint = run_dir / DONOR_CHECKPOINT
    marker = run_dir / CULTIVATION
    if not (checkpoint.is_file() and marker.is_file()):
        _stage(progress, "cultivate", f"fine-tuning the donor for up to {epochs} epochs "
               f"({settings.recipe} recipe)")
        cultivation = cultivate_donor(donor, dataset, settings=settings.cultivate_settings(epochs),
                                      progress=progress)
        cultivation.save(checkpoint)
        write_json(marker, cultivation.table_row())
    outcome.cultivation = json.loads(marker.read_text())
    spec = settings.donor_spec()
    return load_donor(checkpoint=str(checkpoint), taps=spec.taps, image_size=spec.image_size)
