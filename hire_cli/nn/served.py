"""The served path (docs/method.md section 6): the one interface that decode, eval's served
metrics, downstream HiRE scoring, the recall curve and `hire bench-latency` all call.

A checkpoint is made servable once (`prepare`, `bind`): each approximator gets its serving tensors
(LR: `A`, `B`; Q: `W` packed with its scales; LR+Q: `A` packed with its scales, and `B`). Then:
- `hidden(model, tokens, cache, index, hire=...)`: the final hidden states, with every HiRE-FFN
  on its predicted groups when `hire` (the exact body otherwise);
- `select(model, h, k, hire=...)`: the output layer's top-k, HiRE-Softmax's select-then-rescore
  step when `hire` (k' candidates from the approximator, exact logits of their gathered rows
  only, on one device or on each shard of a mesh), the exact top-k over V otherwise;
- `next_token(...)`: greedy or sampled, from `select`;
- `forward(model, tokens)`: `hidden` and `select` over whole sequences, plus what a measurement
  compares them with (the exact logits of the same states, which a server never computes).
No call leaves state on a module: what a measurement needs is passed as an argument."""

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.nn import mesh_serve, topk


def prepare(graphdef, params, mesh=None):
  """(graphdef, params) of the model in its serving form; once, when a checkpoint is loaded.
  With `mesh`, layers whose top-k method is `da_top_k` or `gather_then_top_k` serve sharded
  over its model axis (`mesh_serve.py`; the graphdef records the mesh)."""
  model = bind(graphdef, params, mesh)
  graphdef, state = nnx.split(model)
  return graphdef, nnx.to_pure_dict(state)


def bind(graphdef, params, mesh=None):
  """The module of `params` in its serving form (on `mesh`, as `prepare`). Jitted eval
  functions bind training params with it, so their served metrics come from the same serving
  tensors a server derives."""
  model = nnx.merge(graphdef, params)
  model.prepare_serving()
  if mesh is not None:
    model.serve_on(mesh)
  return model


def hidden(model, tokens_BxL, cache=None, index=None, *, hire: bool = True,
           measure: bool = False):
  """(h_BxLxD, new_kv): the final hidden states (see `Transformer.__call__` for the cache).
  `hire` runs each HiRE-FFN on its predicted groups; `measure` (with `hire`) also sows, for the
  FFNs that select on a mesh, the recall of that selection (`nnx.capture` it)."""
  if not hire:
    return model(tokens_BxL, cache, index)
  return model.served(tokens_BxL, cache, index, measure=measure)


def select(model, h_BxLxD, k: int, *, hire: bool = True):
  """(values_BxLxk float32, ids_BxLxk, cand_BxLxKp or None): the output layer's top-k. With
  `hire` and a HiRE-Softmax head: its exact top-k among its k' candidates, having read only the
  approximator and the candidates' rows of W; otherwise the exact top-k of all V logits."""
  if hire and model.cfg.hire_softmax is not None:
    return model.head.served_top_k(h_BxLxD, k)
  values_BxLxk, ids_BxLxk = jax.lax.top_k(model.logits(h_BxLxD).astype(jnp.float32), k)
  return values_BxLxk, ids_BxLxk, None


def approx_scores(model, h_BxLxD):
  """scores_BxLxV: HiRE-Softmax's approximate scores from its serving tensors, the ranking its
  candidates are the top-k' of (for the recall curve and the approximate-tail perplexity)."""
  return model.head.served_scores(h_BxLxD)


def next_token(model, h_Bx1xD, key, top_k: int = 0, temperature: float = 0.0, *,
               hire: bool = True):
  """token_B from the last hidden state: greedy when temperature == 0, else sampled from the
  softmax over the top-k (of `select`) at `temperature`."""
  k = 1 if temperature == 0 else top_k
  values_Bxk, ids_Bxk = (x[:, 0] for x in select(model, h_Bx1xD, k, hire=hire)[:2])
  if temperature == 0:
    return ids_Bxk[:, 0].astype(jnp.int32)
  choice_B = jax.random.categorical(key, values_Bxk.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(ids_Bxk, choice_B[:, None], -1)[:, 0].astype(jnp.int32)


def forward(model, tokens_BxL, pos_BxT=None, measure_selection: bool = False) -> dict:
  """The served forward of a bound model over whole sequences, for measuring it:
  "h" (B x T x D, `hidden` with `hire`; T = L, or the positions `pos_BxT`), "top1" (the served
  greedy token: `select` with k = 1, what `next_token` decodes), "cand" (HiRE-Softmax's k'
  candidates from the same call, B x T x Kp; None with a dense head), "logits" (float32 exact
  logits of those states over all V: what the candidates are measured against; a server never
  computes them) and "scores" (the approximator's scores over V, or None).
  `measure_selection` adds "selection": for the layers that select on a mesh, the recall of the
  candidates served against the exact top-k' of the same approximate scores, and the formula's
  expected recall (`selection_recall`)."""
  run = lambda m: hidden(m, tokens_BxL, measure=measure_selection)[0]
  h_BxTxD, sown = nnx.capture(run, nnx.Intermediate)(model)
  if pos_BxT is not None:
    h_BxTxD = jnp.take_along_axis(h_BxTxD, pos_BxT[..., None], axis=1)
  _, ids_BxTx1, cand_BxTxKp = select(model, h_BxTxD, 1)
  has_head = model.cfg.hire_softmax is not None
  out = {"h": h_BxTxD, "top1": ids_BxTx1[..., 0], "cand": cand_BxTxKp,
         "logits": model.logits(h_BxTxD).astype(jnp.float32),
         "scores": approx_scores(model, h_BxTxD) if has_head else None}
  if measure_selection:
    out["selection"] = selection_recall(model, h_BxTxD, sown)
  return out


def selection_recall(model, h_BxTxD, sown) -> dict:
  """{"selection_recall/LAYER", "expected_selection_recall/LAYER"} for the softmax and the FFNs
  (mean over layers) that select on a mesh: what DA-TOP-k served against `topk.expected_recall`
  with the devices as buckets (1 for gather-then-top-k, which is exact)."""
  out = {}
  head = model.head
  if getattr(head, "mesh", None) is not None:
    hc, d = head.hc, mesh_serve.model_devices(head.mesh)
    cand, _, true = mesh_serve.softmax_serve(head, h_BxTxD, exact_too=True)
    out["selection_recall/softmax"] = topk.recall(cand, true)
    out["expected_selection_recall/softmax"] = mesh_serve.expected_recall(
        hc, model.cfg.vocab_size, hc.k_prime, d)
  ffns = [b.ffn for b in model.blocks if getattr(b.ffn, "mesh", None) is not None]
  if ffns:
    found = [v for v in jax.tree.leaves(sown) if getattr(v, "ndim", 1) == 0]
    out["selection_recall/ffn"] = jnp.mean(jnp.stack(found))
    s, d = ffns[0].sizes, mesh_serve.model_devices(ffns[0].mesh)
    out["expected_selection_recall/ffn"] = mesh_serve.expected_recall(
        model.cfg.hire_ffn, s.groups, s.k_prime_g, d)
  return out
