"""Replica runners: one single-threaded onnxruntime session (or OpenVINO infer request) per
CPU, each bound for good to one pool thread that takes rows as it frees up. Small integer
kernels scale better across sessions than across intra-op threads (figures: bench/README.md)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

# A runner: (wanted output's name, input rows) -> that output; one runtime's single call
Runner = Callable[[str, np.ndarray], np.ndarray]

# The smallest call a spread over replica sessions makes near the end of a block
TAIL_ROWS = 8


class Claims:
    """Contiguous row ranges of `rows` for `takers` sessions, handed out one `take` at a time
    (thread-safe): `batch_size` rows while plenty remain, then the remainder divided by the
    takers, never under `smallest` rows (except the very last range)."""

    def __init__(self, rows: int, batch_size: int, takers: int, smallest: int) -> None:
        self.rows, self.batch_size, self.takers, self.smallest = rows, batch_size, takers, smallest
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> slice | None:
        """The next range, or None when every row has been handed out."""
        with self._lock:
            start, left = self._next, self.rows - self._next
            if left <= 0:
                return None
            size = min(self.batch_size, max(self.smallest, -(-left // self.takers)))
            self._next = start + min(size, left)
            return slice(start, self._next)


class Spread:
    """Rows being run by the replica sessions, each session's thread taking the next rows as
    soon as it is free rather than a fixed share: a thread the reader or writer delays leaves
    its rows to the others instead of holding them at a barrier, and a thread done with these
    rows goes on to the next `Spread` started (figures: bench/README.md)."""

    def __init__(self, feed: np.ndarray, want: str, claims: Claims) -> None:
        self.feed, self.want, self.claims = feed, want, claims
        self.tasks: list[Future[None]] = []  # one per session thread
        self._outs: dict[int, np.ndarray] = {}
        self._failed = threading.Event()

    def work(self, runner: Runner) -> None:
        """Run `runner` on claimed rows until none are left or another task failed."""
        while not self._failed.is_set() and (rows := self.claims.take()) is not None:
            try:
                self._outs[rows.start] = runner(self.want, self.feed[rows])
            except BaseException:
                self._failed.set()  # the others stop after their current call
                raise

    def result(self) -> np.ndarray:
        """The output for every row, in order, once every task is done; the first failure
        of a task is raised (after all of them stopped)."""
        wait(self.tasks)
        for task in self.tasks:
            task.result()
        return np.concatenate([self._outs[start] for start in sorted(self._outs)])


class ReplicaPool:
    """`runners`, each run only by its own pool thread; `close()` ends the threads."""

    def __init__(self, runners: list[Runner]) -> None:
        self.runners = runners
        free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for k in range(len(runners)):
            free.put(k)
        self._bound = threading.local()
        self._pool = ThreadPoolExecutor(
            len(runners), "fcls-model", initializer=self._bind, initargs=(free,)
        )

    def __len__(self) -> int:
        return len(self.runners)

    def spread(self, feed: np.ndarray, batch_size: int, want: str, smallest: int) -> Spread:
        """Start every runner's thread on `feed` (`Spread`); its `result()` waits."""
        claims = Claims(len(feed), batch_size, len(self.runners), smallest)
        spread = Spread(feed, want, claims)
        spread.tasks = [self._pool.submit(self._work, spread) for _ in self.runners]
        return spread

    def close(self) -> None:
        """Let running spreads finish, then end the threads (idempotent)."""
        self._pool.shutdown(wait=True)

    def _work(self, spread: Spread) -> None:
        spread.work(self.runners[self._bound.index])

    def _bind(self, free: queue.SimpleQueue[int]) -> None:
        """Give the pool thread that runs this its own runner, for good (looked up at each
        call, so a test can wrap one in place)."""
        self._bound.index = free.get_nowait()
