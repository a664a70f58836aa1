"""The training engine: the run config, loop, optimisers, schedules, monitor, and what turns
a checkpoint into features.

``train``/``Trainer`` are imported on first use, so the light parts (configs, features) load
without building the whole stack.
"""

from tagless.engine.config import OptimConfig, TrainConfig
from tagless.engine.features import extract_features


def __getattr__(name):
    if name in ("Trainer", "TrainResult", "train"):
        from tagless.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(name)


__all__ = ["OptimConfig", "TrainConfig", "TrainResult", "Trainer", "extract_features", "train"]
