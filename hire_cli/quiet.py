"""Keeping the console to what a user should read. TensorFlow (the input pipeline only) prints
C++ log lines to stderr while it loads on a machine without a GPU ("Could not find cuda
drivers", "failed call to cuInit", oneDNN notices); they are not errors of `hire`. It is loaded
once with stderr silenced at the file-descriptor level; HIRE_VERBOSE=1 shows everything."""

import contextlib
import os


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
  if os.environ.get("HIRE_VERBOSE"):
    return
  with native_stderr_silenced():
    try:
      import tensorflow as tf
      tf.constant(0)  # the runtime starts here: the CUDA probe logs on first use, not on import
    except ImportError:
      pass
