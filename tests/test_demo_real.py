"""`make demo` on a real model's path: import a GGUF, add HiRE-Softmax post-hoc with no training,
compare, evaluate and time it; here on a tiny Gemma-3-shaped GGUF (tests never download)."""

import pathlib
import subprocess
import sys

import pytest

from hire_cli.runs import demo_real
from tests import gguf_fixtures

REPO = pathlib.Path(__file__).resolve().parents[1]


def _demo(*args):
  return subprocess.run([sys.executable, "-m", "hire_cli.runs.demo_real", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_demo_runs_every_step_on_an_imported_model(tmp_path):
  gguf = gguf_fixtures.write_tiny_gemma3(tmp_path / "tiny_gemma3.gguf")
  root = tmp_path / "demo"
  proc = _demo(f"--from_gguf={gguf}", f"--demo_root={root}", "--rank=8", "--k_prime=32",
               "--tokens=4", "--passages=2", "--val_batches=1", "--calibration_rows=4")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  out = proc.stdout
  for part in ("[demo 1/5] $ hire import --gguf=", "--gin.TRAIN_STEPS=0",
               "HiRE-Softmax (lr rank 8, fitted on 4 rows, k' 32, no training)", "perplexity ",
               "x (roofline", "free-running"):
    assert part in out, (part, out[-3000:])
  noise = [n for n in ("absl::InitializeLog", "cuInit", "Traceback") if n in out + proc.stderr]
  assert not noise, (noise, proc.stderr[-3000:])  # TensorFlow's start-up lines stay silent
  hire = root / "gemma3_hire_lr"
  assert (hire / "model.gin").is_file() and (hire / "bench" / "latency.json").is_file()


def test_a_failed_import_says_how_to_run_offline(tmp_path):
  proc = _demo("--model=no-such-model", f"--demo_root={tmp_path / 'demo'}")
  assert proc.returncode != 0
  assert "make demo-tiny" in proc.stderr.splitlines()[-1]
  assert not (tmp_path / "demo" / "gemma3").exists()


def test_summary_puts_dense_and_hire_side_by_side():
  metrics = {"top1_agreement": 0.996, "recall/softmax@1": 0.998, "recall/softmax@8": 0.97,
             "perplexity": 36.97, "served_loss_approx_tail": 3.6115}
  compare = {"prompt": "The capital of France is", "dense_text": " Paris.", "hire_text": " Paris.",
             "agreement": 1.0, "hire_config": {"softmax_approx": "q", "softmax_bits": 8,
                                                 "softmax_k_prime": 512},
             "passages": {"agreement": 0.99, "prompts": 17, "tokens": 32}}
  bench = {"cases": [{"variant": "dense", "batch": 1, "ms_per_token": 47.2,
                      "bandwidth_fraction": 0.9},
                     {"variant": "hire_softmax", "batch": 1, "ms_per_token": 28.0, "speedup": 1.69,
                      "roofline_speedup": 2.4}]}
  text = demo_real.summary(metrics, compare, bench, pathlib.Path("runs/x"), 300.0)
  for part in ("(Q8 of W, k' 512, no training)", "5m00s", "' Paris.'", "100.0% of this prompt",
               "99.0% over 17 prompts x 32 tokens", "99.60% teacher-forced", "recall@1 0.9980",
               "36.97 exact, 37.02 as HiRE serves it", "dense 47.2 (90% of bandwidth), HiRE 28.0: "
               "1.69x (roofline 2.40x)"):
    assert part in text, (part, text)
