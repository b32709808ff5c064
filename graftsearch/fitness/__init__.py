"""Stage 6, fitness: how good a selection of taps is, from short proxy trainings on cached features."""

from graftsearch.fitness._evaluation import Evaluation
from graftsearch.fitness._base import Fitness
from graftsearch.fitness._mlp import MLPProxy, MLPSettings
from graftsearch.fitness._fast import FastProxy, FastSettings
from graftsearch.fitness._custom import CustomFitness, FitnessFunction, SelectionContext
from graftsearch.fitness._factory import make_fitness

__all__ = ['Fitness', 'Evaluation', 'FastProxy', 'FastSettings', 'MLPProxy', 'MLPSettings', 'make_fitness',
           'CustomFitness', 'FitnessFunction', 'SelectionContext']
