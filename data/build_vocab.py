#!/usr/bin/env python3
"""Train the SentencePiece unigram vocabulary shipped as ``data/vocab/hire_32k.model``.

Trains on the *train* split of ``data/corpus`` only (never validation/test, never eval data).
Ids match ``seqio.SentencePieceVocabulary``: pad=0, eos=1, unk=2, no bos; byte_fallback keeps
every string encodable.  Input is one sentence (prose) or line (code, lists, tables) per
training example; SentencePiece samples at most ``--input-sentence-size`` of them.

Usage:  python3 data/build_vocab.py [--vocab-size 32000] [--corpus-dir DIR] [--out PATH]
Needs:  pip install sentencepiece   (seqio optional, used for the final check)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# sentence boundary: after . ! ? (optionally followed by a closing quote/bracket) + whitespace
_SENT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
MAX_CHARS = 2000  # longer lines are cut at spaces (SentencePiece drops > max_sentence_length bytes)


def training_lines(train_path: Path):
    with gzip.open(train_path, "rt", encoding="utf-8") as f:
        for record in f:
            text = json.loads(record)["text"]
            for para in text.split("\n\n"):
                for line in para.split("\n"):
                    line = line.strip()
                    if not line:
                        continue
                    for sent in _SENT.split(line):
                        while len(sent) > MAX_CHARS:
                            cut = sent.rfind(" ", 0, MAX_CHARS)
                            cut = cut if cut > 0 else MAX_CHARS
                            yield sent[:cut]
                            sent = sent[cut:].lstrip()
                        if sent:
                            yield sent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--corpus-dir", default=str(HERE / "corpus"))
    ap.add_argument("--out", default=None, help="model path (default data/vocab/hire_<N/1000>k.model)")
    ap.add_argument("--input-sentence-size", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-vocab-file", action="store_true", help="also write the .vocab text file")
    args = ap.parse_args(argv)

    try:
        import sentencepiece as spm
    except ImportError:
        sys.exit("needs sentencepiece: pip install sentencepiece")

    out = Path(args.out or HERE / "vocab" / f"hire_{args.vocab_size // 1000}k.model").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    train_path = Path(args.corpus_dir) / "train.jsonl.gz"
    if not train_path.exists():
        sys.exit(f"{train_path} missing: run data/build_corpus.py first")

    tmp = Path(tempfile.mkdtemp(prefix="hire_vocab_"))
    try:
        text_file = tmp / "train.txt"
        n = 0
        with open(text_file, "w", encoding="utf-8") as f:
            for line in training_lines(train_path):
                f.write(line + "\n")
                n += 1
        print(f"{n:,} training sentences/lines from {train_path}", flush=True)

        if hasattr(spm, "set_random_generator_seed"):
            spm.set_random_generator_seed(args.seed)
        t0 = time.time()
        # relative paths: the trainer spec stored in the model records them, and a random temp
        # dir name would make the .model bytes differ between runs
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            _train(spm, args)
        finally:
            os.chdir(cwd)
        train_s = time.time() - t0
        shutil.copyfile(tmp / "sp.model", out)
        if args.keep_vocab_file:
            shutil.copyfile(tmp / "sp.vocab", out.with_suffix(".vocab"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"trained in {train_s:.1f}s -> {out} ({out.stat().st_size:,} bytes)")
    verify(out, Path(args.corpus_dir), args.vocab_size)


def _train(spm, args):
    spm.SentencePieceTrainer.train(
        input="train.txt",
        model_prefix="sp",
        model_type="unigram",
        vocab_size=args.vocab_size,
        character_coverage=0.9999,
        byte_fallback=True,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        input_sentence_size=args.input_sentence_size,
        shuffle_input_sentence=True,
        num_threads=args.threads,
        minloglevel=1,
    )


def verify(model_path: Path, corpus_dir: Path, vocab_size: int):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    assert sp.get_piece_size() == vocab_size, sp.get_piece_size()
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    # tokens per word on validation text
    n_words = n_tokens = 0
    with gzip.open(corpus_dir / "validation.jsonl.gz", "rt", encoding="utf-8") as f:
        for record in f:
            text = json.loads(record)["text"]
            n_words += len(text.split())
            n_tokens += len(sp.encode(text))
    print(f"sentencepiece: {vocab_size} pieces, pad/eos/unk/bos = 0/1/2/-1; "
          f"validation: {n_tokens / max(n_words, 1):.3f} tokens/word ({n_tokens:,} tokens)")
    sample = "Emma Woodhouse, handsome, clever, and rich — naïve “quotes” 日本 🙂 x**2 + 1"
    ids = sp.encode(sample)
    assert sp.decode(ids) == sample, sp.decode(ids)  # byte_fallback: nothing is lost
    try:
        import seqio
    except Exception as e:  # noqa: BLE001
        print(f"seqio not importable ({type(e).__name__}); checked with sentencepiece only")
        return
    vocab = seqio.SentencePieceVocabulary(str(model_path))
    assert vocab.vocab_size == vocab_size, vocab.vocab_size
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    ids = vocab.encode(sample)
    assert vocab.decode(ids) == sample
    print(f"seqio.SentencePieceVocabulary OK: vocab_size={vocab.vocab_size}, "
          f"pad/eos/unk = {vocab.pad_id}/{vocab.eos_id}/{vocab.unk_id}")


if __name__ == "__main__":
    main()
