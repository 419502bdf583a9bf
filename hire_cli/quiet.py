"""Keeping the console to what a user should read; HIRE_VERBOSE=1 shows everything.

TensorFlow (the input pipeline only) prints C++ log lines to stderr while it loads on a machine
without a GPU ("Could not find cuda drivers", "failed call to cuInit", oneDNN notices); it is
loaded once with stderr silenced at the file-descriptor level. A damaged checkpoint makes Orbax
log errors and leaves TensorStore reads behind whose callbacks find the event loop closed (a
"RuntimeError: Event loop is closed" traceback each); `library_noise_dropped` holds them back
while `hire` says in one line what it skipped. The reads it abandons can fail after the block
has ended, when asyncio reports them ("Task exception was never retrieved") as they are
collected; a filter on the asyncio logger drops those reports, and only those. TFDS's notices
while it builds the shipped corpus go the same way. None of these are errors of `hire`."""

import contextlib
import gc
import io
import logging
import os
import sys


def verbose() -> bool:
  return bool(os.environ.get("HIRE_VERBOSE"))


@contextlib.contextmanager
def native_stderr_silenced():
  """fd 2 goes to /dev/null inside the block (C++ logging bypasses sys.stderr)."""
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def load_tensorflow() -> None:
  """Imports TensorFlow (if installed) and starts its runtime without its log lines."""
  if verbose():
    return
  with native_stderr_silenced():
    try:
      import tensorflow as tf
      tf.constant(0)  # the runtime starts here: the CUDA probe logs on first use, not on import
    except ImportError:
      pass


def _not_an_abandoned_restore(record: logging.LogRecord) -> bool:
  """False for asyncio's report of a checkpoint read that Orbax abandoned when a restore failed
  (a coroutine `async_deserialize` whose exception nobody retrieved): that restore has already
  been reported as one line. Every other asyncio record passes."""
  message = record.getMessage()
  return not ("exception was never retrieved" in message and "async_deserialize" in message)


def _abandoned_restores_dropped() -> None:
  """Installs `_not_an_abandoned_restore` on the asyncio logger, once per process."""
  asyncio_logger = logging.getLogger("asyncio")
  if _not_an_abandoned_restore not in asyncio_logger.filters:
    asyncio_logger.addFilter(_not_an_abandoned_restore)


@contextlib.contextmanager
def library_noise_dropped():
  """Inside the block absl log records below CRITICAL (Orbax, TFDS) and unraisable exceptions
  (the tracebacks of callbacks and coroutines that Orbax's restore abandons when it fails) are
  dropped; the abandoned coroutines are collected before the block ends, so their reports fall
  inside it; those collected later are dropped by the asyncio filter this installs. Nothing
  changes under HIRE_VERBOSE=1."""
  if verbose():
    yield
    return
  _abandoned_restores_dropped()
  absl_logger = logging.getLogger("absl")
  level, hook = absl_logger.level, sys.unraisablehook
  absl_logger.setLevel(logging.CRITICAL)
  sys.unraisablehook = lambda unraisable: None
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = hook
    absl_logger.setLevel(level)


@contextlib.contextmanager
def library_prints_dropped():
  """Inside the block what libraries print to sys.stdout (TFDS's "Downloading and preparing
  dataset ..." while it builds the shipped corpus) is dropped, unless HIRE_VERBOSE=1."""
  if verbose():
    yield
    return
  with contextlib.redirect_stdout(io.StringIO()):
    yield
