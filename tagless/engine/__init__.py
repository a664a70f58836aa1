"""The training engine: loop, optimisers, schedules, checkpoints, logging.

``train``/``Trainer`` are imported on first use, so the light parts (checkpoints, schedules)
load without building the whole stack.
"""

from tagless.engine.checkpoint import load_checkpoint, save_atomic
from tagless.engine.config import OptimConfig, TrainConfig
from tagless.engine.features import extract_features


def __getattr__(name):
    if name in ("Trainer", "TrainResult", "train"):
        from tagless.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(name)


__all__ = ["OptimConfig", "TrainConfig", "TrainResult", "Trainer", "extract_features", "load_checkpoint", "save_atomic", "train"]
