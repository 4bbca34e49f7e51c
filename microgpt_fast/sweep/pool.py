"""The local worker processes of a sweep: `python -m microgpt_fast.sweep.worker`,
one per core, each fed one task at a time over its stdin.

Fresh interpreters rather than multiprocessing's: they never import the
caller's __main__ (a script needs no `if __name__ == "__main__"` guard) and
inherit none of its OpenMP state. A worker that dies fails only the run it
held, and a new one takes its place.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import selectors
import site
import subprocess
import sys

from .task import blank_result, checked


def _plain(value):
    """JSON for the numpy scalars a grid may hold (np.int64 is no int to json)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a setting value")


def _worker_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one single-threaded run per core
    # the workers import this very package, wherever the caller found it (an
    # in-place build, a folder added to sys.path); site-packages they find anyway,
    # and it must not go ahead of the standard library
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # microgpt_fast/
    root = os.path.dirname(package)
    if root not in site.getsitepackages() + [site.getusersitepackages()]:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


class _Worker:
    """One `python -m microgpt_fast.sweep.worker` process and the task it holds.

    It runs in its own session, so a terminal's Ctrl-C reaches only the sweep,
    which then kills it; its stderr is drained (a full pipe would stop it) and
    the last of it kept to say why it died."""

    def __init__(self, env: dict):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "microgpt_fast.sweep.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.task = None
        self.partial = b""  # stdout after the last complete line
        self.stderr_tail = b""

    def send(self, task: dict) -> None:
        self.task = task
        try:
            self.process.stdin.write(json.dumps(task, default=_plain).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: the end of its stdout reports the task

    def read_results(self) -> list | None:
        """The results it wrote since the last call, or None at the end of its stdout."""
        data = os.read(self.process.stdout.fileno(), 65536)
        if not data:
            return None
        *lines, self.partial = (self.partial + data).split(b"\n")
        results = []
        for line in lines:
            try:
                results.append(json.loads(line))
            except ValueError:
                results.append(None)  # checked() makes it a failed run
        return results

    def read_stderr(self) -> bool:
        """Keep the last of its stderr; False at the end of it."""
        data = os.read(self.process.stderr.fileno(), 65536)
        self.stderr_tail = (self.stderr_tail + data)[-4096:]
        return bool(data)

    def death(self) -> str:
        """Why it ended (its stdout did): "worker process 123 died (killed by signal 9)"."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # closed its stdout yet lives on
            self.process.kill()
            code = self.process.wait()
        while self.read_stderr():  # the rest of what it said, now that it is gone
            pass
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        said = self.stderr_tail.decode(errors="replace").strip().splitlines()
        if said and code >= 0:
            how += f": {said[-1].strip()[:200]}"
        return f"worker process {self.process.pid} died ({how})"

    def stop(self, at_once: bool) -> None:
        """End the process: at once (it may be mid-run), or by closing its stdin."""
        if not at_once:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError):
                stream.close()


def run_on_workers(tasks: list[dict], workers: int, report) -> None:
    """Run the tasks on `workers` local worker processes, report(result) as each
    finishes. A worker that dies fails the run it held and is replaced. On any
    exit (Ctrl-C raises KeyboardInterrupt here) the workers are ended: at once
    unless every run is done."""
    queue = collections.deque(tasks)
    env = _worker_env()
    selector = selectors.DefaultSelector()
    pool = []

    def start_worker():
        worker = _Worker(env)
        pool.append(worker)
        selector.register(worker.process.stdout, selectors.EVENT_READ, (worker, "stdout"))
        selector.register(worker.process.stderr, selectors.EVENT_READ, (worker, "stderr"))

    def retire(worker):
        selector.unregister(worker.process.stdout)
        with contextlib.suppress(KeyError):  # already unregistered at the end of stderr
            selector.unregister(worker.process.stderr)
        pool.remove(worker)

    finished = False
    try:
        for _ in range(min(workers, len(tasks))):
            start_worker()
        while queue or any(worker.task is not None for worker in pool):
            for worker in pool:
                if worker.task is None and queue:
                    worker.send(queue.popleft())
            # a short timeout: Ctrl-C is seen at once even where select() is not interrupted
            for key, _ in selector.select(timeout=0.2):
                worker, stream = key.data
                if worker not in pool:  # died earlier in this batch
                    continue
                if stream == "stderr":
                    if not worker.read_stderr():
                        selector.unregister(worker.process.stderr)
                    continue
                results = worker.read_results()
                if results is None:
                    retire(worker)
                    if worker.task is not None:
                        report(blank_result(worker.task, "error", worker.death()))
                    worker.stop(at_once=True)
                    if queue:
                        start_worker()
                    continue
                for result in results:
                    if worker.task is not None:
                        task, worker.task = worker.task, None
                        report(checked(result, task))
        finished = True
    finally:
        for worker in pool:
            worker.stop(at_once=not finished)
        selector.close()
