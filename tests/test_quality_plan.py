"""`make quality`'s plan (`lib/quality_plan.py`): the command a page records, and which
experiment each column is."""

import pathlib

from hire_cli.lib import quality_plan


def test_the_page_records_the_command_that_made_it():
  assert quality_plan.command([]) == "make quality"
  assert quality_plan.command(["--quick"]) == "make quality QUICK=1"
  assert quality_plan.command(["--variants=dense,hire", "--steps=600"]) == (
      "python -m hire_cli.runs.quality --variants=dense,hire --steps=600")


def test_single_layer_columns_are_the_halves_of_the_default():
  """The HiRE-FFN column uses the default's 4-bit FFN approximator and the HiRE-Softmax column its
  k': if configs/variants/hire.gin changes, this says to change the columns too."""
  root = pathlib.Path(__file__).resolve().parents[1]
  default = (root / "configs" / "variants" / "hire.gin").read_text()
  assert "include 'configs/variants/hire_ffn_q.gin'" in default
  k_prime = next(line for line in default.splitlines()
                 if line.startswith("HiReSoftmaxConfig.k_prime"))
  assert quality_plan.OVERRIDES["hire_softmax"] == (f"--gin.{k_prime.replace(' ', '')}",)
  for size in ("tiny", "small"):
    name = f"{size}_{quality_plan.EXPERIMENT['hire_ffn']}.gin"
    assert (root / "configs" / "experiments" / name).exists()
