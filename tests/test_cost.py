"""The cost model (nn/cost.py) held against the compiled decode step: what the program reads of
each weight (evals/program.py, from the optimized HLO) must be what the model counts, and in
HiRE paths the exact matrices must be read only through gathers of candidate rows or blocks.
Planted defects (a dense-then-select head, a per-step re-quantizing Q path) must fail it."""

import jax
import jax.numpy as jnp
import pytest

from hire_cli.evals import program
from hire_cli.lib import sharding, state
from hire_cli.nn import cost, decode, ffn, served, softmax
from hire_cli.nn.approx import ApproxConfig
from hire_cli.nn.config import HiReFfnConfig, HiReSoftmaxConfig, ModelConfig

# Distinct sizes; V and F under the quantized kernel's block so its loop is one block.
BASE = dict(vocab_size=500, d_model=64, n_layers=2, n_heads=2, d_head=32, d_ff=384, max_len=16)
KINDS = {"lr": ApproxConfig(kind="lr", rank=8), "q4": ApproxConfig(kind="q", bits=4),
         "q8": ApproxConfig(kind="q", bits=8), "lr_q": ApproxConfig(kind="lr_q", rank=8, bits=4)}
TOLERANCE = 0.02  # the embedding lookup reads a few rows more than the one token's


def _cfg(variant: str, kind: str, overlap: bool = False) -> ModelConfig:
  a = KINDS[kind]
  sm = HiReSoftmaxConfig(approx=a, k=4, k_prime=32) if variant in ("hire_softmax", "hire") else None
  ff = (HiReFfnConfig(approx=a, k_fraction=0.125, dynamic_overlap=overlap)
        if variant in ("hire_ffn", "hire") else None)
  return ModelConfig(**BASE, hire_softmax=sm, hire_ffn=ff)


def _reads(cfg: ModelConfig, batch: int = 1) -> dict:
  graphdef, params = state.init_params(cfg, 0, sharding.make_mesh(sharding.MeshConfig()))
  graphdef, params = served.prepare(graphdef, params)
  return program.param_reads(decode.compiled_step(graphdef, params, cfg, batch,
                                                  cfg.has_hire).as_text())


def check(cfg: ModelConfig, batch: int = 1) -> None:
  """Raises AssertionError when the compiled step reads other bytes than the model says, or a
  HiRE layer's exact matrix other than by gathers."""
  reads = _reads(cfg, batch)
  exact = []
  if cfg.hire_softmax is not None:
    exact.append("head/w")
  if cfg.hire_ffn is not None:
    exact += [f"blocks/{i}/ffn/{w}" for i in range(cfg.n_layers) for w in ("w_in", "w_out")]
  whole = [k for k in exact if not reads[k]["gathered"]]
  assert not whole, f"HiRE reads these exact matrices whole, not by gathers: {whole}"
  got = sum(r["bytes"] for r in reads.values())
  want = cost.weight_bytes_per_step(cfg, batch)
  assert abs(got - want) <= TOLERANCE * want, (
      f"the compiled step reads {got:.0f} bytes of weights, the cost model says {want:.0f}: "
      + ", ".join(f"{k} {r['bytes']:.0f}" for k, r in reads.items()))


@pytest.mark.parametrize("variant,kind", [  # one case in `make test-fast`, all in `make test`
    pytest.param(v, k, marks=() if (v, k) == ("hire", "lr") else pytest.mark.slow)
    for v in ("hire_softmax", "hire_ffn", "hire") for k in KINDS])
def test_compiled_step_reads_what_the_cost_model_says(variant, kind):
  check(_cfg(variant, kind))


def test_dense_step_reads_every_matrix_whole():
  cfg = _cfg("dense", "lr")
  check(cfg)
  reads = _reads(cfg)
  assert not reads["head/w"]["gathered"] and not reads["blocks/0/ffn/w_in"]["gathered"]


def test_dynamic_overlap_reads_one_shared_set_for_the_batch():
  check(_cfg("hire_ffn", "lr", overlap=True), batch=4)


@pytest.fixture
def fresh_programs():
  decode._fns.cache_clear()  # the patched methods must be traced anew
  yield
  decode._fns.cache_clear()


def test_planted_dense_then_select_head_fails(monkeypatch, fresh_programs):
  def dense_then_select(self, h_BxLxD, k=None):
    cand_BxLxKp = self.candidates(h_BxLxD)
    z_BxLxV = jnp.einsum("bld,vd->blv", h_BxLxD, self.w[...])  # all V exact logits
    z_BxLxKp = jnp.take_along_axis(z_BxLxV, cand_BxLxKp, axis=-1)
    values, pos = jax.lax.top_k(z_BxLxKp, k or self.hc.k)
    return values, jnp.take_along_axis(cand_BxLxKp, pos, -1), cand_BxLxKp

  monkeypatch.setattr(softmax.HiReSoftmaxHead, "served_top_k", dense_then_select)
  with pytest.raises(AssertionError, match="head/w"):
    check(_cfg("hire_softmax", "lr"))


@pytest.mark.parametrize("variant", ["hire_softmax", "hire_ffn"])
def test_planted_requantizing_q_path_fails(monkeypatch, fresh_programs, variant):
  # The Q path as it was: the served scores quantize the full-precision W on every call.
  monkeypatch.setattr(softmax.HiReSoftmaxHead, "served_scores",
                      lambda self, h: self.approx_scores(h))
  monkeypatch.setattr(ffn.HiReFfn, "served_group_scores",
                      lambda self, x: self.approx_group_scores(x, self.w_in[...]))
  with pytest.raises(AssertionError, match="whole"):
    check(_cfg(variant, "q4"))


def test_kernel_counts_are_the_entry_kernels_only():
  """`program.kernel_counts`: one dot and its fused epilogue, no free ops (parameters, tuples)."""
  fn = jax.jit(lambda x_1xD, w_DxN: jnp.tanh(x_1xD @ w_DxN) + 1.0)
  counts = program.kernel_counts(fn.lower(jnp.ones((1, 8)), jnp.ones((8, 16))).compile().as_text())
  assert counts.get("dot") == 1 and "fusion" in counts, counts
  assert not set(counts) & {"parameter", "constant", "bitcast", "tuple"}, counts
