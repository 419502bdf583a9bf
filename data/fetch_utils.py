"""Helpers shared by the data build scripts (run them as `python data/<script>.py`)."""

import hashlib
import subprocess
from pathlib import Path


def run(cmd, cwd=None):
  """Runs a command, echoing it first; raises if it fails."""
  print("+", " ".join(str(c) for c in cmd), flush=True)
  subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()
