"""Stage 6, fitness: how good a selection of taps is, from short proxy trainings on cached features."""

from graftsearch._utils.lazy import lazy_exports as _lazy_exports

# Each name is imported from its module on first use (graftsearch._utils.lazy).
__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "graftsearch.fitness._evaluation": ("Evaluation",),
    "graftsearch.fitness._base": ("Fitness",),
    "graftsearch.fitness._settings": ("FastSettings", "MLPSettings"),
    "graftsearch.fitness._mlp": ("MLPProxy",),
    "graftsearch.fitness._fast": ("FastProxy",),
    "graftsearch.fitness._custom": ("CustomFitness", "FitnessFunction", "SelectionContext"),
    "graftsearch.fitness._factory": ("make_fitness",),
})
