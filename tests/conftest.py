"""Shared fixtures: tiny model sizes and quick CPU compiles."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from hire_cli.nn.config import ModelConfig  # noqa: E402


@pytest.fixture
def tiny_cfg():
  return ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=2, d_head=16, d_ff=64,
                     max_len=32)
