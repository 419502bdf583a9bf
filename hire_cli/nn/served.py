"""The served path (HIRE.md section 6), in one place: what eval's served loss, recall and
agreement, downstream HiRE scoring, `hire generate` and `hire bench-latency` all run.

A checkpoint is made servable once (`prepare`): each approximator gets its serving tensors (LR:
`A`, `B`; Q: `W` packed with its scales; LR+Q: `A` packed with its scales, and `B`). The served
forward then reads those and the gathered rows or blocks of the exact matrices, nothing else of
them: HiRE-FFN on its predicted groups (`Transformer.served`), HiRE-Softmax on its k'
candidates (`candidates`, then `Transformer.served_top_k` when decoding)."""

import jax.numpy as jnp
from flax import nnx

from hire_cli.nn import softmax


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


def forward(model, tokens_BxL, pos_BxT=None) -> dict:
  """The served forward of a bound model over whole sequences, for measuring it:
  "h" (B x T x D, hidden states with every HiRE-FFN on its predicted groups; T = L, or the
  positions `pos_BxT`), "logits" (float32 exact logits of those states over all V: what the
  candidates are measured against; a server never computes them), "cand" (HiRE-Softmax's k'
  candidates, B x T x Kp; None with a dense head) and "top1" (the served greedy token)."""
  h_BxTxD, _ = model.served(tokens_BxL)
  if pos_BxT is not None:
    h_BxTxD = jnp.take_along_axis(h_BxTxD, pos_BxT[..., None], axis=1)
  logits_BxTxV = model.logits(h_BxTxD).astype(jnp.float32)
  cand_BxTxKp = model.head.candidates(h_BxTxD) if model.cfg.hire_softmax is not None else None
  top1_BxT = (jnp.argmax(logits_BxTxV, -1) if cand_BxTxKp is None else
              softmax.served_top1(logits_BxTxV, cand_BxTxKp))
  return {"h": h_BxTxD, "logits": logits_BxTxV, "cand": cand_BxTxKp, "top1": top1_BxT}
