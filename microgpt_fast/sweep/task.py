"""One run of a sweep: the task a worker is given and the result it gives back.

A task is {"id", "setting", "seed", "fixed", "data", "kernel"} (data: a bundled
dataset's name or an absolute path; its format is the data_format field of
the setting, or of fixed, else the data's own); a result is
the task's id, setting and seed with status ("ok", "diverged", "error"),
tail_loss, val_loss, steps, seconds and error. Both are plain JSON, so that
they cross a pipe to a local worker process or the network to a Dask worker.
"""

from __future__ import annotations

import time

from ..config import configs_from
from ..data import DataError
from ..kernels import KernelError


def blank_result(task: dict, status: str = "ok", error: str | None = None) -> dict:
    """A run's result before (or without) its numbers."""
    return {"id": task["id"], "setting": task["setting"], "seed": task["seed"],
            "status": status, "tail_loss": None, "val_loss": None, "steps": None,
            "seconds": None, "error": error}


def describe(exc: BaseException) -> str:
    """An exception as one line: "CommClosedError: in <...>", or its name alone."""
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_one(task: dict) -> dict:
    """Train one setting with one seed; never raises for a failing run.

    Returns the task's id, setting and seed with status ("ok", "diverged",
    "error"), tail_loss (mean loss of the last tenth of the steps), val_loss
    (when val_fraction, given or the data format's default, is > 0), seconds
    (wall time of the whole run) and error (a message, or None).
    """
    from ..trainer import Trainer, TrainingDiverged, tail_loss  # in the worker process

    t0 = time.perf_counter()
    values = {**task["fixed"], **task["setting"], "seed": task["seed"]}
    result = blank_result(task)
    try:
        config, tc = configs_from(values)
        trainer = Trainer(config, tc, data=task["data"], kernel=task["kernel"], threads=1)
        losses = trainer.train()
        result["steps"] = len(losses)
        result["tail_loss"] = tail_loss(losses)
        if trainer.val_dataset is not None:  # val_fraction > 0, given or the data's default
            result["val_loss"] = trainer.evaluate()
    except TrainingDiverged as exc:
        result.update(status="diverged", error=str(exc))
    except (ValueError, DataError, KernelError, MemoryError) as exc:
        result.update(status="error", error=str(exc) or type(exc).__name__)
    result["seconds"] = time.perf_counter() - t0
    return result


def checked(result, task: dict) -> dict:
    """result, or a failed run of task in its place when result is not one: an
    "ok" run always has a float tail_loss."""
    if not isinstance(result, dict):
        return blank_result(task, "error", f"not a run's result: {type(result).__name__}")
    if result.get("status") == "ok" and not isinstance(result.get("tail_loss"), float):
        return {**result, "status": "error", "error": "the run reported no tail loss"}
    return result
