"""HiRE layers served on a model-parallel mesh: DA-TOP-k inside the model (method.md section 4).

On a mesh whose `model` axis shards the rows of `W` (V x D, HiRE-Softmax) and of `W_in`, `W_out`
(F x D, HiRE-FFN), as `lib/sharding.py`'s rules do, a layer whose `topk_method` is a mesh method
runs one `shard_map` per call:
1. each shard scores its own rows from its rows of the approximator's serving tensors (the
   scores never leave it);
2. selection of the k' candidates: `da_top_k` takes each shard's local top-k_loc and
   all-gathers only those (value, global id) pairs, D k_loc of them, then their top-k';
   `gather_then_top_k` (the baseline) all-gathers the whole score vector and takes its top-k';
3. the exact step where the rows live: each shard computes exactly the candidates it owns from
   its own rows (with DA-TOP-k those are among its local top-k_loc, so it reads k_loc rows), the
   B x k' exact logits (FFN: group scores) are combined with a pmax, and the FFN's outputs are
   summed over the shards (a psum of B x D, the reduction a sharded dense FFN does too).
No part of `W`, `W_in`, `W_out` or (with DA-TOP-k) of the scores crosses devices. Letters: `X`
tokens, `Nl` rows of one shard, `R` rows a shard computes exactly (k_loc, or k' for the
baseline), `Kp` candidates, `C` groups a shard reads (its static ones, then R), `k` kept,
`Ns` the local top-k_loc of every shard gathered, `Ngl` groups of one shard.
"""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from hire_cli import errors
from hire_cli.nn import approx, ffn_groups, topk
from hire_cli.nn.layers import activate

AXIS = "model"


def model_devices(mesh) -> int:
  return 1 if mesh is None else dict(mesh.shape).get(AXIS, 1)


def serves_on(mesh, method: str) -> bool:
  """Whether a layer selecting by `method` takes the sharded path on `mesh`."""
  return method in topk.MESH_METHODS and model_devices(mesh) > 1


def k_loc(layer_cfg, n: int, k_prime: int, devices: int) -> int:
  """Candidates each shard offers: `layer_cfg.k_loc`, or the smallest whose expected recall
  (`topk.expected_recall`, devices as buckets) reaches `layer_cfg.da_recall`; at most n / D.
  The baseline offers all its n / D scores."""
  if layer_cfg.topk_method == "gather_then_top_k":
    return n // devices
  chosen = layer_cfg.k_loc or topk.choose_k_loc(n, k_prime, devices, layer_cfg.da_recall)
  return min(chosen, n // devices)


def expected_recall(layer_cfg, n: int, k_prime: int, devices: int) -> float:
  """The formula's recall of the k' selection (1 for the baseline and whenever k_loc >= k')."""
  return topk.expected_recall(n, k_prime, devices, k_loc(layer_cfg, n, k_prime, devices))


def check_shards(n: int, devices: int, what: str, unit: int = 1) -> None:
  if n % (devices * unit):
    whole = f" of whole groups of {unit}" if unit > 1 else ""
    raise errors.UserError(f"{what}={n} does not split into {devices} shards{whole} on the mesh's "
                           "model axis; pick a MESH_MODEL that divides it or topk_method='exact'")


def place_rows(arrays: dict, mesh) -> dict:
  """The approximator's serving arrays sharded like `W` (rows over `model`; `b` replicated)."""
  return {k: jax.device_put(v, NamedSharding(mesh, P(AXIS) if k in approx.ROW_ARRAYS else P()))
          for k, v in arrays.items()}


def _specs(arrays: dict) -> dict:
  return {k: P(AXIS) if k in approx.ROW_ARRAYS else P() for k in arrays}


def _select(s_XxNl, k_prime: int, kl: int, method: str, exact_too: bool = False):
  """Inside `shard_map`: (cand_XxKp global ids (the same on every shard), rows_XxR this shard's
  local rows to compute exactly, mine_XxKp whether candidate p is this shard's, slot_XxKp where
  it is among `rows`[, true_XxKp the exact top-k' ids of all scores, for measuring recall])."""
  i, nl = jax.lax.axis_index(AXIS), s_XxNl.shape[-1]
  true_XxKp = None
  if method == "gather_then_top_k" or exact_too:
    _, true_XxKp = jax.lax.top_k(topk.all_gather_last(s_XxNl, AXIS), k_prime)
  if method == "gather_then_top_k":
    mine_XxKp = true_XxKp // nl == i
    rows_XxKp = jnp.where(mine_XxKp, true_XxKp - i * nl, 0)
    slot_XxKp = jnp.broadcast_to(jnp.arange(k_prime), true_XxKp.shape)
    out = (true_XxKp, rows_XxKp, mine_XxKp, slot_XxKp)
  else:
    vals_XxKl, rows_XxKl = jax.lax.top_k(s_XxNl, kl)
    vals_XxNs = topk.all_gather_last(vals_XxKl, AXIS)
    ids_XxNs = topk.all_gather_last(rows_XxKl + i * nl, AXIS)
    _, pos_XxKp = jax.lax.top_k(vals_XxNs, k_prime)
    cand_XxKp = jnp.take_along_axis(ids_XxNs, pos_XxKp, axis=-1)
    out = (cand_XxKp, rows_XxKl, pos_XxKp // kl == i, pos_XxKp % kl)
  return out + ((true_XxKp,) if exact_too else ())


def _mine_only(v_XxR, mine_XxKp, slot_XxKp):
  """x_XxKp: each candidate's value from the shard that owns it (pmax over -inf elsewhere)."""
  v_XxKp = jnp.where(mine_XxKp, jnp.take_along_axis(v_XxR, slot_XxKp, axis=-1), -jnp.inf)
  return jax.lax.pmax(v_XxKp, AXIS)


def _flat(x_XsxD):
  return x_XsxD.reshape(-1, x_XsxD.shape[-1])


def softmax_serve(head, h_XsxD, exact_too: bool = False):
  """HiRE-Softmax on the mesh: (cand_XsxKp, exact logits z_XsxKp float32[, the exact top-k'
  of the approximate scores, to measure the selection's recall])."""
  hc, cfg, mesh = head.hc, head.cfg, head.mesh
  d = model_devices(mesh)
  kl = k_loc(hc, cfg.vocab_size, hc.k_prime, d)
  arrays = head.approx.serving_arrays()

  def local(arrays, w_NlxD, h_XxD):
    s_XxNl = approx.scores_from_serving(hc.approx, cfg.d_model, arrays, h_XxD)
    cand, rows_XxR, mine, slot, *true = _select(s_XxNl, hc.k_prime, kl, hc.topk_method,
                                                exact_too)
    w_XxRxD = jnp.take(w_NlxD, rows_XxR, axis=0).astype(cfg.compute_dtype)
    z_XxR = jnp.einsum("xd,xrd->xr", h_XxD, w_XxRxD).astype(jnp.float32)
    return (cand, _mine_only(z_XxR, mine, slot), *true)

  n_out = 3 if exact_too else 2
  outs = jax.shard_map(local, mesh=mesh, in_specs=(_specs(arrays), P(AXIS), P()),
                       out_specs=(P(),) * n_out)(arrays, head.w[...], _flat(h_XsxD))
  return tuple(o.reshape(*h_XsxD.shape[:-1], -1) for o in outs)


def ffn_serve(layer, x_XsxD, exact_too: bool = False):
  """HiRE-FFN on the mesh: (y_XsxD[, cand_XsxKp, the exact top-k'_g groups of the approximate
  scores]). Static groups are computed by the shards that hold them; candidates are chosen
  among all G groups with the static ones scored -inf."""
  h, s, cfg, mesh = layer.cfg.hire_ffn, layer.sizes, layer.cfg, layer.mesh
  d, g = model_devices(mesh), h.group_size
  gl = s.groups // d
  kl = k_loc(h, s.groups, s.k_prime_g, d)
  ns_loc = min(s.n_static, gl)
  arrays = layer.approx.serving_arrays()
  names = ["w_in", "w_out"] + (["w_gate"] if cfg.gated else [])
  weights = {n: getattr(layer, n)[...] for n in names}
  dt = cfg.compute_dtype

  def local(arrays, w_loc, x_XxD):
    i = jax.lax.axis_index(AXIS)
    pre_XxFl = approx.scores_from_serving(h.approx, cfg.d_model, arrays, x_XxD)
    if not cfg.gated:
      pre_XxFl = activate(pre_XxFl, None, cfg.activation)
    s_XxNgl = ffn_groups.group_scores(pre_XxFl.reshape(-1, gl, g), h.score)
    s_XxNgl = jnp.where(i * gl + jnp.arange(gl) < s.n_static, -jnp.inf, s_XxNgl)
    cand, rows_XxR, mine, slot, *true = _select(s_XxNgl, s.k_prime_g, kl, h.topk_method,
                                                exact_too)
    static_C = jnp.arange(ns_loc, dtype=rows_XxR.dtype)
    read_XxC = jnp.concatenate(
        [jnp.broadcast_to(static_C, (rows_XxR.shape[0], ns_loc)), rows_XxR], axis=-1)
    blocks = {n: w.reshape(gl, g, cfg.d_model) for n, w in w_loc.items()}

    def act_of(x_D, read_C):  # one token: exact activations of the C groups it reads here
      def times(n):
        return jnp.einsum("d,cgd->cg", x_D, jnp.take(blocks[n], read_C, axis=0).astype(dt))
      return activate(times("w_in"), times("w_gate") if "w_gate" in blocks else None,
                      cfg.activation)

    def out_of(a_Cxg, read_C):  # one token: its kept activations times W_out's blocks
      return jnp.einsum("cg,cgd->d", a_Cxg, jnp.take(blocks["w_out"], read_C, axis=0).astype(dt))

    each = ((lambda f, *a: jax.lax.map(lambda t: f(*t), a)) if ffn_groups.one_set_at_a_time()
            else (lambda f, *a: jax.vmap(f)(*a)))
    act_XxCxg = each(act_of, x_XxD, read_XxC)
    score_XxC = ffn_groups.group_scores(act_XxCxg, h.score)
    exact_XxKp = _mine_only(score_XxC[:, ns_loc:], mine, slot)
    _, kept_Xxk = jax.lax.top_k(exact_XxKp, s.k_g)  # exact top-k_g among the candidates
    kept_XxKp = ffn_groups.keep_mask(kept_Xxk, s.k_prime_g) * mine
    keep_XxR = jnp.sum(jax.nn.one_hot(slot, rows_XxR.shape[-1]) * kept_XxKp[..., None], axis=-2)
    static_ok_C = (i * gl + static_C < s.n_static).astype(jnp.float32)
    keep_XxC = jnp.concatenate(
        [jnp.broadcast_to(static_ok_C, (rows_XxR.shape[0], ns_loc)), keep_XxR], axis=-1) > 0
    act_XxCxg = jnp.where(keep_XxC[..., None], act_XxCxg, 0).astype(dt)
    y_XxD = jax.lax.psum(each(out_of, act_XxCxg, read_XxC), AXIS)
    return (y_XxD, cand, *true) if exact_too else y_XxD

  specs = (_specs(arrays), {n: P(AXIS) for n in names}, P())
  out_specs = (P(),) * 3 if exact_too else P()
  outs = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=out_specs)(
      arrays, weights, _flat(x_XsxD).astype(dt))
  lead = x_XsxD.shape[:-1]
  if not exact_too:
    return outs.reshape(*lead, -1)
  return tuple(o.reshape(*lead, -1) for o in outs)


_ATTRS = {"a": ("lr", "a"), "b": ("lr", "b"), "packed": (None, "served_packed"),
          "scale": (None, "served_scale")}


def place_serving(approximator, mesh) -> None:
  """Puts the approximator's serving tensors where `shard_map` reads them: rows over `model`."""
  for name, array in place_rows(approximator.serving_arrays(), mesh).items():
    owner, attr = _ATTRS[name]
    getattr(approximator.lr if owner else approximator, attr)[...] = array
