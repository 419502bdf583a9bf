"""Every shipped experiment parses and binds a model that builds (abstractly: shapes only, so the
1b and base models cost nothing)."""

import dataclasses
import json
import sys

import gin
import jax
import pytest

from hire_cli import errors, paths
from hire_cli.cli import gin_utils
from hire_cli.lib import state
from hire_cli.nn.config import HiReFfnConfig, ModelConfig

EXPERIMENTS = sorted((paths.REPO_ROOT / "configs" / "experiments").glob("*.gin"))


@pytest.fixture(autouse=True)
def _clean_gin():
  yield
  gin.clear_config()


def test_there_are_experiments():
  assert len(EXPERIMENTS) >= 4, EXPERIMENTS


def _each_experiment(check) -> list[str]:
  """Runs `check(path)` on every experiment; returns one line per experiment that failed it."""
  bad = []
  for path in EXPERIMENTS:
    try:
      gin_utils.parse([str(path.relative_to(paths.REPO_ROOT))], [])
      check(path, gin.query_parameter("%MODEL").scoped_configurable_fn())
    except Exception as e:  # noqa: BLE001 -- every experiment is checked, each failure named
      bad.append(f"{path.name}: {type(e).__name__}: {e}")
    finally:
      gin.clear_config()
  return bad


def _builds_its_model(path, cfg):
  assert isinstance(cfg, ModelConfig), cfg
  # The file name says the variant: <size>_<variant>.gin.
  sizes = sorted((m.stem for m in (paths.REPO_ROOT / "configs" / "models").glob("*.gin")),
                 key=len, reverse=True)
  size = next((s for s in sizes if path.stem.startswith(s + "_")), None)
  assert size is not None, f"{path.name} does not start with a configs/models/ size"
  variant = path.stem[len(size) + 1:]
  assert variant == "dense" or variant.startswith("hire"), variant
  wants_softmax = variant.startswith("hire") and "ffn" not in variant
  wants_ffn = variant.startswith("hire") and "softmax" not in variant
  assert (cfg.hire_softmax is not None, cfg.hire_ffn is not None) == (wants_softmax, wants_ffn), (
      f"hire_softmax={cfg.hire_softmax}, hire_ffn={cfg.hire_ffn}")

  _, params, _ = state.abstract_model(cfg)
  leaves = jax.tree.leaves(params)
  assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves), "allocated params"
  n = sum(x.size for x in leaves)
  # num_params counts the dense model; HiRE approximators only add to it.
  assert n == cfg.num_params() if variant == "dense" else n >= cfg.num_params(), (n, cfg)


def test_every_experiment_parses_and_builds_its_model():
  bad = _each_experiment(_builds_its_model)
  assert not bad, "\n".join(bad)


def _rebuilds_from_dict(path, cfg):
  saved = json.loads(json.dumps(dataclasses.asdict(cfg)))
  assert ModelConfig.from_dict(saved) == cfg


def test_from_dict_rebuilds_the_saved_model_description():
  """What a checkpoint saves as meta["model"] (JSON of `dataclasses.asdict`) rebuilds the same
  config, HiRE sub-configs included, with no hand conversion: for every experiment."""
  bad = _each_experiment(_rebuilds_from_dict)
  assert not bad, "\n".join(bad)


def test_a_failing_experiment_is_named(monkeypatch):
  broken = paths.REPO_ROOT / "configs" / "experiments" / "tiny_dense.gin"
  monkeypatch.setattr(sys.modules[__name__], "EXPERIMENTS", [broken, broken])

  def check(path, cfg):
    assert cfg.d_model < 0, "planted"

  assert [b.split(":")[0] for b in _each_experiment(check)] == ["tiny_dense.gin"] * 2


def test_from_dict_refuses_a_field_it_does_not_know():
  saved = dataclasses.asdict(ModelConfig(hire_ffn=HiReFfnConfig()))
  saved["hire_ffn"]["approx"]["rnak"] = 8
  with pytest.raises(errors.UserError, match="rnak"):
    ModelConfig.from_dict(saved)
