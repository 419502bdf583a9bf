"""A seqio Vocabulary around a HF `tokenizers` tokenizer.json (what `hire import` writes for
byte-level BPE models such as SmolLM2), for the tasks' tf.data pipelines.

Padding follows seqio, not the file: seqio pads with id 0 (`seqio.Vocabulary.pad_id`), and the
feature converters and losses read 0 as padding. For SmolLM2 id 0 is `<|endoftext|>`, a control
token that encoding text never produces, so nothing real is mistaken for padding; the file's own
pad id (SmolLM2: 2, `<|im_end|>`, also its EOS) is kept as `file_pad_id`.
"""

import numpy as np
import seqio
import tensorflow as tf

from hire_cli.lib import vocab


class TokenizersVocabulary(seqio.Vocabulary):
  def __init__(self, path: str):
    self._vocab = vocab.JsonVocabulary(path)
    super().__init__(extra_ids=0)

  @property
  def tokenizer_file(self) -> str:
    return self._vocab.path

  @property
  def file_pad_id(self) -> int:
    return self._vocab.file_pad_id

  @property
  def bos_id(self) -> int | None:
    return self._vocab.bos_id if self._vocab.bos_id >= 0 else None

  @property
  def eos_id(self) -> int | None:
    return self._vocab.eos_id if self._vocab.eos_id >= 0 else None

  @property
  def unk_id(self) -> int | None:
    return self._vocab.unk_id if self._vocab.unk_id >= 0 else None

  @property
  def _base_vocab_size(self) -> int:
    return self._vocab.vocab_size

  def _encode(self, s: str) -> list[int]:
    return self._vocab.encode(s)

  def _decode(self, ids) -> str:
    return self._vocab.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def _encode_np(self, texts_N):
    ids = [self._vocab.encode(t.decode("utf-8")) for t in texts_N.reshape(-1)]
    return (np.asarray([i for row in ids for i in row], np.int32),
            np.asarray([len(row) for row in ids], np.int64))

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """A string (a 1-D int32 tensor back) or a 1-D batch of strings (a ragged one back)."""
    s = tf.convert_to_tensor(s, tf.string)
    values, lengths = tf.numpy_function(self._encode_np, [tf.reshape(s, [-1])],
                                        (tf.int32, tf.int64), stateful=False)
    values.set_shape([None])
    if s.shape.rank == 0:
      return values
    lengths.set_shape([None])
    return tf.RaggedTensor.from_row_lengths(values, lengths)

  def _decode_np(self, ids_NxL):
    flat = ids_NxL.reshape(-1, ids_NxL.shape[-1])
    return np.asarray([self._decode(row).encode("utf-8") for row in flat],
                      object).reshape(ids_NxL.shape[:-1])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """1-D ids to a string, or a batch of them to a batch of strings (rank minus one)."""
    if isinstance(ids, tf.RaggedTensor):
      ids = ids.to_tensor(default_value=self.pad_id)
    ids = tf.convert_to_tensor(ids)
    out = tf.numpy_function(self._decode_np, [tf.cast(ids, tf.int32)], tf.string, stateful=False)
    out.set_shape(ids.shape[:-1])
    return out

  def __eq__(self, other) -> bool:
    return isinstance(other, TokenizersVocabulary) and other.tokenizer_file == self.tokenizer_file

  def __hash__(self) -> int:
    return hash(self.tokenizer_file)

  def __str__(self) -> str:
    return f"TokenizersVocabulary(file={self.tokenizer_file}, size={self.vocab_size})"
