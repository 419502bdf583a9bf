"""What `make quality` runs, without its flags (so tests and other entry points can import it):
the experiment behind each column, the pair evaluated periodically, and the command a results
page records."""

# The HiRE-Softmax and HiRE-FFN columns are the two halves of the default combined HiRE
# (configs/variants/hire.gin): its 4-bit FFN approximator and its k' = 512.
EXPERIMENT = {"hire_ffn": "hire_ffn_q"}
GAP_PAIR = ("dense", "hire")
OVERRIDES = {"hire_softmax": ("--gin.HiReSoftmaxConfig.k_prime=512",)}
SETUP = (" (the HiRE-Softmax and HiRE-FFN columns are the halves of the default HiRE: hire_softmax "
         "with `--gin.HiReSoftmaxConfig.k_prime=512`, hire_ffn from `<size>_hire_ffn_q.gin`)")


def experiment_args(size: str, variant: str) -> tuple[str, ...]:
  """The experiment of a column, with its overrides, for every phase of that run."""
  return (f"--gin_file=configs/experiments/{size}_{EXPERIMENT.get(variant, variant)}.gin",
          *OVERRIDES.get(variant, ()))


def command(argv_flags: list[str]) -> str:
  """The command that made the page: `make quality [QUICK=1]`, or the module with its flags."""
  if argv_flags in ([], ["--quick"]):
    return "make quality" + (" QUICK=1" if argv_flags else "")
  return " ".join(["python -m hire_cli.runs.quality", *argv_flags])
