"""A TFDS builder for the shipped English corpus (`data/corpus/*.jsonl.gz`), built offline.

The corpus files are the builder's manual_dir; nothing is downloaded. `prepare()` builds it
into `paths.tfds_data_dir()` (again when the corpus files change), after which
`tfds.load("hire_corpus", data_dir=...)` and `seqio.TfdsDataSource` read it like any registered
dataset; `CorpusSource` is that seqio source, building on first use.
"""

import fcntl
import gzip
import hashlib
import json
import pathlib
import shutil

import seqio
import tensorflow_datasets as tfds

from hire_cli import errors, paths, quiet
from hire_cli.lib import text_source

SPLITS = ("train", "validation", "test")


class HireCorpus(tfds.core.GeneratorBasedBuilder):
  """Real English text: World English Bible, Jane Austen, Brown corpus, Python docs."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release, built from data/corpus."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `python data/build_corpus.py`; it writes data/corpus/."

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Shipped offline English pretraining corpus of the hire toolkit.",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "source": tfds.features.Text(),
            "text": tfds.features.Text(),
        }),
        supervised_keys=None,
        homepage="data/README.md",
    )

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    return {split: self._generate_examples(root / f"{split}.jsonl.gz") for split in SPLITS}

  def _generate_examples(self, path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
      for line in f:
        ex = json.loads(line)
        yield ex["id"], {"id": ex["id"], "source": ex["source"], "text": ex["text"]}


def prepare(data_dir: pathlib.Path | None = None, manual_dir: pathlib.Path | None = None):
  """Builds the dataset if it is not built yet; returns the TFDS data_dir."""
  data_dir = pathlib.Path(data_dir or paths.tfds_data_dir())
  manual_dir = pathlib.Path(manual_dir or paths.corpus_dir())
  missing = [s for s in SPLITS if not (manual_dir / f"{s}.jsonl.gz").is_file()]
  if missing:
    raise errors.UserError(
        f"corpus split(s) {missing} not found in {manual_dir}; run `python data/build_corpus.py` "
        "or train on your own text with TASK=text_files and TRAIN_FILES/EVAL_FILES")
  tfds.disable_progress_bar()
  for s in SPLITS:
    with gzip.open(manual_dir / f"{s}.jsonl.gz", "rt", encoding="utf-8") as f:
      if not f.readline().strip():
        raise errors.UserError(f"corpus split {s} ({manual_dir / f'{s}.jsonl.gz'}) is empty; "
                               "rebuild it with `python data/build_corpus.py`")
  # TFDS warns of the folder it has not built yet and announces the build: not for the user.
  data_dir.mkdir(parents=True, exist_ok=True)
  # Two processes started on a fresh clone (two commands, or parallel test workers) build once:
  # the second waits for the first and then finds the build done.
  with open(data_dir / ".hire_corpus.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    with quiet.library_noise_dropped(), quiet.library_prints_dropped():
      _build(data_dir, manual_dir)
  return data_dir


def _build(data_dir: pathlib.Path, manual_dir: pathlib.Path) -> None:
  builder = HireCorpus(data_dir=str(data_dir))
  # A build records the corpus it was made from; a changed corpus is built again, never read stale.
  stamp = pathlib.Path(builder.data_dir) / "SOURCE_FINGERPRINT"
  source = source_fingerprint(manual_dir)
  if builder.is_prepared() and (not stamp.is_file() or stamp.read_text() != source):
    shutil.rmtree(builder.data_dir)
    builder = HireCorpus(data_dir=str(data_dir))
  if not builder.is_prepared():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), try_download_gcs=False))
    stamp.write_text(source)


def source_fingerprint(manual_dir: pathlib.Path | None = None) -> str:
  """A hash of the corpus files (paths, sizes, contents) and the builder's version."""
  manual_dir = pathlib.Path(manual_dir or paths.corpus_dir())
  sigs = [text_source.file_signature(str(manual_dir / f"{s}.jsonl.gz")) for s in SPLITS
          if (manual_dir / f"{s}.jsonl.gz").is_file()]
  return hashlib.sha1(json.dumps([str(HireCorpus.VERSION), sigs]).encode()).hexdigest()


class CorpusSource(seqio.TfdsDataSource):
  """The shipped corpus as a seqio source: built (offline) on first read, fingerprinted by its
  files."""

  def __init__(self):
    super().__init__(tfds_name=f"hire_corpus:{HireCorpus.VERSION}",
                     tfds_data_dir=str(paths.tfds_data_dir()), splits=SPLITS)

  def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
    prepare()
    return super().get_dataset(split, shuffle, seed, shard_info, **kwargs)

  def list_shards(self, split):
    prepare()
    return super().list_shards(split)

  def fingerprint(self, split: str) -> dict:
    del split
    return {"tfds": self.tfds_dataset.name, "corpus": source_fingerprint()}
