"""llama.cpp's view of a real GGUF, to hold `hire import` to: per-position top-64 logits, the
logsumexp of every row and the log-prob of the next token on 8 fixed English prompts, their
perplexity, a 64-token greedy continuation, and llama.cpp's decode speed at batch 1.

  .venv-ref/bin/python benchmarks/llamacpp_reference.py --gguf=FILE --out=OUT.npz \
      [--prompts=FILE] [--threads=2]

--prompts: a text file, one prompt per paragraph (blank-line separated); default PROMPTS.
Writes OUT.npz and OUT.json (the scalars: perplexity, timings, greedy text, build).
"""

import argparse
import json
import pathlib
import time

import gguf
import llama_cpp
import numpy as np

LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"  # vendored by the 0.3.36 sdist
TOP_K, N_GREEDY, N_TIMED, N_TIMING_PROMPT, N_CTX = 64, 64, 64, 16, 512
F32 = 0  # ggml_type GGML_TYPE_F32

PROMPTS = [
    "The history of the printing press begins long before Gutenberg. Craftsmen in China carved "
    "whole pages into wooden blocks, inked them, and pressed paper against the surface to make "
    "copies of religious texts and calendars. Later, movable type made of baked clay and then "
    "metal allowed printers to rearrange individual characters, although the huge number of "
    "characters in written Chinese made the method slow compared with block printing.",
    "To make a simple loaf of bread, mix five hundred grams of flour with a teaspoon of salt, a "
    "packet of dried yeast and about three hundred millilitres of warm water. Knead the dough on "
    "a floured table for ten minutes until it feels smooth and elastic, then leave it in a warm "
    "place, covered with a cloth, until it has doubled in size. Shape it, let it rise again, and "
    "bake it in a hot oven for half an hour.",
    "Rivers shape the land in ways that are easy to overlook. Over thousands of years a river "
    "carries sand and mud from the mountains toward the sea, cutting valleys, building wide flat "
    "plains, and depositing fertile soil wherever it floods. When the river finally reaches the "
    "coast it slows down, drops the last of its load, and often splits into many channels that "
    "together form a delta.",
    "The committee met on Tuesday morning to discuss the budget for the coming year. After a long "
    "debate, the members agreed to increase spending on the public library and the parks, while "
    "postponing the repair of the old bridge until a second engineering report could be "
    "completed. Several residents spoke during the public comment period, and most of them asked "
    "for longer opening hours at the swimming pool.",
    "A computer program is a list of instructions that a machine follows one step at a time. "
    "Programmers write these instructions in languages that people can read, such as Python or "
    "C, and other programs called compilers or interpreters translate them into the simple "
    "operations the processor understands. Small mistakes in the instructions, known as bugs, "
    "can make a program crash or quietly produce the wrong answer.",
    "On the first warm day of spring the whole village seemed to come outside. Children ran "
    "along the river path with kites and dogs, old men played cards at the tables in front of the "
    "bakery, and the market square filled with stalls selling cheese, honey, and early "
    "vegetables. By the afternoon the church bells rang, and the smell of grilled fish drifted "
    "across the square from the small restaurant by the fountain.",
    "Good sleep matters more than most people think. Adults usually need between seven and nine "
    "hours each night, and going to bed and waking up at the same time every day helps the body "
    "keep a steady rhythm. Bright screens late in the evening, heavy meals and coffee in the "
    "afternoon can all make it harder to fall asleep, while daylight and exercise earlier in the "
    "day tend to make it easier.",
    "The ship left the harbour just before dawn, its sails grey against the pale sky. For three "
    "days the wind was steady and the sea calm, and the sailors spent their time mending ropes, "
    "cleaning the deck, and telling stories about the islands they hoped to reach. On the fourth "
    "morning, however, dark clouds gathered in the west, and the captain ordered the crew to "
    "lower the largest sail.",
]


def no_extra_buffer_types() -> None:
  """Loads weights without llama.cpp's extra CPU buffer types (runtime repacking, AMX). On this
  build (GGML_NATIVE, a CPU with AMX_INT8) the Q4_1 and Q4_K_M files segfault in a decode
  with them; Llama() has no argument for it, hence the patched defaults."""
  default = llama_cpp.llama_model_default_params

  def params():
    p = default()
    p.use_extra_bufts = False
    return p

  llama_cpp.llama.llama_cpp.llama_model_default_params = params


def add_bos(path: str) -> bool:
  f = gguf.GGUFReader(path).fields.get("tokenizer.ggml.add_bos_token")
  return bool(f.contents()) if f is not None else False


def _log_softmax_stats(logits_LxV: np.ndarray, tokens_L: np.ndarray) -> dict:
  x_LxV = logits_LxV.astype(np.float64)
  m_L = x_LxV.max(-1)
  lse_L = m_L + np.log(np.exp(x_LxV - m_L[:, None]).sum(-1))
  top_LxK = np.argpartition(-logits_LxV, TOP_K, axis=-1)[:, :TOP_K]
  top_logits_LxK = np.take_along_axis(logits_LxV, top_LxK, -1)
  order_LxK = np.argsort(-top_logits_LxK, -1, kind="stable")
  next_lp_L = np.full(len(tokens_L), np.nan)
  next_lp_L[:-1] = x_LxV[np.arange(len(tokens_L) - 1), tokens_L[1:]] - lse_L[:-1]
  return dict(top_ids=np.take_along_axis(top_LxK, order_LxK, -1).astype(np.int32),
              top_logits=np.take_along_axis(top_logits_LxK, order_LxK, -1).astype(np.float32),
              logsumexp=lse_L.astype(np.float32), next_logprob=next_lp_L.astype(np.float32))


def score(path: str, prompts: list[str], threads: int) -> dict:
  """Logit statistics at every position (KV cache in F32, as for tests/reference)."""
  llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_batch=N_CTX, logits_all=True,
                        n_threads=threads, verbose=False, type_k=F32, type_v=F32)
  bos = add_bos(path)
  rows = [np.array(llm.tokenize(p.encode(), add_bos=bos, special=False), np.int32)
          for p in prompts]
  short = [len(r) for r in rows if len(r) < 64]
  assert not short, f"prompts must tokenize to >= 64 ids, got {short}"
  N, L = len(rows), max(len(r) for r in rows)
  out = dict(tokens_NxL=np.full((N, L), -1, np.int32), lengths_N=np.array([len(r) for r in rows]),
             top_ids_NxLxK=np.full((N, L, TOP_K), -1, np.int32),
             top_logits_NxLxK=np.full((N, L, TOP_K), np.nan, np.float32),
             logsumexp_NxL=np.full((N, L), np.nan, np.float32),
             next_logprob_NxL=np.full((N, L), np.nan, np.float32))
  for n, row in enumerate(rows):
    llm.reset()
    llm.eval(row.tolist())
    st = _log_softmax_stats(np.array(llm.scores[:len(row)], np.float32), row)
    out["tokens_NxL"][n, :len(row)] = row
    out["top_ids_NxLxK"][n, :len(row)] = st["top_ids"]
    out["top_logits_NxLxK"][n, :len(row)] = st["top_logits"]
    out["logsumexp_NxL"][n, :len(row)] = st["logsumexp"]
    out["next_logprob_NxL"][n, :len(row)] = st["next_logprob"]
  lp = out["next_logprob_NxL"][~np.isnan(out["next_logprob_NxL"])]
  out["perplexity"] = np.float64(np.exp(-lp.astype(np.float64).mean()))
  out["n_scored"] = np.int64(lp.size)
  greedy = []
  for tok in llm.generate(rows[0].tolist(), top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                          repeat_penalty=1.0, reset=True):
    greedy.append(int(tok))
    if len(greedy) == N_GREEDY:
      break
  out["greedy_ids"] = np.array(greedy, np.int32)
  out["greedy_text"] = np.array(llm.detokenize(greedy).decode("utf-8", errors="replace"))
  return out


def time_decode(path: str, prompt_ids: list[int], threads: int) -> dict:
  """Batch 1 with llama.cpp's defaults (F16 KV cache): the prompt in one eval, then N_TIMED
  single-token evals, each fed the argmax of the previous logits."""
  llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_threads=threads, verbose=False)
  n_vocab = llm.n_vocab()

  def last_argmax():
    return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), (n_vocab,)).argmax())

  llm.eval(prompt_ids[:4])  # warm-up: first graph build, page in the weights
  llm.reset()
  t0 = time.perf_counter()
  llm.eval(prompt_ids)
  prompt_s = time.perf_counter() - t0
  step_s, tok = [], last_argmax()
  for _ in range(N_TIMED):
    t0 = time.perf_counter()
    llm.eval([tok])
    step_s.append(time.perf_counter() - t0)
    tok = last_argmax()
  ms = 1e3 * np.array(step_s)
  return dict(prompt_tokens=len(prompt_ids), prompt_ms=1e3 * prompt_s,
              decode_tokens=N_TIMED, decode_ms_per_token_mean=float(ms.mean()),
              decode_ms_per_token_median=float(np.median(ms)), threads=threads, kv_cache="f16")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--gguf", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--prompts", default=None)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--no_extra_bufts", action="store_true", help="see no_extra_buffer_types")
  args = ap.parse_args()
  if args.no_extra_bufts:
    no_extra_buffer_types()
  prompts = PROMPTS
  if args.prompts:
    text = pathlib.Path(args.prompts).read_text()
    prompts = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
  t0 = time.perf_counter()
  out = score(args.gguf, prompts, args.threads)
  score_s = time.perf_counter() - t0
  timing = time_decode(args.gguf, out["tokens_NxL"][0, :N_TIMING_PROMPT].tolist(), args.threads)
  build = dict(llama_cpp_python=llama_cpp.__version__, llama_cpp_commit=LLAMA_CPP_COMMIT,
               system_info=llama_cpp.llama_print_system_info().decode().strip(),
               extra_buffer_types=not args.no_extra_bufts)
  summary = dict(gguf=args.gguf, perplexity=float(out["perplexity"]),
                 n_scored=int(out["n_scored"]), lengths=out["lengths_N"].tolist(),
                 greedy_text=str(out["greedy_text"]), score_seconds=score_s, decode=timing,
                 build=build, logits_kv_cache="f32")
  np.savez_compressed(args.out, **out, timing_json=np.array(json.dumps(timing)),
                      build_json=np.array(json.dumps(build)))
  json_path = pathlib.Path(args.out).with_suffix(".json")
  json_path.write_text(json.dumps(summary, indent=1))
  print(json.dumps({k: v for k, v in summary.items() if k != "build"}, indent=1))


if __name__ == "__main__":
  main()
