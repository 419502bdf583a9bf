"""Checking that a folder can be written before the work whose results go there."""

import pathlib

import jax

from hire_cli import errors


def check(folder: pathlib.Path, what: str) -> None:
  """Creates `folder` if needed and proves it writable; UserError (exit 2) otherwise."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write_probe{jax.process_index()}"  # processes may share the folder
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise errors.UserError(f"{what} ({folder}) is not writable ({e.strerror or e}); fix its "
                           "permissions or use another MODEL_DIR") from None
