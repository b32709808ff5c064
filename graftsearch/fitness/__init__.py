"""Stage 6, fitness: how good a selection of taps is, from short proxy trainings on cached features."""

from graftsearch.fitness._evaluation import Evaluation
from graftsearch.fitness._proxies import FastProxy, FastSettings, MLPProxy, MLPSettings, make_fitness
from graftsearch.fitness._custom import CustomFitness, FitnessFunction, SelectionContext

__all__ = ['Evaluation', 'FastProxy', 'FastSettings', 'MLPProxy', 'MLPSettings', 'make_fitness', 'CustomFitness', 'FitnessFunction', 'SelectionContext']
