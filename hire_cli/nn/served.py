"""The served path (docs/method.md section 6), in one place: what eval's served loss, recall and
agreement, downstream HiRE scoring, `hire generate` and `hire bench-latency` all run.

A checkpoint is made servable once (`prepare`): each approximator gets its serving tensors (LR:
`A`, `B`; Q: `W` packed with its scales; LR+Q: `A` packed with its scales, and `B`). The served
forward then reads those and the gathered rows or blocks of the exact matrices, nothing else of
them: HiRE-FFN on its predicted groups (`Transformer.served`), HiRE-Softmax on its k'
candidates (`candidates`, then `Transformer.served_top_k` when decoding)."""

import jax
import jax.numpy as jnp
from flax import nnx

from hire_cli.nn import mesh_serve, softmax, topk


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


def forward(model, tokens_BxL, pos_BxT=None, measure_selection: bool = False) -> dict:
  """The served forward of a bound model over whole sequences, for measuring it:
  "h" (B x T x D, hidden states with every HiRE-FFN on its predicted groups; T = L, or the
  positions `pos_BxT`), "logits" (float32 exact logits of those states over all V: what the
  candidates are measured against; a server never computes them), "cand" (HiRE-Softmax's k'
  candidates, B x T x Kp; None with a dense head) and "top1" (the served greedy token).
  `measure_selection` adds "selection": for the layers that select on a mesh, the recall of the
  candidates served against the exact top-k' of the same approximate scores, and the formula's
  expected recall (`selection_recall`)."""
  ffns = [b.ffn for b in model.blocks if getattr(b.ffn, "mesh", None) is not None]
  for layer in ffns:
    layer.measure_selection = measure_selection
  (h_BxTxD, _), sown = nnx.capture(lambda m: m.served(tokens_BxL), nnx.Intermediate)(model)
  if pos_BxT is not None:
    h_BxTxD = jnp.take_along_axis(h_BxTxD, pos_BxT[..., None], axis=1)
  logits_BxTxV = model.logits(h_BxTxD).astype(jnp.float32)
  cand_BxTxKp = model.head.candidates(h_BxTxD) if model.cfg.hire_softmax is not None else None
  top1_BxT = (jnp.argmax(logits_BxTxV, -1) if cand_BxTxKp is None else
              softmax.served_top1(logits_BxTxV, cand_BxTxKp))
  out = {"h": h_BxTxD, "logits": logits_BxTxV, "cand": cand_BxTxKp, "top1": top1_BxT}
  if measure_selection:
    out["selection"] = selection_recall(model, h_BxTxD, ffns, sown)
  return out


def selection_recall(model, h_BxTxD, ffns, sown) -> dict:
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
  if ffns:
    found = [v for v in jax.tree.leaves(sown) if getattr(v, "ndim", 1) == 0]
    out["selection_recall/ffn"] = jnp.mean(jnp.stack(found))
    s, d = ffns[0].sizes, mesh_serve.model_devices(ffns[0].mesh)
    out["expected_selection_recall/ffn"] = mesh_serve.expected_recall(
        model.cfg.hire_ffn, s.groups, s.k_prime_g, d)
  return out
