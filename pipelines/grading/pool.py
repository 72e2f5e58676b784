"""The hard time bound: grading worker processes killed at their deadline, results in input
order; the one-shot entry points (`grade`, `is_equivalent`, `grade_batch`) on a shared pool."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from pipelines.grading.equivalence import WORKER_RULES, _certain_verdict
from pipelines.grading.extract import WORKER_EXTRACTORS

DEFAULT_TIMEOUT_SECONDS = 5.0


def _worker_loop(connection: Connection) -> None:
    """Grade (prediction, gold) pairs sent over the pipe until told to stop."""
    import logging

    # math-verify warns on every call that its own timeout is off: the kill is our bound.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        rule, prediction, gold = message
        try:
            verdict, step = WORKER_RULES[rule](prediction, gold)
        except BaseException as error:  # noqa: BLE001 - any parser failure is a wrong answer
            # BaseException too: math-verify's TimeoutException derives from it, and a worker
            # that exits on an input before its first answer would read as "cannot start".
            try:
                detail = f"{type(error).__name__}: {error}"[:300]
            except BaseException:  # noqa: BLE001 - e.g. a str() that itself fails
                detail = type(error).__name__
            connection.send((False, detail, "error"))
            continue
        connection.send((bool(verdict), None, step))


@dataclass(frozen=True)
class GradeResult:
    """Outcome of grading one response against one gold answer."""

    correct: bool
    extracted: str | None
    timed_out: bool = False
    error: str | None = None
    decided_by: str | None = None  # the rule step that gave the verdict (empo-rules: exact, sympy, ...)


class GradingError(RuntimeError):
    """The grader itself is broken (not an answer that is wrong or slow)."""


@contextmanager
def _main_file_hidden_if_unreadable() -> Iterator[None]:
    """multiprocessing re-runs the caller's main file in each new worker. A main read from
    standard input (`python - <<EOF`, `__file__ == "<stdin>"`) or another pseudo-file cannot be
    re-run, and the worker needs nothing from it (its code is in this module): hide the name
    while the worker starts. A real script keeps the usual rule (guard it with
    `if __name__ == "__main__":`); notebooks and `python -c` have no main file at all."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path) or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class _Worker:
    def __init__(self, context) -> None:
        self.answered = 0
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_loop, args=(child,), daemon=True)
        with _main_file_hidden_if_unreadable():
            self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


#: What the fork server imports before any worker forks. multiprocessing ignores a preload that
#: fails to import, so a broken one would only show as slower grading: a test imports each.
FORK_SERVER_PRELOAD = ("math_verify", "pipelines.grading", "pipelines.empo_rules", "pipelines.grading_warmup")


def _context():
    """forkserver: workers fork from a clean server with math-verify preloaded and warmed up
    (pipelines.grading_warmup), not from a parent that may hold torch threads (fork after
    torch can deadlock)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORK_SERVER_PRELOAD))
    return context


class GradingPool:
    """Worker processes with a hard per-item deadline; results in input order."""

    def __init__(
        self, workers: int | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, rule: str = "math-verify"
    ):
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if rule not in WORKER_RULES:
            raise ValueError(f"unknown grading rule {rule!r} (known: {', '.join(WORKER_RULES)})")
        self.rule = rule
        self.size = max(1, workers or os.cpu_count() or 1)
        self.timeout_seconds = timeout_seconds
        self.timeouts = 0
        self._context = _context()
        self._workers: list[_Worker] = []

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def _ensure_workers(self, needed: int) -> None:
        while len(self._workers) < min(self.size, needed):
            self._workers.append(_Worker(self._context))

    def equivalent_many(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, bool]]:
        """(equivalent, timed_out) per (prediction, gold) pair."""
        return [(r[0], r[1]) for r in self._run(pairs)]

    def _run(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, bool, str | None, str | None]]:
        """(verdict, timed out, error, deciding step) per pair, in order."""
        results: list[tuple[bool, bool, str | None, str | None] | None] = [None] * len(pairs)
        undecided: list[int] = []
        for index, (prediction, gold) in enumerate(pairs):
            verdict = _certain_verdict(self.rule, prediction, gold)
            if verdict is None:
                undecided.append(index)
            else:
                results[index] = (verdict, False, None, "math-verify" if self.rule == "math-verify" else "mathd")
        if not undecided:
            return results  # type: ignore[return-value]
        # Longest first: the rare slow item (a long expression) starts early instead of
        # finishing last on one worker while the others idle.
        pending = deque(sorted(undecided, key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1]))))
        self._ensure_workers(len(pending))
        idle = list(range(len(self._workers)))
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (item, deadline)
        while pending or busy:
            while idle and pending:
                slot, item = idle.pop(), pending.popleft()
                self._workers[slot].connection.send((self.rule, *pairs[item]))
                busy[slot] = (item, time.monotonic() + self.timeout_seconds)
            next_deadline = min(deadline for _, deadline in busy.values())
            ready = wait(
                [self._workers[s].connection for s in busy], timeout=max(0.0, next_deadline - time.monotonic())
            )
            for slot in [s for s in busy if self._workers[s].connection in ready]:
                item, _ = busy.pop(slot)
                worker = self._workers[slot]
                try:
                    equivalent, error, step = worker.connection.recv()
                    worker.answered += 1
                    results[item] = (bool(equivalent), False, error, step)
                except (EOFError, OSError):  # the worker died
                    worker.process.join(timeout=5)
                    if worker.answered == 0 and (worker.process.exitcode or 0) > 0:
                        raise GradingError(
                            f"a grading worker exited with code {worker.process.exitcode} before grading "
                            "anything: it could not start (workers re-import the main module: a script "
                            "must guard its code with `if __name__ == '__main__':`)"
                        ) from None
                    results[item] = (False, False, "grader process died", None)  # e.g. killed for memory
                    self._replace(slot)
                idle.append(slot)
            now = time.monotonic()
            for slot in [s for s, (_, deadline) in busy.items() if deadline <= now]:
                item, _ = busy.pop(slot)
                results[item] = (False, True, f"timed out after {self.timeout_seconds} s", None)
                self.timeouts += 1
                self._replace(slot)
                idle.append(slot)
        return results  # type: ignore[return-value]

    def _replace(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = _Worker(self._context)

    def grade_many(self, responses: Sequence[str], golds: Sequence[str], progress: bool = False) -> list[GradeResult]:
        """Extract each response's answer and compare it with its gold."""
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
        extract = WORKER_EXTRACTORS[self.rule]
        extracted = [extract(r) for r in responses]
        todo = [i for i, answer in enumerate(extracted) if answer is not None]
        outcomes: dict[int, tuple[bool, bool, str | None, str | None]] = {}
        batches = [todo[i : i + 256] for i in range(0, len(todo), 256)]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="answer", desc="grading", mininterval=2.0)
        for batch in batches:
            for index, outcome in zip(batch, self._run([(extracted[i], golds[i]) for i in batch])):
                outcomes[index] = outcome
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return [
            GradeResult(correct=False, extracted=None)
            if index not in outcomes
            else GradeResult(
                correct=outcomes[index][0],
                extracted=extracted[index],
                timed_out=outcomes[index][1],
                error=outcomes[index][2],
                decided_by=outcomes[index][3],
            )
            for index in range(len(responses))
        ]


_shared_pools: dict[str, GradingPool] = {}
_shared_lock = threading.Lock()


def _shared(timeout_seconds: float, rule: str = "math-verify") -> GradingPool:
    """This process's one-worker pool for `rule` (the one-shot entry points use it)."""
    pool = _shared_pools.get(rule)
    if pool is None:
        pool = _shared_pools[rule] = GradingPool(workers=1, timeout_seconds=timeout_seconds, rule=rule)
        atexit.register(pool.close)
    pool.timeout_seconds = timeout_seconds
    return pool


@contextmanager
def pool_or_shared(
    pool: GradingPool | None, rule: str = "math-verify", timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> Iterator[GradingPool]:
    """`pool` itself, or (None) this process's one-worker pool for `rule`, held for the caller
    alone while the block runs (other threads wait)."""
    if pool is not None:
        yield pool
        return
    with _shared_lock:
        yield _shared(timeout_seconds, rule)


def grade_detailed(response: str, gold: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> GradeResult:
    with pool_or_shared(None, timeout_seconds=timeout_seconds) as shared:
        return shared.grade_many([response], [gold])[0]


def grade(response: str, gold: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> bool:
    """Is the last boxed answer of `response` equivalent to `gold`? Returns within the bound."""
    return grade_detailed(response, gold, timeout_seconds).correct


def is_equivalent(prediction: str, gold: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> bool:
    """Are two extracted answers the same mathematical object? Timeouts count as no."""
    with pool_or_shared(None, timeout_seconds=timeout_seconds) as shared:
        return shared.equivalent_many([(prediction, gold)])[0][0]


def grade_batch(
    responses: Sequence[str],
    golds: Sequence[str],
    workers: int | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    progress: bool = False,
) -> list[GradeResult]:
    with GradingPool(workers=workers, timeout_seconds=timeout_seconds) as pool:
        return pool.grade_many(responses, golds, progress=progress)
