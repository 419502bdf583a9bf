"""Gin: registering the entry points, parsing files and bindings, the `--gin.NAME=value` shorthand.

Library code stays plain Python; only the dataclass configs and the keyword-only entry functions
are made configurable here (as in T5X)."""

import ast
import contextlib
import difflib
import os
import pathlib
import re
import tokenize

import gin

from hire_cli import errors, paths
from hire_cli.lib import data_config, gguf_import, optimizer, sharding
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig, ModelConfig
from hire_cli.runs import bench, evaluate, generate, import_model, train

CONFIGS_DIR = paths.REPO_ROOT / "configs"
DEFAULT_EXPERIMENT = "configs/experiments/tiny_dense.gin"

_registered = False


def register() -> None:
  global _registered
  if _registered:
    return
  gin.external_configurable(ModelConfig, "ModelConfig")
  gin.external_configurable(HiReSoftmaxConfig, "HiReSoftmaxConfig")
  gin.external_configurable(HiReFfnConfig, "HiReFfnConfig")
  gin.external_configurable(ApproxConfig, "ApproxConfig")
  gin.external_configurable(data_config.DataConfig, "DataConfig")
  gin.external_configurable(optimizer.OptimizerConfig, "OptimizerConfig")
  gin.external_configurable(sharding.MeshConfig, "MeshConfig")
  gin.external_configurable(train.train, "train")
  gin.external_configurable(evaluate.evaluate, "evaluate")
  gin.external_configurable(bench.bench_latency, "bench_latency")
  gin.external_configurable(generate.generate_text, "generate_text")
  gin.external_configurable(import_model.import_model, "import_model")
  _registered = True


def _resolve(path: str) -> str:
  p = pathlib.Path(path)
  for cand in (p, paths.REPO_ROOT / p, CONFIGS_DIR / p):
    if cand.is_file():
      return str(cand)
  known = [str(f.relative_to(paths.REPO_ROOT)) for f in CONFIGS_DIR.rglob("*.gin")]
  close = difflib.get_close_matches(str(path), known, n=2, cutoff=0.5)
  hint = f"; did you mean {' or '.join(close)}?" if close else "; see configs/experiments/"
  raise errors.UserError(f"gin file {path} not found{hint}")


# Every command reads the same experiment file, so all run files are included (train, eval,
# bench and generate settings side by side); an experiment is a model + a variant + what differs.
RUN_FILES = ("configs/runs/common.gin", "configs/runs/pretrain.gin", "configs/runs/eval.gin",
             "configs/runs/bench_latency.gin", "configs/runs/generate.gin",
             "configs/runs/import.gin")


def folder_config(bindings: list[str] | None) -> list[str]:
  """The model.gin of the folder MODEL_DIR (or else POST_HOC_FROM) names in `bindings`, where
  one exists: an imported run folder says what model it holds."""
  for macro in ("MODEL_DIR", "POST_HOC_FROM"):
    for b in bindings or []:
      name, _, value = b.partition("=")
      if name.strip() != macro:
        continue
      try:
        folder = ast.literal_eval(value.strip())
      except (ValueError, SyntaxError):
        continue
      if isinstance(folder, str) and (pathlib.Path(folder) / gguf_import.MODEL_GIN).is_file():
        return [str(pathlib.Path(folder) / gguf_import.MODEL_GIN)]
  return []


# Bindings that say what model a run holds, kept in the model.gin a post-hoc run writes.
MODEL_BINDINGS = ("ModelConfig.", "HiReSoftmaxConfig.", "HiReFfnConfig.", "ApproxConfig.",
                  "softmax/", "ffn/")


def write_folder_config(gin_files: list[str] | None, bindings: list[str] | None) -> None:
  """After `hire train` from a folder's model.gin (post-hoc HiRE on an imported model): the new
  MODEL_DIR gets a model.gin of its own (that model, the run's gin files and model bindings),
  so that eval, generate and bench read it with --gin.MODEL_DIR alone. Only where a checkpoint
  was written and no model.gin exists yet."""
  source = folder_config(bindings)
  if not source:
    return
  model_dir = pathlib.Path(gin.query_parameter("%MODEL_DIR"))
  target = model_dir / gguf_import.MODEL_GIN
  if target.exists() or not (model_dir / "checkpoints").is_dir() or \
      pathlib.Path(source[0]).resolve() == target.resolve():
    return
  lines = [f"# Written by `hire train`: the model of {source[0]} with this run's settings.",
           f"include {source[0]!r}"]
  lines += [f"include {_resolve(f)!r}" for f in gin_files or []]
  lines += [b for b in bindings or [] if b.strip().startswith(MODEL_BINDINGS)]
  lines += [f"MODEL_DIR = {str(model_dir)!r}"]
  target.write_text("\n".join(lines) + "\n")


def parse(gin_files: list[str] | None, bindings: list[str] | None) -> None:
  """Parses the run files, the gin files (later wins), then bindings; no file means the
  embedded default. A macro that nothing reads (a misspelling) is an error."""
  register()
  gin.clear_config()
  gin.add_config_file_search_path(str(paths.REPO_ROOT))
  folder = folder_config(bindings)
  files = [_resolve(f) for f in (*RUN_FILES, *folder,
                                 *(gin_files or ([] if folder else [DEFAULT_EXPERIMENT])))]
  try:
    with _quiet_resource_lookup():
      gin.parse_config_files_and_bindings(files, bindings or [], finalize_config=False)
  except (ValueError, KeyError, SyntaxError, IOError, tokenize.TokenError, TypeError) as e:
    raise errors.UserError(f"bad gin config: {_one_line(e)}") from None
  _check_macros_read()


def _resource_file_exists(path: str) -> bool:
  """gin's check for an include that names a file inside a Python package, without its
  "Path not found" log line on every miss, and False where gin's own check raises (a folder of
  the same name on sys.path, e.g. the checkout's configs/, is a namespace package)."""
  from gin import resource_reader
  try:
    return os.path.isfile(resource_reader._parse_config_path(path))
  except Exception:  # noqa: BLE001 - whatever the lookup hits, the file is not there
    return False


@contextlib.contextmanager
def _quiet_resource_lookup():
  """gin tries each include relative to the working directory, then as a package resource, then
  under the search path (where ours are): the middle try only logs and may fail (see above)."""
  readers = gin.config._FILE_READERS  # gin has no public way to change a registered check
  saved = list(readers)
  readers[:] = [(r, _resource_file_exists if r.__module__ == "gin.resource_reader" else e)
                for r, e in saved]
  try:
    yield
  finally:
    readers[:] = saved


def _macro_names() -> tuple[set, set]:
  """(macros set, macros some binding or macro reads), from gin's parsed config."""
  cfg = gin.config._CONFIG  # gin has no public listing of bound macros
  macro_fn = gin.config.macro
  bound = {scope for scope, selector in cfg
           if gin.config._REGISTRY[selector].wrapped == macro_fn}
  read = {ref.scoped_selector.split("/")[0] for ref in gin.config.iterate_references(
      cfg, to=gin.get_configurable(macro_fn))}
  return bound, read


def _check_macros_read() -> None:
  bound, read = _macro_names()
  unread = sorted(bound - read)
  if unread:
    name = unread[0]
    close = difflib.get_close_matches(name, sorted(read), n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "see `hire --help` and configs/runs/"
    raise errors.UserError(f"gin macro {name} is set but no setting reads it; {hint}")


REQUIRED_MACROS = ("MODEL_DIR", "MODEL")


def _check_required() -> None:
  for macro in REQUIRED_MACROS:
    try:
      value = gin.query_parameter(f"%{macro}")
    except ValueError:
      raise errors.UserError(f"{macro} is not set; include a configs/experiments file or pass "
                             f"--gin.{macro}=...") from None
    if "gin.REQUIRED" in repr(value):
      raise errors.UserError(f"{macro} is required but unset; pass --gin.{macro}=... or use a "
                             "configs/experiments file that sets it")


def call(name: str):
  """Calls the configurable entry function `name` with what gin bound to it."""
  _check_required()
  fn = gin.get_configurable(name)
  try:
    return fn()
  except (ValueError, TypeError) as e:
    msg = str(e)
    if "Required bindings" in msg or "REQUIRED" in msg or "gin" in msg.lower():
      raise errors.UserError(f"bad gin config: {_one_line(e)}") from None
    raise


def config_str() -> str:
  return gin.config_str()


def _one_line(e: Exception) -> str:
  text = " ".join(str(e).split())
  m = re.search(r"No configurable matching '([^']+)'", text)
  if m:
    return (f"unknown gin name {m.group(1)!r}; check the spelling (configurables: ModelConfig, "
            "HiReSoftmaxConfig, HiReFfnConfig, ApproxConfig, DataConfig, OptimizerConfig, "
            "MeshConfig, train, evaluate, bench_latency, generate_text, import_model)")
  return text[:400]
