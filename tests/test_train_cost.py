"""What a run costs: model FLOPs against the compiled step's, the device peaks, tokens/s and MFU
in the logs, and the refusal of a run whose step cannot fit the device's memory."""

import math
import types

import jax
import pytest

from hire_cli.cli import runner
from hire_cli.lib import optimizer, sharding, state, train_cost, train_step
from hire_cli.nn.config import ModelConfig
from hire_cli.report import reporting

TINY = ["ModelConfig.d_model = 16", "ModelConfig.n_layers = 1", "ModelConfig.d_ff = 32",
        "BATCH_SIZE = 2", "EVAL_EVERY = 0", "TRAIN_STEPS = 2"]


def test_model_flops_match_the_compiled_step():
  """6 x params x tokens + the attention term against XLA's count of the compiled train step
  (which adds the elementwise work, the norms and the optimizer: a few % more)."""
  cfg = ModelConfig(vocab_size=512, d_model=128, n_layers=2, n_heads=4, d_head=32, d_ff=512,
                    max_len=64)
  mesh = sharding.make_mesh(sharding.MeshConfig(1, 1), jax.devices()[:1])
  setup = state.create(cfg, optimizer.OptimizerConfig(), 10, 0, mesh, abstract_only=True)
  compiled, _ = train_cost.compile_step(train_step.make(setup), setup.state, 4, 64, mesh)
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  ratio = analysis["flops"] / (4 * 64 * cfg.train_flops_per_token(64))
  assert 1.0 <= ratio < 1.05, ratio  # without the attention term it would be 1.10


def test_device_peaks():
  assert train_cost.peak_flops(jax.devices()[0], 0.0) is None  # CPU: MFU n/a
  assert train_cost.peak_flops(jax.devices()[0], 2.5) == 2.5e12
  for kind, tflops in [("TPU v5 lite", 197), ("TPU v5p", 459), ("TPU v4", 275),
                       ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA A100-SXM4-40GB", 312),
                       ("NVIDIA L4", 121), ("NVIDIA H200", 989)]:
    assert train_cost.peak_flops(types.SimpleNamespace(device_kind=kind), 0.0) == tflops * 1e12
  rate = train_cost.throughput(8000, 2.0, 4, 1e6, 1e12)
  assert rate == {"tokens_per_s_per_device": 1000.0, "mfu": 1e-3}


@pytest.mark.slow
def test_train_logs_tokens_per_second_and_mfu(tmp_path, small_run, capsys):
  small_run.train(tmp_path / "na", 3)
  small_run.train(tmp_path / "peak", 3, peak_tflops=0.5)
  out = capsys.readouterr().out
  assert "Per device: params" in out and "tok/s/device" in out and "MFU n/a" in out, out
  flops = small_run.model.train_flops_per_token(small_run.data.seq_len)
  for run, has_peak in (("na", False), ("peak", True)):
    rows = [r for r in reporting.read_jsonl(tmp_path / run / "history.jsonl")
            if "tokens_per_s_per_device" in r]
    assert [r["step"] for r in rows] == [2], rows  # step 1 starts the clock; 3 is not logged
    for r in rows:
      assert r["tokens_per_s_per_device"] > 0
      if has_peak:
        assert math.isclose(r["mfu"], r["tokens_per_s_per_device"] * flops / 0.5e12), r
      else:
        assert r["mfu"] == "n/a", r


def test_a_step_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, capsys):
  run = tmp_path / "run"
  assert runner.execute("train", None, [*TINY, f"MODEL_DIR = '{run}'",
                                        "DEVICE_MEMORY_GB = 0.001"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "GB per device" in err[0] and "MESH_FSDP" in err[0], err
  assert not run.exists()
