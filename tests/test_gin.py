import gin
import pytest

from hire_cli import errors
from hire_cli.cli import cli_args, gin_utils


def test_shorthand_rewrites_and_quotes_strings():
  argv = cli_args.rewrite_argv(["hire", "train", "--gin.MODEL_DIR=/tmp/x", "--gin.TRAIN_STEPS=5",
                                "--gin.INIT='random'", "--gin_file=a.gin"])
  assert argv == ["hire", "train", "--gin_bindings=MODEL_DIR = '/tmp/x'",
                  "--gin_bindings=TRAIN_STEPS = 5", "--gin_bindings=INIT = 'random'",
                  "--gin_file=a.gin"]


def test_default_experiment_and_overrides_later_win():
  gin_utils.parse(None, ["TRAIN_STEPS = 7", "BATCH_SIZE = 4", "TRAIN_STEPS = 9"])
  assert gin.query_parameter("%TRAIN_STEPS") == 9
  assert gin.query_parameter("%BATCH_SIZE") == 4
  assert gin.query_parameter("%MODEL_DIR") == "./runs/default"
  assert gin.query_parameter("ModelConfig.d_model") == 64


def test_later_gin_file_wins():
  gin_utils.parse(["configs/experiments/tiny_dense.gin", "configs/models/small.gin"], [])
  assert gin.query_parameter("ModelConfig.d_model") == 256


def test_missing_gin_file_suggests_the_right_one():
  with pytest.raises(errors.UserError, match="did you mean configs/experiments/tiny_dense.gin"):
    gin_utils.parse(["configs/experiments/tiny_dnse.gin"], [])


def test_unknown_binding_is_a_user_error():
  with pytest.raises(errors.UserError, match="unknown gin name"):
    gin_utils.parse(None, ["ModelConfg.d_model = 3"])


def test_required_macro_unset_is_a_user_error():
  gin_utils.parse(["configs/models/tiny.gin", "configs/runs/pretrain.gin"], [])
  with pytest.raises(errors.UserError, match="MODEL_DIR|model_dir|REQUIRED"):
    gin_utils.call("train")


def test_misspelled_macro_is_refused_with_a_suggestion():
  with pytest.raises(errors.UserError, match="TRAIN_STEPZ .*did you mean TRAIN_STEPS"):
    gin_utils.parse(None, ["TRAIN_STEPZ = 2"])


def test_macro_that_nothing_reads_in_a_file_is_refused(tmp_path):
  exp = tmp_path / "exp.gin"
  exp.write_text("include 'configs/models/tiny.gin'\nMODEL_DIR = '/tmp/x'\nWARMUP = 5\n")
  with pytest.raises(errors.UserError, match="WARMUP is set but no setting reads it"):
    gin_utils.parse([str(exp)], [])


def test_run_files_are_included_by_the_cli():
  """An experiment names a model and what differs; every run's settings come with it."""
  gin_utils.parse(["configs/experiments/tiny_hire.gin"], [])
  assert gin.query_parameter("%TRAIN_STEPS") == 300  # the experiment's value wins
  assert gin.query_parameter("%DECODE_STEPS") == 32  # configs/runs/bench_latency.gin


def test_configs_parse_from_another_folder_without_log_lines(tmp_path):
  """Outside the checkout gin tries each include as a Python package resource first: that logged
  "Path not found" per include and, with the checkout on sys.path (its configs/ is then a
  namespace package), failed outright."""
  import pathlib
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  code = ("from hire_cli.cli import gin_utils; import gin; gin_utils.parse("
          "['configs/experiments/tiny_hire.gin'], []); "
          "print(gin.query_parameter('ModelConfig.d_model'))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                        text=True, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "64"
  assert "Path not found" not in proc.stderr, proc.stderr
