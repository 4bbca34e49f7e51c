"""microgpt_fast: Karpathy's microgpt, compiled.

    python -m microgpt_fast.train

    >>> from microgpt_fast import GPTConfig, TrainConfig, Trainer
    >>> trainer = Trainer(GPTConfig(), TrainConfig(steps=1000))
    >>> losses = trainer.train()
    >>> trainer.sample(3)
"""

from .config import GPTConfig, TrainConfig, init_params, param_layout
from .data import DataError, Dataset, load_dataset
from .engine import CompiledGPT
from .reference import ReferenceGPT
from .trainer import Trainer

__all__ = ["GPTConfig", "TrainConfig", "Trainer", "CompiledGPT", "ReferenceGPT",
           "Dataset", "DataError", "load_dataset", "init_params", "param_layout"]
__version__ = "0.1.0"
