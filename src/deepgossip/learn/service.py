"""Running a node's learner from its event loop: rounds on a clock, in one thread.

The learner (:mod:`.learner`) is plain, synchronous code; this module gives it
the single worker thread it trains in and the clock that starts its rounds, so
the event loop only ever awaits a future.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from deepgossip.learn.learner import Learner, LearningConfig

log = logging.getLogger(__name__)


def _one_thread() -> None:
    torch.set_num_threads(1)


def learner_executor() -> ThreadPoolExecutor:
    """The single worker thread a node trains in, with torch on one thread.

    One core's worth of training per node (DESIGN.md: a second intra-op thread
    gains <= 25% and starves the event loop of the other core).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner", initializer=_one_thread)


class LearnerService:
    """Runs a node's learner from its event loop: rounds on a clock, in one thread.

    Rounds start every ``round_interval`` seconds, scheduled against the loop's
    clock (a late round starts at once and the missed ticks are skipped, never
    queued up). Each round runs in the learner's single worker thread, so the
    event loop only awaits a future. A checkpoint follows every
    ``checkpoint_every``-th round, in the same thread, and :meth:`stop` saves
    a last one, so a clean shutdown loses nothing and a SIGKILL loses at most
    the rounds since the last checkpoint (the samples are in the data store).
    """

    def __init__(self, learner: Learner, executor: ThreadPoolExecutor) -> None:
        self.learner = learner
        self._executor = executor
        self._task: asyncio.Task[None] | None = None
        self.after_round: Callable[[int, float], Any] | None = None
        """Called in the worker thread after each round with (steps, monotonic
        time); whatever it returns (an update to share) goes to ``on_result``."""
        self.on_result: Callable[[Any], None] | None = None
        """Called on the event loop with a non-None ``after_round`` result."""

    @classmethod
    async def start(
        cls, config: LearningConfig, data_dir: str | os.PathLike[str]
    ) -> LearnerService:
        """Open the learner of ``data_dir`` (in the worker thread) and start its rounds."""
        loop = asyncio.get_running_loop()
        executor = learner_executor()
        learner = await loop.run_in_executor(executor, Learner.open, config, data_dir)
        await loop.run_in_executor(executor, learner.evaluate)  # accuracy from the start
        service = cls(learner, executor)
        service._task = loop.create_task(service._run(), name="learner-rounds")
        return service

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.learner.config.round_interval
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            result = await loop.run_in_executor(self._executor, self._round)
            if result is not None and self.on_result is not None:
                try:
                    self.on_result(result)
                except Exception:
                    log.exception("handling the round's result failed")
            next_at = max(next_at + interval, loop.time())

    def _round(self) -> Any:
        """One round, the ``after_round`` hook and, when due, a checkpoint (worker
        thread). Never raises: a failed round is logged and the next one tries
        again."""
        learner = self.learner
        result = None
        try:
            stats = learner.train_round()
            if self.after_round is not None:
                result = self.after_round(stats.steps, time.monotonic())
            if not stats.idle:
                log.info(
                    "round %d: %d steps, loss %.4f, held-out accuracy %s",
                    stats.round,
                    stats.steps,
                    stats.loss,
                    stats.holdout_accuracy,
                )
                if (
                    learner.checkpoint_path
                    and learner.rounds % learner.config.checkpoint_every == 0
                ):
                    learner.save_checkpoint()
        except Exception:
            log.exception("training round failed")
        return result

    def _final_checkpoint(self) -> None:
        learner = self.learner
        if (
            learner.checkpoint_path is not None
            and learner.checkpoint_version != learner.model_version
        ):
            try:
                learner.save_checkpoint()
            except Exception:
                log.exception("final checkpoint failed")

    async def stop(self) -> None:
        """Stop the rounds (a running one ends after its step), checkpoint, close."""
        self.learner.interrupt()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        # Same single thread: runs after the interrupted round has finished.
        await loop.run_in_executor(self._executor, self._final_checkpoint)
        self._executor.shutdown(wait=True)
        if self.learner.store is not None:
            self.learner.store.close()
