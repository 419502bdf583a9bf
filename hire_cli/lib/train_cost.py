"""What a training run costs: bytes per device of the compiled train step (parameters, optimizer
state, activations) against the device's memory, and model-FLOPs utilisation (MFU) against the
device's peak.

Bytes are read from the compiled program: the parameter and optimizer-state shards from the
shardings XLA compiled the step for, the rest from its `memory_analysis()`. Nothing is allocated:
the step is compiled for abstract arrays, so a 1B model's layout can be checked on a laptop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hire_cli import errors
from hire_cli.lib import sharding

GB = 1024**3

# Dense bfloat16 peak FLOP/s of one chip (vendor data sheets; no sparsity). Matched in order
# against `device.device_kind`, so the more specific names come first.
PEAK_TFLOPS = (
    ("TPU v5 lite", 197.0), ("TPU v5e", 197.0), ("TPU v5p", 459.0), ("TPU v5", 459.0),
    ("TPU v4", 275.0), ("TPU v6", 918.0),
    ("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("L4", 121.0),
)


@dataclasses.dataclass(frozen=True)
class StepCost:
  """Bytes per device of one compiled train step."""
  params: int  # this device's parameter shards
  opt: int  # its optimizer-state shards
  arguments: int  # every input buffer (state + batch), from memory_analysis
  temp: int  # XLA temporaries: activations kept for the backward pass, gradients, gathers
  outputs_not_aliased: int  # outputs that could not reuse a donated input

  @property
  def activations(self) -> int:
    """Estimated activations: the temporaries less one gradient per parameter shard."""
    return max(self.temp - self.params, 0)

  @property
  def total(self) -> int:
    return self.arguments + self.temp + self.outputs_not_aliased


def shard_bytes(abstract_tree, shardings_tree) -> int:
  """Bytes of one device's shards of every array in the tree."""
  return int(sum(np.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
                 for x, s in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings_tree))))


def compile_step(step_fn, abstract_state, batch_size: int, seq_len: int, mesh):
  """(compiled step, StepCost): `step_fn` compiled for the abstract state and a batch."""
  batch = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32,
                               sharding=sharding.batch_sharding(mesh))
  compiled = step_fn.lower(abstract_state, batch, batch).compile()
  state_shardings = compiled.input_shardings[0][0]
  mem = compiled.memory_analysis()
  cost = StepCost(
      params=shard_bytes(abstract_state["params"], state_shardings["params"]),
      opt=shard_bytes(abstract_state["opt"], state_shardings["opt"]),
      arguments=int(mem.argument_size_in_bytes), temp=int(mem.temp_size_in_bytes),
      outputs_not_aliased=int(max(mem.output_size_in_bytes - mem.alias_size_in_bytes, 0)))
  return compiled, cost


def device_memory(device, override_gb: float) -> int | None:
  """Bytes of memory one device has: the override (gin DEVICE_MEMORY_GB) when > 0, else what
  the runtime reports (`memory_stats()["bytes_limit"]`, TPU and GPU); None when unknown (CPU)."""
  if override_gb > 0:
    return int(override_gb * GB)
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  limit = (stats or {}).get("bytes_limit")
  return int(limit) if limit else None


def check_fits(cost: StepCost, limit: int | None, mesh) -> None:
  if limit is not None and cost.total > limit:
    raise errors.UserError(
        f"the train step needs {cost.total / GB:.2f} GB per device (params {cost.params / GB:.2f}"
        f", optimizer {cost.opt / GB:.2f}, temporaries {cost.temp / GB:.2f}) but a device has "
        f"{limit / GB:.2f} GB on mesh {dict(mesh.shape)}; raise MESH_FSDP, set REMAT='full', "
        "raise GRAD_ACCUM_STEPS, set MOMENTS_DTYPE='bfloat16' or lower BATCH_SIZE")


def describe(cost: StepCost, limit: int | None) -> str:
  mb = lambda n: f"{n / 2**20:,.1f} MiB"  # noqa: E731
  have = f" of {mb(limit)}" if limit else " (device memory unknown: not checked)"
  return (f"Per device: params {mb(cost.params)}, optimizer state {mb(cost.opt)}, activations "
          f"~{mb(cost.activations)} (XLA temporaries {mb(cost.temp)}); step total "
          f"{mb(cost.total)}{have}")


def peak_flops(device, override_tflops: float) -> float | None:
  """Peak FLOP/s of one device: the override (gin PEAK_TFLOPS) when > 0, else the table's entry
  for its kind; None when unknown (CPU: MFU is then reported as n/a)."""
  if override_tflops > 0:
    return override_tflops * 1e12
  kind = getattr(device, "device_kind", "")
  for name, tflops in PEAK_TFLOPS:
    if name.lower() in kind.lower():
      return tflops * 1e12
  return None


def throughput(tokens: int, seconds: float, n_devices: int, flops_per_token: float,
               peak: float | None) -> dict:
  """{"tokens_per_s_per_device", "mfu"} (mfu NaN when the peak is unknown)."""
  per_device = tokens / max(seconds, 1e-9) / n_devices
  mfu = per_device * flops_per_token / peak if peak else float("nan")
  return {"tokens_per_s_per_device": per_device, "mfu": mfu}
