"""Joining a multi-process JAX run (several hosts, or several processes on one machine)."""


def init_distributed(coordinator_address=None, num_processes=None, process_id=None,
                     auto=False) -> None:
  """Joins this process to a multi-process run; must come before anything touches devices."""
  if not (coordinator_address or auto):
    return
  import jax
  # CPU processes exchange collectives over TCP with gloo (jax's default; set for clarity).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
