"""Every shipped experiment parses and binds a model that builds (abstractly: shapes only, so the
1b and base models cost nothing)."""

import gin
import jax
import pytest

from hire_cli import paths
from hire_cli.cli import gin_utils
from hire_cli.lib import state
from hire_cli.nn.config import ModelConfig

EXPERIMENTS = sorted((paths.REPO_ROOT / "configs" / "experiments").glob("*.gin"))


@pytest.fixture(autouse=True)
def _clean_gin():
  yield
  gin.clear_config()


def test_there_are_experiments():
  assert len(EXPERIMENTS) >= 4, EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_parses_and_builds_its_model(path):
  gin_utils.parse([str(path.relative_to(paths.REPO_ROOT))], [])
  cfg = gin.query_parameter("%MODEL").scoped_configurable_fn()
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
      f"{path.name}: hire_softmax={cfg.hire_softmax}, hire_ffn={cfg.hire_ffn}")

  _, params, _ = state.abstract_model(cfg)
  leaves = jax.tree.leaves(params)
  assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves), "allocated params"
  n = sum(x.size for x in leaves)
  # num_params counts the dense model; HiRE approximators only add to it.
  assert n == cfg.num_params() if variant == "dense" else n >= cfg.num_params(), (n, cfg)
