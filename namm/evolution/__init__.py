"""Evolution: CMA-ES over the NAMM parameters (:mod:`.loop`), with what members are scored on injected as a
:class:`~namm.evolution.fitness.Fitness` (``language`` built in; register others with
:func:`~namm.evolution.fitness.register_fitness`), configured by :mod:`.config`, spread over ranks by
:mod:`.dist`."""

from .config import ConfigError, EvolveConfig, config_from_dict, dump_config, load_config
from .dist import Dist
from .fitness import FITNESSES, WORST_FITNESS, Fitness, register_fitness, task_fitness
from .loop import Evolution, EvolveResult, evolve, load_state

__all__ = ["ConfigError", "EvolveConfig", "config_from_dict", "dump_config", "load_config", "Dist", "FITNESSES",
           "WORST_FITNESS", "Fitness", "register_fitness", "task_fitness", "Evolution", "EvolveResult", "evolve",
           "load_state"]
