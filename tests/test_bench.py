import dataclasses
import json

import pytest

from hire_cli import errors
from hire_cli.lib import sharding
from hire_cli.nn import config, cost
from hire_cli.nn.config import ModelConfig
from hire_cli.runs import bench

TINY = ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=2, d_head=16, d_ff=128,
                   max_len=64)


def test_variant_bytes_follow_the_formulas():
  cfgs = bench.variant_configs(TINY, bench.VARIANTS)
  dense = cost.weight_bytes_per_step(cfgs["dense"], 1)
  # dense: every weight once (embedding: one row per token)
  assert dense == (TINY.num_params() - TINY.vocab_size * TINY.d_model + TINY.d_model) * 4
  for v in ("hire_softmax", "hire_ffn", "hire"):
    assert cost.weight_bytes_per_step(cfgs[v], 1) < dense, v
  assert cost.weight_bytes_per_step(cfgs["hire"], 1) < cost.weight_bytes_per_step(
      cfgs["hire_softmax"], 1)
  # Per-token candidates grow with the batch; dynamic overlap does not.
  shared = dataclasses.replace(cfgs["hire_ffn"], hire_ffn=dataclasses.replace(
      cfgs["hire_ffn"].hire_ffn, dynamic_overlap=True))
  assert cost.weight_bytes_per_step(cfgs["hire_ffn"], 8) > cost.weight_bytes_per_step(
      cfgs["hire_ffn"], 1)
  embed_rows = 7 * TINY.d_model * 4  # only the 7 extra embedding rows differ
  assert cost.weight_bytes_per_step(shared, 8) - cost.weight_bytes_per_step(shared, 1) == \
      embed_rows


@pytest.mark.slow
def test_random_init_benchmark_times_every_variant(tmp_path):
  result = bench.bench_latency(model_dir=str(tmp_path), model=TINY,
                               mesh_cfg=sharding.MeshConfig(), init="random",
                               batch_sizes=[1, 2], context_lens=[8], decode_steps=2,
                               warmup_steps=1, repeats=1)
  saved = json.loads((tmp_path / "bench" / "latency.json").read_text())
  assert (tmp_path / "bench" / "latency.png").stat().st_size > 1000
  got = {(c["variant"], c["batch"]) for c in saved["cases"]}
  every = bench.VARIANTS + bench.OVERLAP_VARIANTS  # a batch > 1: dynamic overlap timed too
  assert got == {(v, b) for v in every for b in (1, 2)}
  for c in result["cases"]:
    assert c["ms_per_token"] > 0 and c["weight_bytes_per_step"] > 0 and c["prefill_ms"] > 0
    assert c["roofline_speedup"] > 0 and (c["variant"] != "dense" or c["speedup"] == 1.0)


def test_checkpoint_mode_refuses_variants_it_cannot_time(tmp_path):
  with pytest.raises(errors.UserError, match="no checkpoints|no trained approximators"):
    bench.bench_latency(model_dir=str(tmp_path), model=TINY, mesh_cfg=sharding.MeshConfig(),
                        variants=["hire"], context_lens=[8], decode_steps=2)


def test_overlap_variants_share_one_candidate_set():
  cfgs = bench.variant_configs(TINY, ["hire_ffn", "hire_ffn_overlap"])
  assert not cfgs["hire_ffn"].hire_ffn.dynamic_overlap
  assert cfgs["hire_ffn_overlap"].hire_ffn.dynamic_overlap
  # per-token candidate sets grow with the batch; the shared set does not
  grow = lambda v: (cost.weight_bytes_per_step(cfgs[v], 8) -
                    cost.weight_bytes_per_step(cfgs[v], 1))
  assert grow("hire_ffn") > grow("hire_ffn_overlap")



def test_unconfigured_variants_are_sized_to_the_model():
  cfgs = bench.variant_configs(TINY, ["hire"])
  assert cfgs["hire"].hire_softmax == config.default_hire_softmax(TINY)
  assert cfgs["hire"].hire_ffn == config.default_hire_ffn(TINY)
  assert cfgs["hire"].hire_softmax.approx.rank == 8  # D/16 = 2, raised to 8
  small_v = dataclasses.replace(TINY, vocab_size=100)
  assert config.default_hire_softmax(small_v).k_prime == 100  # k' <= V
  # A run's own HiRE layers are kept.
  own = dataclasses.replace(TINY, hire_ffn=dataclasses.replace(
      config.default_hire_ffn(TINY), n_static=1))
  assert bench.variant_configs(own, ["hire_ffn"])["hire_ffn"].hire_ffn.n_static == 1


@pytest.mark.slow
def test_every_approximator_kind_is_timed_on_shared_weights(tmp_path):
  """BENCH_APPROX_KINDS: each HiRE variant once per kind, each from its serving tensors."""
  result = bench.bench_latency(model_dir=str(tmp_path), model=TINY,
                               mesh_cfg=sharding.MeshConfig(), init="random",
                               variants=["dense", "hire_softmax", "hire_ffn"], batch_sizes=[1],
                               context_lens=[8], decode_steps=2, warmup_steps=1, repeats=1,
                               approx_kinds=["lr", "q4", "lr_q"])
  got = [c["variant"] for c in result["cases"]]
  assert got == ["dense"] + [f"{v}@{k}" for v in ("hire_softmax", "hire_ffn")
                             for k in ("lr", "q4", "lr_q")], got
  by = {c["variant"]: c["weight_bytes_per_step"] for c in result["cases"]}
  # int4 W: an eighth of float32 W's bytes, plus scales and the exact rows.
  assert by["hire_softmax@q4"] < by["dense"] and by["hire_softmax@lr_q"] < by["hire_softmax@lr"]
  with pytest.raises(errors.UserError, match="approximator kind"):
    bench.variant_configs(TINY, ["hire@q3"])


def test_topk_method_variants():
  """VARIANT:METHOD sets both layers' candidate selection (BENCH_TOPK_METHODS builds them)."""
  cfgs = bench.variant_configs(TINY, ["dense", "hire:da_top_k", "hire_ffn@q4:gather_then_top_k"])
  assert cfgs["hire:da_top_k"].hire_softmax.topk_method == "da_top_k"
  assert cfgs["hire:da_top_k"].hire_ffn.topk_method == "da_top_k"
  ffn = cfgs["hire_ffn@q4:gather_then_top_k"].hire_ffn
  assert (ffn.topk_method, ffn.approx.kind) == ("gather_then_top_k", "q")
  for bad in ("hire:nope", "dense:da_top_k"):
    with pytest.raises(errors.UserError, match="top-k method"):
      bench.variant_configs(TINY, [bad])


def test_weak_dense_baseline_warns():
  """A dense case under half the measured bandwidth gets one warning; HiRE cases and a sound
  dense case get none (a tied 262k head once decoded at 16%)."""
  from hire_cli.runs import bench
  cases = [{"variant": "dense", "batch": 1, "context": 64, "bandwidth_fraction": 0.16},
           {"variant": "dense", "batch": 8, "context": 64, "bandwidth_fraction": 0.82},
           {"variant": "hire_softmax", "batch": 1, "context": 64, "bandwidth_fraction": 0.1}]
  lines = bench.weak_baseline(cases)
  assert len(lines) == 1 and "16%" in lines[0] and "batch 1" in lines[0]
