"""Holds the tokenizers `hire import` writes from a GGUF file to llama.cpp's own tokenizer.

For each model (fetched and hash-checked by hire_cli.lib.pretrained, or --gguf files), writes
the file's vocabulary (hire_cli.lib.gguf_vocab), tokenizes a fixed set of texts with it (the
first lines and documents of the shipped corpus' validation and test splits plus hand-picked
hard cases) through every path the project uses (lib/vocab.py; seqio's Python and tf.data
paths), and compares the ids with llama.cpp's `tokenize(add_bos=False, special=False)`, run in
a subprocess with the reference interpreter (HIRE_REF_PYTHON, default .venv-ref/bin/python,
which has llama-cpp-python). Prints identical/total per model and path, and the first mismatch.

  .venv/bin/python benchmarks/tokenizer_parity.py [--gguf=a.gguf,b.gguf]
"""

import gzip
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import gguf
from absl import app, flags

from hire_cli.lib import gguf_vocab, pretrained, vocab

flags.DEFINE_list("gguf", [], "GGUF files (default: the two pretrained models, fetched)")
flags.DEFINE_integer("lines", 100, "corpus lines per split (validation and test)")
flags.DEFINE_integer("docs", 3, "whole corpus documents per split (with their newlines)")
FLAGS = flags.FLAGS
ROOT = pathlib.Path(__file__).resolve().parents[1]
HARD = [
    "", " ", "  ", "   leading", "trailing   ", "a  b   c    d", "multiple     spaces\tand\ttabs",
    "\n", "\n\n\nnewlines\n\n", "line\r\nwindows", " \n \n", "\t\tindented\n\t\t\tcode",
    "1234567", "3.14159 and 1,000,000 and 2026-12-03", "x = 12345678901234567890",
    "café naïve über Straße", "é ü 日本語 中文 한국어", "emoji 🙂👍🏽 🇫🇷 and ❤️", "Привет, мир!",
    "def f(x):\n    return x ** 2  # square\n", "if (a != b) { return a->c[0]; }",
    "<html><body><div>hi</div></body></html>", "<start_of_turn>user\nhi<end_of_turn>",
    "<|im_start|>user\nhi<|im_end|>", "<bos><eos><pad><unk>", "<0x41> <unused0>",
    "I'm you're they've he'll we'd IT'S", "don't DON'T", "   \t \n  mixed   whitespace \t",
    "a" * 300, "ab" * 80 + " " * 40 + "\n" * 40, "\u00a0non-breaking\u2009thin\u3000ideographic",
    "zero\u200bwidth", "\x00nul\x01ctl", "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ", "http://example.com/a?b=c&d=e",
]
_REF = """
import json, sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
texts = json.load(sys.stdin)
json.dump([m.tokenize(t.encode(), add_bos=False, special=False) for t in texts], sys.stdout)
"""


def texts() -> list[str]:
  out = []
  for split in ("validation", "test"):
    with gzip.open(ROOT / "data" / "corpus" / f"{split}.jsonl.gz", "rt") as f:
      docs = [json.loads(line)["text"] for line in f]
    lines = [line for d in docs for line in d.split("\n") if line.strip()]
    out += lines[:FLAGS.lines] + docs[:FLAGS.docs]
  return out + HARD


def reference(path: str, items: list[str]) -> list[list[int]]:
  python = os.environ.get("HIRE_REF_PYTHON", str(ROOT / ".venv-ref" / "bin" / "python"))
  out = subprocess.run([python, "-c", _REF, path], input=json.dumps(items), capture_output=True,
                       text=True, check=True)
  return json.loads(out.stdout)


def encoders(path: pathlib.Path) -> dict:
  """Every path a run tokenizes through: TF-free lib/vocab.py, seqio's Python and tf.data."""
  from hire_cli.lib import tasks
  seq = tasks.vocabulary(str(path))
  fns = {"lib/vocab": vocab.load(str(path)).encode, "seqio": seq.encode,
         "seqio-tf": lambda t: seq.encode_tf(t).numpy().tolist()}
  if path.suffix == ".model":
    import sentencepiece
    fns["sentencepiece"] = sentencepiece.SentencePieceProcessor(model_file=str(path)).EncodeAsIds
  return fns


def compare(gguf_path: str, items: list[str], out_dir: pathlib.Path) -> bool:
  reader = gguf.GGUFReader(gguf_path)
  path = gguf_vocab.write_vocabulary(reader, out_dir)
  want = reference(gguf_path, items)
  ok = True
  for name, encode in encoders(path).items():
    got = [list(encode(t)) for t in items]
    same = sum(g == w for g, w in zip(got, want))
    print(f"{pathlib.Path(gguf_path).name} {path.name} {name:13s}: {same}/{len(items)} identical")
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    if bad:
      ok, i = False, bad[0]
      print(f"  first mismatch {items[i][:80]!r}\n    ours {got[i][:24]}\n    ref  {want[i][:24]}")
  dec = vocab.load(str(path))
  trips = sum(dec.decode(w) == t for w, t in zip(want, items))
  print(f"  decode(reference ids) == text: {trips}/{len(items)}")
  return ok


def main(argv):
  del argv
  paths = FLAGS.gguf or [str(pretrained.fetch(n)) for n in sorted(pretrained.MODELS)]
  items = texts()
  with tempfile.TemporaryDirectory() as tmp:
    ok = [compare(p, items, pathlib.Path(tmp) / str(i)) for i, p in enumerate(paths)]
  sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
  app.run(main)
