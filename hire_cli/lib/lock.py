"""One writer per run folder: `hire train` holds an OS file lock on MODEL_DIR/.lock for the whole
run. The OS drops it when the process ends, however it ends, so a killed run never leaves a stale
lock; the file names the holder (pid, host, start time) for the error a second trainer gets."""

import datetime
import fcntl
import json
import os
import pathlib
import socket

from hire_cli import errors


class RunLock:
  """`with RunLock(model_dir):` the body runs as the folder's only writer, or UserError."""

  def __init__(self, model_dir: str | pathlib.Path):
    self.path = pathlib.Path(model_dir) / ".lock"
    self._fd = None

  def __enter__(self):
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise errors.UserError(
          f"{self.path.parent} is being trained by another `hire train` ({holder}); wait for it "
          "to finish or stop it, or use another MODEL_DIR") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": datetime.datetime.now().isoformat(timespec="seconds")})
             .encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {info['pid']} on {info['host']} since {info['since']}"
  except (ValueError, KeyError, OSError):
    return "holder unknown"
