"""Preemption: SIGTERM (how TPU / GPU schedulers preempt) saves, then stops.

``Watcher`` installs a SIGTERM handler for the life of a run (main thread
only); the loop asks ``preempted(step)`` after every step. With several
processes JAX's own preemption sync point is used (after
``jax.distributed.initialize``), so every host saves the same step; the
local flag covers a single process.
"""
from __future__ import annotations

import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils


class Preempted(SystemExit):
  """The run saved a checkpoint on SIGTERM and stopped (exit status 143)."""

  def __init__(self, message: str):
    super().__init__(143)
    self.message = message
    logging.warning("%s", message)

  def __str__(self):
    return self.message


class Watcher:
  """Context manager: records SIGTERM; ``preempted(step)`` after each step."""

  def __init__(self):
    self._flag = False
    self._previous = None

  def _handler(self, signum, frame):
    del frame
    logging.warning("signal %d received: saving a checkpoint at the next "
                    "step, then stopping", signum)
    self._flag = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def preempted(self, step: int) -> bool:
    if jax.process_count() > 1:
      # All hosts must agree on the step: only JAX's sync point decides (a
      # local flag on one host would make it save alone and hang).
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:  # no preemption service (not initialised)
        return False
    return self._flag
