"""microgpt_fast: Karpathy's microgpt, compiled.

    python -m microgpt_fast.train

    >>> from microgpt_fast import GPTConfig, TrainConfig, Trainer, load_checkpoint
    >>> trainer = Trainer(GPTConfig(), TrainConfig(steps=1000))
    >>> losses = trainer.train()
    >>> trainer.sample(3)
    >>> trainer.save("run.npz")
    >>> trainer = load_checkpoint("run.npz")
    >>> text = Trainer(GPTConfig(block_size=64), TrainConfig(steps=500), data="shakespeare")
"""

from .config import (Adam, GPTConfig, RunOptions, SampleConfig, TrainConfig, init_params,
                     param_layout)
from .data import DataError, Dataset, TextStream, load_dataset, load_text
from .engine import CompiledGPT
from .reference import ReferenceGPT
from .checkpoint import Checkpoint, CheckpointError, read_checkpoint, save_checkpoint
from .trainer import Trainer, TrainingDiverged, load_checkpoint

__all__ = ["GPTConfig", "TrainConfig", "SampleConfig", "RunOptions", "Adam", "Trainer",
           "load_checkpoint", "TrainingDiverged",
           "Checkpoint", "CheckpointError", "read_checkpoint", "save_checkpoint",
           "CompiledGPT", "ReferenceGPT", "Dataset", "DataError", "load_dataset",
           "TextStream", "load_text",
           "init_params", "param_layout"]
__version__ = "0.1.0"
