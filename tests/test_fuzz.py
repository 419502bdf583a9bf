"""Every documented `hire train` macro, drawn from hostile values (wrong types, zero, negative,
huge, empty, unicode): the validation entry point (`hire train --dry_run`) accepts the value or
refuses it with exit 2 and one line, and writes nothing either way."""

import pathlib

import hypothesis
import pytest
from hypothesis import strategies as st

from hire_cli.cli import runner

pytestmark = pytest.mark.slow  # 80 dry runs, each compiling a train step

# The macros configs/runs/common.gin and pretrain.gin document, and the kind of value each takes.
MACROS = ["TRAIN_STEPS", "BATCH_SIZE", "SEQ_LEN", "LEARNING_RATE", "WARMUP_STEPS",
          "CHECKPOINT_EVERY", "EVAL_EVERY", "SEED", "MESH_DATA", "MESH_MODEL", "MODEL_DIR",
          "TASK", "VOCAB_PATH", "POST_HOC_FROM", "START_OVER", "EVAL_TASK",
          "MIXTURE_OR_TASK_MODULE", "TRAIN_FILES", "EVAL_FILES", "TEXT_KEY", "MESH_FSDP", "REMAT",
          "GRAD_ACCUM_STEPS", "MOMENTS_DTYPE", "DEVICE_MEMORY_GB", "PEAK_TFLOPS"]
HOSTILE = st.one_of(
    st.integers(min_value=-10**15, max_value=10**15),
    st.sampled_from([0, -1, 1, 2**63, 1e12, -0.5, 2.5, float("inf"), float("nan"), True, None]),
    st.text(max_size=12), st.sampled_from(["", "abc", "ünïcødé ✓", "../..", "((("]),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3))
TINY = ["ModelConfig.d_model = 16", "ModelConfig.n_layers = 1", "ModelConfig.d_ff = 32",
        "ModelConfig.n_heads = 2", "ModelConfig.d_head = 8", "TRAIN_STEPS = 2"]


def _int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


# What each numeric or boolean macro must accept (all else it must refuse) on the tiny model.
VALID = {"TRAIN_STEPS": lambda v: _int(v) and v > 0,
         "BATCH_SIZE": lambda v: _int(v) and v > 0,
         "SEQ_LEN": lambda v: _int(v) and 0 < v <= 128,
         "CHECKPOINT_EVERY": lambda v: _int(v) and v > 0,
         "WARMUP_STEPS": lambda v: _int(v) and v >= 0,
         "EVAL_EVERY": lambda v: _int(v) and v >= 0,
         "SEED": lambda v: _int(v) and 0 <= v < 2**31,
         "LEARNING_RATE": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                                     and v == v and 0 < v < float("inf")),
         "START_OVER": lambda v: isinstance(v, bool),
         "MESH_FSDP": lambda v: v in (1, -1) and _int(v),  # one device
         "GRAD_ACCUM_STEPS": lambda v: _int(v) and v > 0 and 16 % v == 0,  # BATCH_SIZE 16
         "REMAT": lambda v: v in ("none", "full", "dots"),
         "MOMENTS_DTYPE": lambda v: v in ("float32", "bfloat16"),
         "PEAK_TFLOPS": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and 0 <= v < float("inf"))}


def _literal(value) -> str:
  return "float('nan')" if value != value else repr(value)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("fuzz")


@hypothesis.settings(max_examples=80, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(macro=st.sampled_from(MACROS), value=HOSTILE)
def test_every_macro_value_is_accepted_or_refused_in_one_line(macro, value, folder, capsys):
  run = folder / "run"
  bindings = [*TINY, f"MODEL_DIR = '{run}'", f"{macro} = {_literal(value)}"]
  capsys.readouterr()
  code = runner.execute("train", None, bindings, dry_run=True)
  err = capsys.readouterr().err.strip().splitlines()
  assert code in (0, 2), (macro, value, code, err)
  if macro in VALID:
    assert code == (0 if VALID[macro](value) else 2), (macro, value, code, err)
  if code == 2:
    assert len(err) == 1 and err[0].startswith("hire train: error:"), (macro, value, err)
  assert not run.exists(), f"{macro}={value!r}: the dry run wrote {run}"
  written = [p for p in folder.rglob("*") if p.is_file()]
  assert not written, f"{macro}={value!r} wrote {written}"
