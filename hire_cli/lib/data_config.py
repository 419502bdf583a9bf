"""Which data a run reads; light, so that runs that never read data need no input pipeline."""

import dataclasses

from hire_cli import validate

SHIPPED_TASK = "hire_corpus_lm"


@dataclasses.dataclass(frozen=True)
class DataConfig:
  task: str = SHIPPED_TASK  # seqio task: hire_corpus_lm | lm1b_lm | c4_lm
  vocab_path: str = ""  # SentencePiece model; "" = data/vocab/hire_32k.model
  seq_len: int = 128  # tokens per row
  tfds_data_dir: str = ""  # TFDS data_dir for public tasks; "" = default
  max_rows: int = 0  # cap on rows materialised per split (0 = all); for huge public datasets

  def __post_init__(self):
    validate.fields(self)
