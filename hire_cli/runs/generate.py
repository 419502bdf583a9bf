"""`hire generate`: text from a checkpoint and a prompt, dense or HiRE, greedy or top-k sampling
with temperature, streamed to stdout; `compare` shows dense and HiRE greedy outputs and their
token agreement."""

import pathlib
import sys

import numpy as np

from hire_cli import errors, validate
from hire_cli.lib import checkpoint, data_config, sharding
from hire_cli.lib import vocab as vocab_lib
from hire_cli.nn import decode, ffn, served
from hire_cli.nn.config import ModelConfig
from hire_cli.report import reporting


def generate_text(*, model_dir: str, model: ModelConfig, data_cfg: data_config.DataConfig,
                  mesh_cfg: sharding.MeshConfig, prompt: str, num_tokens: int = 64,
                  temperature: float = 0.0, top_k: int = 40, seed: int = 0, hire: bool = True,
                  compare: bool = False, compare_prompts: int = 0,
                  compare_prompt_len: int = 32) -> dict:
  """Continues `prompt`; `hire` uses the HiRE paths when the model has HiRE layers.

  `compare`: dense and HiRE greedy continuations and the fraction of positions where they
  agree (free-running, and per step after dense's prefix), saved to
  MODEL_DIR/generate/compare.json; with `compare_prompts` = N also of N validation passages
  (their first `compare_prompt_len` tokens as prompts, decoded as one batch), agreement over
  all."""
  validate.arguments(generate_text, locals())
  if not prompt:
    raise errors.UserError("no prompt; pass --prompt='Once upon a time'")
  try:
    prompt.encode("utf-8")
  except UnicodeEncodeError:
    raise errors.UserError("the prompt is not valid UTF-8 text; pass it as UTF-8") from None
  if top_k > model.vocab_size:  # validate refused num_tokens, top_k < 1 and temperature < 0
    raise errors.UserError(f"{validate.setting('generate_text', 'top_k', top_k)}={top_k} exceeds "
                           f"the vocabulary ({model.vocab_size}); lower it")
  vocab = vocab_lib.load(data_cfg.vocab_path)
  ids = vocab.encode(prompt)
  bos = [model.bos_id] if model.bos_id >= 0 else []  # a model trained with BOS first (Gemma)
  if len(bos + ids) + num_tokens > model.max_len:
    raise errors.UserError(
        f"prompt ({len(ids)} tokens) + {num_tokens} new tokens exceeds the model's context "
        f"max_len={model.max_len}; shorten the prompt or lower "
        f"{validate.setting('generate_text', 'num_tokens', num_tokens)}")
  mesh = sharding.make_mesh(mesh_cfg)
  _, graphdef, params = checkpoint.restore_params(model_dir, model, mesh)
  graphdef, params = served.prepare(graphdef, params, mesh)  # the tensors a HiRE server keeps
  prompt_1xL = np.asarray([bos + ids], np.int32)
  has_hire = model.has_hire

  def run(use_hire, stream, temp):
    shown = []

    def on_token(token_B):
      shown.append(int(token_B[0]))
      if stream and reporting.is_chief():
        text = vocab.decode(ids + shown)  # with the prompt, so word boundaries are right
        prev = vocab.decode(ids + shown[:-1])
        sys.stdout.write(text[len(prev):] if text.startswith(prev) else " " + text)
        sys.stdout.flush()
    out = decode.generate(graphdef, params, model, prompt_1xL, num_tokens, served=use_hire,
                          top_k=top_k, temperature=temp, seed=seed, on_token=on_token)
    if stream:
      reporting.say("")
    return np.asarray(out[0]).tolist()

  if compare:
    if not has_hire:
      raise errors.UserError("--compare needs a HiRE model; use a configs/experiments/*hire* file")
    dense_ids, hire_ids = run(False, False, 0.0), run(True, False, 0.0)
    agreement = float(np.mean(np.asarray(dense_ids) == np.asarray(hire_ids)))
    forced_1xT = np.asarray(decode.teacher_forced_greedy(
        graphdef, params, model, prompt_1xL, np.asarray([dense_ids], np.int32), served=True))
    stepwise = float(np.mean(forced_1xT[0] == np.asarray(dense_ids)))
    knobs = hire_knobs(model)
    reporting.say("HiRE: " + ", ".join(f"{k} {v}" for k, v in knobs.items()))
    reporting.say(f"prompt: {prompt}")
    reporting.say(f"dense : {vocab.decode(dense_ids)}")
    reporting.say(f"HiRE  : {vocab.decode(hire_ids)}")
    reporting.say(f"greedy token agreement: {100 * agreement:.1f}% of {num_tokens}; per step "
                  f"(HiRE's choice after dense's prefix): {100 * stepwise:.1f}%")
    out = {"dense": dense_ids, "hire": hire_ids, "dense_text": vocab.decode(dense_ids),
           "hire_text": vocab.decode(hire_ids), "agreement": agreement,
           "stepwise_agreement": stepwise, "stepwise_same": (forced_1xT[0] == dense_ids).tolist()}
    if compare_prompts > 0:
      out["passages"] = _compare_passages(graphdef, params, model, data_cfg, vocab, num_tokens,
                                          compare_prompts, compare_prompt_len, out)
    path = pathlib.Path(model_dir) / "generate" / "compare.json"
    if reporting.is_chief():
      reporting.write_json(path, {"prompt": prompt, "hire_config": knobs, **out})
    reporting.say(f"wrote {path}")
    return out
  if reporting.is_chief():
    sys.stdout.write(vocab.decode(ids))
  out_ids = run(hire and has_hire, True, temperature)
  return {"tokens": out_ids, "text": vocab.decode(out_ids)}


def hire_knobs(model: ModelConfig) -> dict:
  """The HiRE settings that decide agreement with dense (candidate budgets, approximators)."""
  out = {}
  if model.hire_ffn is not None:
    s = ffn.ffn_sizes(model)
    out.update({"ffn_approx": model.hire_ffn.approx.kind, "ffn_k_g": s.k_g,
                "ffn_k_prime_g": s.k_prime_g, "ffn_groups": s.groups, "ffn_n_static": s.n_static})
  if model.hire_softmax is not None:
    hc = model.hire_softmax
    out.update({"softmax_approx": hc.approx.kind, "softmax_k_prime": hc.k_prime,
                "softmax_rank": hc.approx.rank, "softmax_bits": hc.approx.bits,
                "softmax_calibration_rows": hc.calibration_rows})
  return out


def _compare_passages(graphdef, params, model: ModelConfig, data_cfg, vocab, num_tokens: int,
                      n: int, prompt_len: int, first: dict) -> dict:
  """Greedy dense vs HiRE on the first `n` validation passages (one batch); the agreement over
  them and the user's prompt together, where each first diverges, and the per-step agreement
  (HiRE's greedy token after dense's prefix, `decode.teacher_forced_greedy`)."""
  if prompt_len + num_tokens > model.max_len:
    raise errors.UserError(f"COMPARE_PROMPT_LEN={prompt_len} + GENERATE_TOKENS={num_tokens} "
                           f"exceeds max_len={model.max_len}; lower one of them")
  from hire_cli.lib import data  # the input pipeline, only for validation passages
  rows = data.load_rows(data_cfg, "validation")
  if n > len(rows):
    raise errors.UserError(f"COMPARE_PROMPTS={n} but the validation split has {len(rows)} rows")
  prompts_NxP = np.asarray(rows[:n, :prompt_len], np.int32)
  if model.bos_id >= 0:
    prompts_NxP = np.concatenate([np.full((n, 1), model.bos_id, np.int32), prompts_NxP[:, :-1]], 1)
  dense_NxT, hire_NxT = (np.asarray(decode.generate(graphdef, params, model, prompts_NxP,
                                                    num_tokens, served=h)) for h in (False, True))
  same_NxT = np.concatenate([dense_NxT == hire_NxT,
                             np.asarray([first["dense"]]) == np.asarray([first["hire"]])])
  diverge_N = [int(np.argmin(r)) if not r.all() else None for r in same_NxT]
  agreement = float(same_NxT.mean())
  forced_NxT = np.asarray(decode.teacher_forced_greedy(graphdef, params, model, prompts_NxP,
                                                       dense_NxT, served=True))
  step_same_NxT = np.concatenate([forced_NxT == dense_NxT, [first["stepwise_same"]]])
  stepwise = float(step_same_NxT.mean())
  for i in range(min(n, 3)):
    reporting.say(f"passage {i}: {vocab.decode(prompts_NxP[i].tolist())!r}")
    reporting.say(f"  dense : {vocab.decode(dense_NxT[i].tolist())!r}")
    reporting.say(f"  HiRE  : {vocab.decode(hire_NxT[i].tolist())!r}")
  identical = sum(d is None for d in diverge_N)
  reporting.say(f"greedy token agreement over {n + 1} prompts x {num_tokens} tokens: "
                f"{100 * agreement:.2f}%; {identical} of {n + 1} continuations identical")
  reporting.say(f"per-step agreement (HiRE's greedy token after dense's prefix): "
                f"{100 * stepwise:.2f}% ({int((~step_same_NxT).sum())} of {step_same_NxT.size} "
                "steps differ)")
  return {"agreement": agreement, "stepwise_agreement": stepwise, "prompts": n + 1,
          "tokens": num_tokens, "identical": identical, "first_divergence": diverge_N}
