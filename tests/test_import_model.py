"""`hire import` from the command line: a tiny GGUF becomes a run folder that generate reads
with --gin.MODEL_DIR alone; bad input is one line, exit 2, and nothing written."""

import json
import shutil

import gguf
import pytest

from hire_cli.cli import runner
from tests import gguf_fixtures


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
  return gguf_fixtures.write_tiny_gemma3(tmp_path_factory.mktemp("g") / "tiny_gemma3.gguf")


def _import(path, model_dir, **extra):
  return runner.execute("import", None, [f"MODEL_DIR = {str(model_dir)!r}"],
                        source={"gguf": str(path), "pretrained_name": "", **extra})


def test_import_then_generate_with_model_dir_alone(tiny_gguf, tmp_path, capsys):
  run = tmp_path / "run"
  assert _import(tiny_gguf, run) == 0
  assert {p.name for p in run.iterdir()} == {"checkpoints", "model.gin", "vocab",
                                               "provenance.json"}
  record = json.loads((run / "provenance.json").read_text())
  assert record["architecture"] == "gemma3" and len(record["sha256"]) == 64
  assert "ModelConfig.sliding_window = 8" in (run / "model.gin").read_text()
  capsys.readouterr()
  code = runner.execute("generate", None, [f"MODEL_DIR = {str(run)!r}", "GENERATE_TOKENS = 4"],
                        prompt="hello")
  assert code == 0, capsys.readouterr().err
  # The folder is refused as a target of another import, and left as it was.
  before = sorted(str(p) for p in run.rglob("*"))
  assert _import(tiny_gguf, run) == 2
  assert sorted(str(p) for p in run.rglob("*")) == before


def _rewrite(src, dst, arch=None, drop=None, shrink=None):
  """A copy of the GGUF at `src` with another architecture name, without tensor `drop`, or
  with tensor `shrink` (F32) one row short."""
  r = gguf.GGUFReader(str(src))
  new_arch = arch or r.fields["general.architecture"].contents()
  w = gguf.GGUFWriter(str(dst), new_arch)
  for key, field in r.fields.items():
    if key.startswith("GGUF.") or key == "general.architecture":
      continue
    value, vtype = field.contents(), field.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
      w.add_key_value(key, value, vtype, sub_type=field.types[-1])
    else:
      w.add_key_value(key, value, vtype)
  for t in r.tensors:
    data = t.data[:-1] if t.name == shrink else t.data
    if t.name != drop:
      w.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return dst


@pytest.mark.parametrize("damage,message", [
    ("truncated", "not a readable GGUF"), ("arch", "unsupported architecture 'mamba'"),
    ("missing", "lacks tensor blk.3.post_ffw_norm.weight"), ("absent", "not found"),
    ("shape", "tensor blk.2.attn_q.weight of")])
def test_bad_input_is_one_line_and_writes_nothing(tiny_gguf, tmp_path, capsys, damage, message):
  bad = tmp_path / "bad.gguf"
  if damage == "truncated":
    bad.write_bytes(tiny_gguf.read_bytes()[:5000])
  elif damage == "arch":
    _rewrite(tiny_gguf, bad, arch="mamba")
  elif damage == "missing":
    _rewrite(tiny_gguf, bad, drop="blk.3.post_ffw_norm.weight")
  elif damage == "shape":
    _rewrite(tiny_gguf, bad, shrink="blk.2.attn_q.weight")
  capsys.readouterr()
  run = tmp_path / "run"
  assert _import(bad, run) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1, err
  assert not run.exists() and [p.name for p in tmp_path.iterdir()] == (
      [] if damage == "absent" else ["bad.gguf"])
  shutil.rmtree(tmp_path)


def test_bfloat16_import(tiny_gguf, tmp_path):
  from hire_cli.lib import checkpoint
  assert runner.execute("import", None, [f"MODEL_DIR = {str(tmp_path / 'b')!r}",
                                         "IMPORT_DTYPE = 'bfloat16'"],
                        source={"gguf": str(tiny_gguf), "pretrained_name": ""}) == 0
  meta = checkpoint.latest_meta(tmp_path / "b")
  assert meta["model"]["param_dtype"] == "bfloat16" and meta["imported"]


def test_post_hoc_run_folder_says_what_it_holds(tiny_gguf, tmp_path):
  """A post-hoc HiRE run from an imported folder writes its own model.gin: the imported model,
  the run's variant, its model bindings; eval then needs --gin.MODEL_DIR alone."""
  import gin

  from hire_cli.cli import gin_utils
  src, new = tmp_path / "src", tmp_path / "new"
  assert _import(tiny_gguf, src) == 0
  bindings = [f"MODEL_DIR = {str(new)!r}", f"POST_HOC_FROM = {str(src)!r}",
              "HiReSoftmaxConfig.k_prime = 64"]
  gin_utils.parse(["configs/variants/hire_softmax.gin"], bindings)
  (new / "checkpoints").mkdir(parents=True)  # as after a train run's first save
  gin_utils.write_folder_config(["configs/variants/hire_softmax.gin"], bindings)
  gin_utils.parse(None, [f"MODEL_DIR = {str(new)!r}"])
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  assert model.sliding_window == 8 and model.hire_softmax.k_prime == 64
  assert gin.query_parameter("%MODEL_DIR") == str(new)


@pytest.mark.slow
def test_fine_tune_an_imported_folder_in_place(tiny_gguf, tmp_path, capsys):
  """`hire train` on the import folder starts from its weights at step 0 (a fresh optimizer),
  instead of calling the parameters-only checkpoint damaged."""
  from hire_cli.lib import checkpoint
  run = tmp_path / "run"
  assert _import(tiny_gguf, run) == 0
  text = tmp_path / "notes.txt"
  text.write_text("the cat sat on the mat. " * 200)
  capsys.readouterr()
  code = runner.execute("train", None, [
      f"MODEL_DIR = {str(run)!r}", "TASK = 'text_files'", f"TRAIN_FILES = [{str(text)!r}]",
      f"EVAL_FILES = [{str(text)!r}]", "TRAIN_STEPS = 1", "BATCH_SIZE = 2", "SEQ_LEN = 16",
      "EVAL_EVERY = 0", "CHECKPOINT_EVERY = 1"])
  out = capsys.readouterr()
  assert code == 0, out.err
  assert "Fine-tuning from step 0" in out.out
  assert checkpoint.latest_meta(run)["step"] == 1


@pytest.mark.slow
def test_bench_hire_softmax_on_an_imported_dense_model(tiny_gguf, tmp_path):
  """No trained approximator needed to time HiRE-Softmax on an imported model: Q is W
  quantized, LR the truncated SVD of W (post-hoc start); the tied head is the embedding."""
  import gin

  from hire_cli.cli import gin_utils
  from hire_cli.runs import bench
  run = tmp_path / "run"
  assert _import(tiny_gguf, run) == 0
  gin_utils.parse(None, [f"MODEL_DIR = {str(run)!r}"])
  model = gin.query_parameter("%MODEL").scoped_configurable_fn()
  variants = ["dense", "hire_softmax@q8", "hire_softmax@lr"]
  result = bench.bench_latency(model_dir=str(run), model=model,
                               mesh_cfg=bench.sharding.MeshConfig(), variants=variants,
                               context_lens=[8], decode_steps=2, repeats=1)
  assert {c["variant"] for c in result["cases"]} == set(variants)
  assert all(c["ms_per_token"] > 0 for c in result["cases"])
