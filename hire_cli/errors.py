"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
  """Bad input from the user (config, flags, data, checkpoint). Message says what and how to fix."""


class Interrupted(Exception):
  """The user stopped the run (Ctrl-C) after it saved what it had; the CLI exits with 130."""
