"""The `hire` command as a user runs it (subprocesses)."""

import json
import os
import re
import subprocess
import sys

import pytest

TINY = ["--gin.ModelConfig.d_model=16", "--gin.ModelConfig.n_layers=1", "--gin.ModelConfig.d_ff=32",
        "--gin.BATCH_SIZE=4", "--gin.EVAL_EVERY=0"]


def hire(*args, check=True):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.run([sys.executable, "-m", "hire_cli.cli.main", *args], capture_output=True,
                        text=True, env=env, timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f"hire {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  return proc


def hire_in_process(command, *args):
  """What `hire COMMAND ARGS` runs (cli/main.py: runner.execute), in this process: for runs a
  test only sets up, so that each costs no interpreter and TensorFlow start."""
  from hire_cli.cli import cli_args, runner
  argv = cli_args.rewrite_argv(list(args))
  files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")] or None
  bindings = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_bindings=")]
  assert len(files or []) + len(bindings) == len(args), args
  assert runner.execute(command, files, bindings) == 0, f"hire {command} {args} failed"


def test_help_lists_commands_and_overrides():
  out = hire("--help").stdout
  assert "train" in out and "bench-latency" in out
  out = hire("train", "--help").stdout
  assert "--gin.TRAIN_STEPS" in out and "resumes" in out


@pytest.mark.slow
def test_train_resume_eval_bench(tmp_path):
  run = f"--gin.MODEL_DIR={tmp_path}"
  first = hire("train", run, "--gin.TRAIN_STEPS=3", "--gin.CHECKPOINT_EVERY=2", *TINY)
  assert "Starting from scratch" in first.stdout
  assert (tmp_path / "config.gin").read_text().count("TRAIN_STEPS = 3") == 1
  second = hire("train", run, "--gin.TRAIN_STEPS=5", *TINY)
  assert "Resuming from checkpoint at step 3" in second.stdout

  out = hire("eval", run, "--gin.EVAL_BATCHES=1", "--gin.DOWNSTREAM_LIMIT=2",
             "--gin.MINIMAL_PAIRS_LIMIT=3", *TINY).stdout
  for phase in ("validation loss and recall: 1 done in", "downstream [",
                "decode latency (paths timed): 1 done in"):  # every long phase shows progress
    assert phase in out, out
  metrics = json.loads((tmp_path / "eval" / "hire_corpus_lm" / "metrics.json").read_text())
  assert metrics["step"] == 5 and {"loss", "perplexity", "unigram_loss"} <= set(metrics)
  assert {"downstream/mean/accuracy", "downstream/cloze/accuracy",
          "latency/ms_per_token"} <= set(metrics)
  assert metrics["data"]["validation"]["task"] == "hire_corpus_lm"
  assert "## Downstream accuracy" in (tmp_path / "eval" / "hire_corpus_lm" / "report.md").read_text()

  hire("bench-latency", run, "--gin.DECODE_STEPS=4", "--gin.CONTEXT_LEN=8", *TINY)
  latency = json.loads((tmp_path / "bench" / "latency.json").read_text())
  assert latency["cases"][0]["ms_per_token"] > 0 and latency["checkpoint_step"] == 5

  out = hire("generate", run, "--prompt=It is a truth", "--gin.GENERATE_TOKENS=5", *TINY).stdout
  assert out.startswith("It is a truth") and len(out.split()) > 4, out


@pytest.mark.slow
def test_eval_compare_two_runs(tmp_path):
  """A dense and a HiRE-FFN tiny run, evaluated (in this process: test_train_resume_eval_bench
  runs train and eval as commands), then compared side by side by `hire` commands."""
  runs = {"dense": "configs/experiments/tiny_dense.gin",
          "hire_ffn": "configs/experiments/tiny_hire_ffn.gin"}
  for name, gin_file in runs.items():
    run = f"--gin.MODEL_DIR={tmp_path / name}"
    # A HiRE knob given to the dense run would be refused: nothing there reads it.
    model = ["--gin.ModelConfig.d_ff=64", *(["--gin.ffn/ApproxConfig.rank=4"] if "hire" in name
                                            else [])]
    hire_in_process("train", f"--gin_file={gin_file}", run, "--gin.TRAIN_STEPS=2", *TINY, *model)
    hire_in_process("eval", f"--gin_file={gin_file}", run, "--gin.EVAL_BATCHES=1",
                    "--gin.DOWNSTREAM_LIMIT=2", "--gin.MINIMAL_PAIRS_LIMIT=3",
                    "--gin.LATENCY_STEPS=2", *TINY, *model)
  out = hire("compare", str(tmp_path / "dense"), str(tmp_path / "hire_ffn"),
             f"--out={tmp_path / 'cmp'}").stdout
  header = out.splitlines()[0].split()
  assert header == ["metric", "dense", "hire_ffn", "hire_ffn", "-", "dense"], out
  table = json.loads((tmp_path / "cmp.json").read_text())
  loss = next(r for r in table["rows"] if r["metric"] == "loss")
  assert loss["diff"][0] == pytest.approx(loss["values"][1] - loss["values"][0])
  recall = next(r for r in table["rows"] if r["metric"] == "recall/ffn@k")
  assert recall["values"][0] is None and 0 <= recall["values"][1] <= 1  # dense has none
  md = (tmp_path / "cmp.md").read_text()
  assert "| metric | dense | hire_ffn | hire_ffn - dense |" in md and "## Downstream" in md
  # Paired on the same questions: HiRE-served outcomes of run 2 against dense's exact ones.
  items = [json.loads((tmp_path / r / "eval" / "hire_corpus_lm" / "downstream_items.json")
                      .read_text())["tasks"]
           for r in ("dense", "hire_ffn")]
  swap = next(p for p in table["paired"] if p["task"] == "mp_swap")
  a, b = items[0]["mp_swap"]["exact"], items[1]["mp_swap"]["hire"]
  assert swap["n"] == 3 == len(a) and swap["diff"] == pytest.approx(
      100 * (b.count("1") - a.count("1")) / 3)
  assert "## Downstream, paired on the same questions" in md

  # `hire eval --compare` is an alias; a run without metrics is one line and exit 2.
  proc = hire("eval", "--compare", str(tmp_path / "dense"), str(tmp_path / "nope"), check=False)
  assert proc.returncode == 2 and "nope/eval/<data>/metrics.json not found" in proc.stderr
  assert [l for l in proc.stderr.splitlines() if l.startswith("hire")] == [
      proc.stderr.strip().splitlines()[-1]], proc.stderr

  # Dense vs HiRE greedy text from the HiRE-FFN run, on the prompt and two validation passages.
  out = hire("generate", f"--gin_file={runs['hire_ffn']}", f"--gin.MODEL_DIR={tmp_path / 'hire_ffn'}",
             "--prompt=It is a truth", "--compare", "--gin.GENERATE_TOKENS=4",
             "--gin.COMPARE_PROMPTS=2", *TINY, "--gin.ModelConfig.d_ff=64",
             "--gin.ffn/ApproxConfig.rank=4").stdout
  found = re.search(r"agreement over 3 prompts x 4 tokens: ([\d.]+)%; (\d) of 3", out)
  assert found and 0 <= float(found.group(1)) <= 100 and int(found.group(2)) <= 3, out
  step = re.search(r"per-step agreement .*: ([\d.]+)% \((\d+) of 12 steps differ\)", out)
  differ = int(step.group(2)) if step else -1
  assert step and float(step.group(1)) == pytest.approx(100 * (12 - differ) / 12, abs=0.006), out
  saved = json.loads((tmp_path / "hire_ffn" / "generate" / "compare.json").read_text())
  assert saved["passages"]["stepwise_agreement"] == pytest.approx(float(step.group(1)) / 100,
                                                                  abs=1e-4)
  assert len(saved["dense"]) == len(saved["hire"]) == 4
  assert saved["hire_config"]["ffn_k_prime_g"] >= saved["hire_config"]["ffn_k_g"] > 0


@pytest.mark.parametrize("args,match", [  # each a `hire` process; `make test-fast` runs two
    (["train", "--gin_file=configs/experiments/nope.gin"], "gin file"),
    pytest.param(["train", "--gin.TRAIN_STEPS=0", "--gin.MODEL_DIR=/tmp/hire_bad0"],
                 "TRAIN_STEPS=0", marks=pytest.mark.slow),
    pytest.param(["train", "--gin.Bogus.x=1"], "unknown gin name", marks=pytest.mark.slow),
    pytest.param(["eval", "--gin.MODEL_DIR=/tmp/hire_no_such_run"], "no checkpoints",
                 marks=pytest.mark.slow),
    (["frobnicate"], "unknown command"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, match):
  proc = hire(*args, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("hire")]
  assert len(lines) == 1 and match in lines[0], proc.stderr
  assert "Traceback" not in proc.stderr
