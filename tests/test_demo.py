"""The summary `make demo` ends with: dense against HiRE from the saved eval and bench files."""

import pathlib

from hire_cli.runs import demo


def test_summary_says_loss_recall_agreement_and_speed():
  metrics = {"step": 150, "loss": 6.9, "unigram_loss": 7.1, "recall/softmax@32": 0.987,
             "recall/ffn@k": 0.91, "top1_agreement": 0.9, "served_loss": 11.2,
             "candidate_miss_rate": 0.25, "downstream/minimal_pairs/accuracy": 80.5,
             "downstream/minimal_pairs/accuracy_hire": 79.5,
             "downstream/mean/accuracy": 33.3, "downstream/mean/accuracy_hire": 32.9}
  bench = {"cases": [{"variant": v, "batch": 1, "ms_per_token": ms} for v, ms in
                     (("dense", 2.0), ("hire_softmax", 1.0), ("hire_ffn", 1.6), ("hire", 0.8))]}
  text = demo.summary(metrics, bench, pathlib.Path("runs/demo"), 421.0)
  for part in ("step 150", "7m01s", "6.900 exact model", "recall@32    0.987", "0.910",
               "90.0%", "33.3% exact, 32.9% with HiRE", "dense 2.00", "HiRE-Softmax 1.00 (2.00x)",
               "| HiRE 0.80 (2.50x)", "11.200", "missed 25.0%", "80.5% exact, 79.5% with HiRE"):
    assert part in text, (part, text)


def test_summary_reads_the_folder_eval_writes():
  """The demo reads the eval of the shipped corpus where `hire eval` writes it (eval/<data>/):
  a mismatch made `make demo` fail after its eval."""
  from hire_cli.lib import data_config
  assert demo.EVAL_DATA == data_config.eval_name(data_config.DataConfig())
