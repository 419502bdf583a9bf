"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
  """Bad input from the user (config, flags, data, checkpoint). Message says what and how to fix."""
