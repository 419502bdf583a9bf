"""Stopping a training run cleanly on preemption (SIGTERM) or Ctrl-C (SIGINT)."""

import signal

import jax


class StopFlag:
  """SIGTERM (preemption) and SIGINT (Ctrl-C) ask the loop to save and exit cleanly.

  One process: our own SIGTERM handler. Several processes: JAX's preemption service (started by
  jax.distributed, it handles SIGTERM itself) so that every host stops at the same step."""

  def __init__(self):
    self.requested = False
    self.signal = "SIGTERM"
    self._old = {}
    self._multi = jax.process_count() > 1

  def check(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils
      try:
        self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # preemption service off: fall back to the local signal
        pass
    return self.requested

  def __enter__(self):
    if self._multi:
      return self
    def handler(signum, frame):
      self.requested = True
      self.signal = signal.Signals(signum).name
    try:
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. under some test runners)
      self._old = {}
    return self

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
