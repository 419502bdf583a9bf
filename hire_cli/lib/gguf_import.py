"""A GGUF file as hire's model: its config, its parameters in hire's tree, and the run folder
`hire import` writes (Orbax checkpoint, model.gin, vocabulary, provenance).

Every tensor is dequantized to float32 with `gguf` (llama.cpp's own reader), checked for its
name and shape against the model's abstract parameter tree before anything is written, then
cast to the asked dtype. The folder is built next to its destination and renamed into place, so
a refused or failed import leaves nothing behind.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import time

import numpy as np

from hire_cli import errors
from hire_cli.lib import checkpoint, gguf_families, pretrained
from hire_cli.nn import model as model_lib
from hire_cli.nn.config import ModelConfig

MODEL_GIN = "model.gin"  # the file in a run folder that says what model it holds
PROVENANCE = "provenance.json"


def _reader(path: str):
  import gguf  # noqa: PLC0415 - only import needs it
  p = pathlib.Path(path)
  if not p.is_file():
    raise errors.UserError(f"GGUF file {path} not found; pass --gguf=FILE or --pretrained=NAME")
  try:
    return gguf.GGUFReader(str(p))
  except Exception as e:  # noqa: BLE001 - gguf raises ValueError, struct.error, IndexError ...
    raise errors.UserError(f"{path} is not a readable GGUF file ({type(e).__name__}: "
                           f"{str(e)[:120]}); it is damaged or of another format") from None


def metadata(reader) -> dict:
  """Every scalar, string and array field of the file, by key (tokenizer arrays included)."""
  out = {}
  for key, field in reader.fields.items():
    try:
      out[key] = field.contents()
    except Exception:  # noqa: BLE001 - a field gguf cannot decode is not one we read
      continue
  return out


def read_model(path: str, dtype: str = "float32"):
  """(arch, ModelConfig, {"blocks/0/attn/w_q": float32 array, ...}, metadata) of a GGUF file;
  a missing, extra or misshapen tensor, or an unsupported architecture, is a UserError."""
  reader = _reader(path)
  meta = metadata(reader)
  arch = meta.get("general.architecture")
  if arch not in gguf_families.CONFIGS:
    raise errors.UserError(f"unsupported architecture {arch!r} in {path}; hire imports "
                           f"{sorted(gguf_families.CONFIGS)}")
  tensors = {t.name: t for t in reader.tensors}
  cfg = ModelConfig(**gguf_families.CONFIGS[arch](meta, tensors), dtype=dtype, param_dtype=dtype)
  want = gguf_families.expected_tensors(arch, cfg)
  if set(tensors) != want:
    missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
    what = f"lacks tensor {missing[0]}" if missing else f"has tensor {extra[0]} that hire's " \
        f"{arch} model has no place for"
    raise errors.UserError(f"{path} {what} ({len(missing)} missing, {len(extra)} unexpected); "
                           "the file is damaged or of an unsupported variant")

  def get(name):
    import gguf  # noqa: PLC0415
    t = tensors[name]
    try:
      w = gguf.quants.dequantize(t.data, t.tensor_type)
    except Exception as e:  # noqa: BLE001
      raise errors.UserError(f"tensor {name} of {path} cannot be read ({type(e).__name__}); "
                             "the file is damaged") from None
    shape, want = tuple(int(n) for n in reversed(t.shape)), gguf_families.gguf_shape(name, cfg)
    if shape != want:
      raise errors.UserError(f"tensor {name} of {path} has shape {shape}, its metadata implies "
                             f"{want}; the file is damaged or of an unsupported variant")
    return np.asarray(w, np.float32).reshape(shape)

  flat = gguf_families.map_tensors(arch, cfg, get)
  check_shapes(flat, cfg, path)
  return arch, cfg, flat, meta


def check_shapes(flat: dict, cfg: ModelConfig, where: str) -> None:
  """Every parameter of `cfg`'s model is in `flat` with its shape, and nothing else is."""
  abstract = model_lib.abstract_params(cfg)
  if set(flat) != set(abstract):
    diff = sorted(set(flat) ^ set(abstract))
    raise errors.UserError(f"{where} does not fill hire's model: {diff[0]} "
                           f"({len(diff)} names differ)")
  for name, x in abstract.items():
    if tuple(flat[name].shape) != tuple(x.shape):
      raise errors.UserError(f"tensor for {name} in {where} has shape {flat[name].shape}, the "
                             f"model's config wants {x.shape}; the file is damaged")
    if not np.isfinite(flat[name]).all():
      raise errors.UserError(f"tensor for {name} in {where} holds NaN or Inf; the file is damaged")


def nest(flat: dict, cfg: ModelConfig) -> dict:
  """The flat {"blocks/0/ffn/w_in": array} as the pure-dict tree `state.bind` merges (list
  indices as ints), cast to the config's param_dtype."""
  import jax.numpy as jnp  # noqa: PLC0415
  tree: dict = {}
  for name, w in flat.items():
    node = tree
    *path, leaf = [int(p) if p.isdigit() else p for p in name.split("/")]
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(w, jnp.dtype(cfg.param_dtype))
  return tree


def model_gin(cfg: ModelConfig, model_dir: pathlib.Path, vocab: str, source: str) -> str:
  """The run folder's gin: the model, where it lives and its vocabulary."""
  lines = [f"# Written by `hire import` from {source}. hire reads this file whenever MODEL_DIR",
           "# points here and no --gin_file is given; later --gin_file and --gin.X win.",
           "MODEL = @ModelConfig()"]
  for f in dataclasses.fields(cfg):
    if f.name not in ("hire_softmax", "hire_ffn", "remat"):  # remat: pretrain.gin's REMAT
      lines.append(f"ModelConfig.{f.name} = {getattr(cfg, f.name)!r}")
  lines += [f"MODEL_DIR = {str(model_dir)!r}", f"VOCAB_PATH = {vocab!r}"]
  return "\n".join(lines) + "\n"


def refuse_existing(model_dir) -> pathlib.Path:
  """The absolute path of `model_dir`, refused unless it is new or an empty folder."""
  dest = pathlib.Path(model_dir).absolute()
  if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
    raise errors.UserError(f"MODEL_DIR {dest} already exists and is not empty; import into a "
                           "new folder (nothing was written)")
  return dest


def write_run_folder(gguf_path: str, model_dir: str, *, dtype: str = "float32",
                     provenance: dict | None = None, say=print) -> dict:
  """Imports `gguf_path` into the new folder `model_dir` (refused if it holds anything)."""
  from hire_cli.lib import gguf_vocab  # noqa: PLC0415 - tokenizers are only needed here

  dest = refuse_existing(model_dir)
  t0 = time.time()
  say(f"Reading {gguf_path} ...")
  arch, cfg, flat, meta = read_model(gguf_path, dtype)
  n = sum(w.size for w in flat.values())
  say(f"{arch}: {n / 1e6:.1f}M parameters, {cfg.n_layers} layers, d {cfg.d_model}, "
      f"V {cfg.vocab_size} ({time.time() - t0:.0f} s); writing {dest}")
  tmp = dest.parent / f".{dest.name}.importing-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    tmp.mkdir(parents=True)
    vocab = gguf_vocab.write_vocabulary(_reader(gguf_path), tmp / "vocab")
    vocab_final = str(dest / "vocab" / pathlib.Path(vocab).name)
    params = nest(flat, cfg)
    del flat
    mgr = checkpoint.manager(tmp)
    meta_ckpt = {"step": 0, "seed": 0, "model": dataclasses.asdict(cfg), "data": None,
                 "param_shapes": checkpoint.param_shapes(params), "imported": True}
    checkpoint.save(mgr, 0, {"params": params}, meta_ckpt)
    mgr.close()
    record = {"gguf": str(pathlib.Path(gguf_path).absolute()),
              "sha256": pretrained.sha256_of(gguf_path),
              "architecture": arch, "name": meta.get("general.name"),
              "licence": meta.get("general.license"), "parameters": int(n), "dtype": dtype,
              "vocabulary": vocab_final, "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
              **(provenance or {})}
    (tmp / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
    (tmp / MODEL_GIN).write_text(model_gin(cfg, dest, vocab_final, record["gguf"]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
      dest.rmdir()  # empty, checked above
    tmp.rename(dest)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  say(f"Imported into {dest} in {time.time() - t0:.0f} s")
  return {"model_dir": str(dest), **record}
