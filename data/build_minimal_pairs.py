#!/usr/bin/env python3
"""Build the minimal-pair tasks shipped in ``data/downstream/`` (the BLiMP idea, on our corpus).

Each item is a sentence from the held-out ``test`` split of ``data/corpus/`` (never ``train`` or
``validation``) against the same sentence with one controlled defect. A language model should
give the original the higher log-likelihood; a model trained for a few hundred steps on 3.6M
words already does, well above chance, so a difference between dense and HiRE can show.

* ``mp_swap``       two adjacent words swapped ("the old house" -> "old the house")
* ``mp_replace``    one word replaced by a word of about the same frequency in ``train`` (a
                    unigram model cannot tell the two apart; context can)
* ``mp_agreement``  number agreement broken: is <-> are, was <-> were, has <-> have, does <-> do
                    (a few flips stay grammatical, e.g. "if I were" -> "if I was": noise that
                    affects dense and HiRE alike)

Only prose sources are used (not ``pydoc``); a sentence has 6-40 words. The shared words before
the defect are the prompt (``inputs``) and the two endings (six words from the defect on, so that
they fit the 16 target tokens of downstream scoring) are the ``choices``, in random order, so
comparing the choices' summed log-likelihoods compares the two word sequences. Output:
``mp_<kind>.jsonl`` (``{"id", "inputs", "choices", "label"}``) and their entries in
``manifest.json`` (kind ``minimal_pair``; other entries are kept). Fixed seed: reruns are
byte-identical.

Usage:  python3 data/build_minimal_pairs.py [--corpus-dir DIR] [--out-dir DIR] [--per-kind N]
(stdlib only; reads the corpus written by build_corpus.py).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import random
import re

SEED = 20261128
KINDS = ("swap", "replace", "agreement")
AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have",
             "have": "has", "does": "do", "do": "does"}
WORD = re.compile(r"^[a-z]+$")
SOURCES = ("austen", "brown", "web")
ENDING = 6  # words kept from the defect on (both endings alike): the choices fit 16 tokens
HERE = pathlib.Path(__file__).resolve().parent


def read_split(corpus: pathlib.Path, split: str) -> list[dict]:
  with gzip.open(corpus / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def sentences(docs: list[dict]) -> list[list[str]]:
  """Prose sentences of 6-40 whitespace words, in corpus order."""
  out = []
  for doc in docs:
    if doc["source"] not in SOURCES:
      continue
    for para in doc["text"].split("\n"):
      for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", para.strip()):
        words = sent.split()
        if 6 <= len(words) <= 40 and sent[-1] in ".!?\"'":
          out.append(words)
  return out


def frequency_neighbours(train: list[dict]) -> dict[str, list[str]]:
  """For each lowercase word seen >= 5 times in train: the words just above and below it in
  the frequency ranking (same-frequency candidates for `replace`)."""
  counts = collections.Counter(w for d in train for w in d["text"].split() if WORD.match(w))
  ranked = [w for w, c in counts.most_common() if c >= 5]
  return {w: ranked[max(i - 3, 0):i] + ranked[i + 1:i + 4] for i, w in enumerate(ranked)}


def defect(words: list[str], kind: str, rng: random.Random, neighbours) -> tuple[int, list[str]]:
  """(position of the first changed word, the defective sentence), or (-1, []) if none fits."""
  spots = list(range(1, len(words) - 1))
  rng.shuffle(spots)
  for i in spots:
    w = words[i]
    if kind == "swap" and WORD.match(w) and WORD.match(words[i + 1]) and w != words[i + 1]:
      return i, words[:i] + [words[i + 1], w] + words[i + 2:]
    if kind == "replace" and w in neighbours and neighbours[w]:
      return i, words[:i] + [rng.choice(neighbours[w])] + words[i + 1:]
    if kind == "agreement" and w in AGREEMENT:
      return i, words[:i] + [AGREEMENT[w]] + words[i + 1:]
  return -1, []


def pairs(sents: list[list[str]], kind: str, per_kind: int, neighbours) -> list[dict]:
  rng = random.Random(f"{SEED}-{kind}")
  order = list(range(len(sents)))
  rng.shuffle(order)
  out = []
  for s in order:
    words = sents[s]
    i, bad = defect(words, kind, rng, neighbours)
    if i < 0:
      continue
    good_end, bad_end = " " + " ".join(words[i:i + ENDING]), " " + " ".join(bad[i:i + ENDING])
    label = rng.randrange(2)
    choices = [good_end, bad_end] if label == 0 else [bad_end, good_end]
    out.append({"id": len(out), "inputs": " ".join(words[:i]), "choices": choices,
                "label": label})
    if len(out) == per_kind:
      break
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--corpus-dir", default=str(HERE / "corpus"))
  p.add_argument("--out-dir", default=str(HERE / "downstream"))
  p.add_argument("--per-kind", type=int, default=1000)
  args = p.parse_args(argv)
  corpus, out = pathlib.Path(args.corpus_dir), pathlib.Path(args.out_dir)
  sents = sentences(read_split(corpus, "test"))
  neighbours = frequency_neighbours(read_split(corpus, "train"))
  manifest_path = out / "manifest.json"
  manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"tasks": []}
  manifest["tasks"] = [t for t in manifest["tasks"] if t["kind"] != "minimal_pair"]
  for kind in KINDS:
    records = pairs(sents, kind, args.per_kind, neighbours)
    fname = f"mp_{kind}.jsonl"
    with open(out / fname, "w", encoding="utf-8", newline="\n") as f:
      for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
    manifest["tasks"].append({
        "name": f"mp_{kind}", "kind": "minimal_pair", "file": fname, "n": len(records),
        "source": f"data/build_minimal_pairs.py ({kind}) from data/corpus/test.jsonl.gz (held-out "
                  "split of the pretraining corpus, sources austen/brown/web)",
        "license": "as the corpus sources (see data/README.md)", "canary": None})
    print(f"wrote {out / fname}: {len(records)} pairs from {len(sents)} sentences")
  with open(manifest_path, "w", encoding="utf-8", newline="\n") as f:
    json.dump(manifest, f, indent=1, ensure_ascii=False)
    f.write("\n")


if __name__ == "__main__":
  main()
