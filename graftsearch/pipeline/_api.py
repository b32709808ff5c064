"""``graftsearch.search``: donor + data (or features) + fitness + objective -> SearchResult.

A thin entry point over parts that are each usable alone: :func:`load_donor`,
:func:`load_dataset`, :func:`build_cache`, :func:`make_fitness` and :func:`run_search`. Its
defaults are those of ``graftsearch run`` (:data:`DEFAULTS`), so the same arguments give the
same donor, cache and search from Python and from the command line.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from graftsearch._utils.errors import ParameterError, param_message
from graftsearch._utils.progress import ProgressCallback
from graftsearch.pipeline._settings import DEFAULTS, build_part


def search(*, donor: Any = None, weights: Optional[str] = DEFAULTS["weights"], data: Any = None,
           features: Any = None, fitness: Any = DEFAULTS["proxy"],
           objective: str = DEFAULTS["objective"], p_min: Optional[float] = None,
           size_max: Union[str, float, None] = None, head: Any = None,
           image_size: Optional[int] = DEFAULTS["image_size"],
           cache_dir: Optional[str] = DEFAULTS["cache_dir"], run_dir: Optional[str] = None,
           refine: str = DEFAULTS["refine"], refine_fitness: Any = "mlp",
           seed: int = DEFAULTS["seed"], progress: Optional[ProgressCallback] = None,
           **settings: Any):
    """Search the taps of ``donor`` on ``data`` for the paper's ``objective``.

    ``donor``: a name (loaded with ``weights``: by default ``"DEFAULT"``, its pretrained ones;
    ``"none"`` or None for random weights), :class:`DonorSpec` or :class:`Donor`; ``data``: a
    ``--data`` string, :class:`DataSpec` or :class:`ImageDataset`. Instead of both, ``features``
    takes any :class:`FeatureSource` (a :class:`FeatureCache` or :class:`ArrayFeatures`).
    ``image_size`` is the cache's input side (None: the donor's own). ``fitness`` is ``"fast"``,
    ``"mlp"``, a callable ``fn(ctx)`` / :class:`FitnessFunction`, or a fitness object
    (``evaluate(selection) -> Evaluation``). ``head`` is a :class:`HeadSpec` (default: the
    paper's head for the data's classes). ``refine="front"`` re-ranks the final front with
    ``refine_fitness``. Other keyword arguments are :class:`SearchSettings` fields
    (``population``, ``generations``, ``n_jobs``, ``checkpoint_every``, ...). Returns a
    :class:`SearchResult`.
    """
    from graftsearch.data import DataSpec, ImageDataset, load_dataset
    from graftsearch.donors._donor import Donor
    from graftsearch.donors._spec import DonorSpec
    from graftsearch.donors._zoo import load_donor
    from graftsearch.features._cache import build_cache
    from graftsearch.optimize._search import run_search
    from graftsearch.optimize._settings import SearchSettings
    from graftsearch.taps._head import HeadSpec

    search_settings = SearchSettings(objective=objective, p_min=p_min, size_max=size_max,
                                     seed=seed, refine=refine, **settings)
    if features is None:
        if donor is None or data is None:
            raise ParameterError(param_message(
                "features", "a FeatureSource, or both 'donor' and 'data' to build one", None,
                "Pass donor='efficientnet_lite0', data='path/to/images' (or features=cache)."))
        if isinstance(donor, str):
            donor = load_donor(donor, weights=weights)
        elif isinstance(donor, DonorSpec):
            donor = load_donor(donor)
        elif not isinstance(donor, Donor):
            raise ParameterError(param_message("donor", "a donor name, DonorSpec or Donor",
                                               type(donor).__name__))
        if not isinstance(data, ImageDataset):
            if not isinstance(data, DataSpec):
                data = build_part("data", {**DEFAULTS, "data": str(data), "seed": seed})
            data = load_dataset(data)
        features = build_cache(donor, data, image_size=image_size, cache_dir=cache_dir,
                               progress=progress)
    elif donor is not None or data is not None:
        raise ParameterError(param_message("features", "given alone (not with donor or data)",
                                           "features and donor/data"))
    head = head if head is not None else HeadSpec(num_classes=len(features.classes))
    fit = _fitness(fitness, features, head, seed)
    refiner = _fitness(refine_fitness, features, head, seed) if search_settings.refine != "none" else None
    taps = features.taps
    if search_settings.size_metric == "int8_mib" and taps.int8_bytes_upto is None:
        if donor is None:
            raise ParameterError(param_message(
                "features", "a FeatureSource whose taps carry int8 sizes when "
                "size_metric='int8_mib'", type(features).__name__,
                "Pass donor= and data= instead (their int8 sizes are measured on the donor), or "
                "ArrayFeatures(taps=donor.taps().with_int8_sizes(donor.module), ...)."))
        taps = taps.with_int8_sizes(donor.module)
    return run_search(taps, head, fit, search_settings, run_dir=run_dir,
                      refine_fitness=refiner, progress=progress)


def _fitness(fitness: Any, features, head, seed: int):
    """A fitness object; the ``mlp`` proxy trains the same head the search costs."""
    from graftsearch.fitness import MLPSettings, make_fitness

    if hasattr(fitness, "evaluate"):
        return fitness
    if fitness == "mlp":
        return make_fitness("mlp", features, seed=seed,
                            settings=MLPSettings(hidden=head.hidden, dropout=head.dropout))
    return make_fitness(fitness, features, seed=seed)
