"""Command-line argument rewriting, light enough to run before the heavy imports."""

import ast
import re


def _quote_if_needed(value: str) -> str:
  """`--gin.MODEL_DIR=/tmp/x` needs no quotes: a value that is not a Python literal, a gin
  reference (@fn / %MACRO) or a bare name is taken as a string."""
  v = value.strip()
  if v.startswith(("@", "%", "(", "[", "{", "'", '"')):
    return v
  if v in ("True", "False", "None"):
    return v
  try:
    ast.literal_eval(v)
    return v
  except (ValueError, SyntaxError):
    return repr(v)


def rewrite_argv(argv: list[str]) -> list[str]:
  """Turns `--gin.NAME=value` into `--gin_bindings=NAME = value` (T5X's shorthand)."""
  out = []
  for arg in argv:
    m = re.match(r"^--gin\.([^=]+)=(.*)$", arg, re.S)
    if m:
      out.append(f"--gin_bindings={m.group(1)} = {_quote_if_needed(m.group(2))}")
    else:
      out.append(arg)
  return out
