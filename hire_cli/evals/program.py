"""What a compiled program reads of its parameters, from its optimized HLO (`as_text()`).

XLA's `cost_analysis()` counts a gather as reading its whole operand, so it cannot tell a HiRE
step that gathers k' rows of `W` from one that reads all of `W`. Here each parameter's uses are
followed through fusions and bitcasts: a parameter used only by gathers or dynamic slices reads
what they produce; any other use reads it whole."""

import math
import re

_COMP = re.compile(r"^(ENTRY )?%(\S+) \((.*)\) -> .* \{$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*?) ([a-z][a-z0-9\-_.]*)\(([^)]*)\)(.*)$")
_OP_NAME = re.compile(r'op_name="params\[(.*?)\]"')
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "s8": 1,
                "u8": 1, "pred": 1, "f64": 8, "s64": 8, "u64": 8, "s4": 0.5, "u4": 0.5}
SELECTING = ("gather", "dynamic-slice")
TRANSPARENT = ("bitcast", "reshape")


def _nbytes(shape: str) -> float:
  """Bytes of an array shape like `f32[500,64]{1,0}` (tuples: the sum of their elements)."""
  total = 0.0
  for dt, dims in re.findall(r"([a-z]+\d*)\[([\d,]*)\]", shape):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _DTYPE_BYTES.get(dt, 4)
  return total


def _parse(hlo: str) -> tuple[dict, str]:
  """({computation: {instruction: (shape, opcode, [operands], attrs, argument text)}},
  entry name)."""
  comps, entry, cur = {}, None, None
  for line in hlo.splitlines():
    m = _COMP.match(line)
    if m:
      cur = comps.setdefault(m.group(2), {})
      entry = m.group(2) if m.group(1) else entry
      continue
    m = _INSTR.match(line)
    if m and cur is not None:
      name, shape, op, args, attrs = m.groups()
      operands = re.findall(r"%([\w.\-]+)", args)
      cur[name] = (shape, op, operands, attrs, args)
  return comps, entry


def _reads(comps: dict, comp: str, name: str) -> float | None:
  """Bytes the uses of instruction `name` in `comp` read of it: the selected slices when every
  use selects (following fusions and bitcasts), else None (read whole)."""
  total = 0.0
  for user, (shape, op, operands, attrs, _) in comps[comp].items():
    if name not in operands:
      continue
    if op in SELECTING and operands[0] == name:
      total += _nbytes(shape)
    elif op in TRANSPARENT:
      inner = _reads(comps, comp, user)
      if inner is None:
        return None
      total += inner
    elif op == "fusion":
      called = _CALLS.search(attrs).group(1)
      for i, operand in enumerate(operands):
        if operand != name:
          continue
        param = next(n for n, (_, o, _, _, arg) in comps[called].items()
                     if o == "parameter" and int(arg) == i)
        inner = _reads(comps, called, param)
        if inner is None:
          return None
        total += inner
    else:
      return None
  return total


def param_reads(hlo: str) -> dict:
  """{"head/w": {"bytes": read, "size": whole, "gathered": bool}, ...} for every parameter of
  the entry computation that is part of `params` (weights; the cache and inputs are left out)."""
  comps, entry = _parse(hlo)
  out = {}
  for name, (shape, op, _, attrs, _) in comps[entry].items():
    m = _OP_NAME.search(attrs)
    if op != "parameter" or not m:
      continue
    key = "/".join(k.replace("\\", "").strip("'") for k in m.group(1).split("]["))
    size = _nbytes(shape)
    selected = _reads(comps, entry, name)
    out[key] = {"bytes": size if selected is None else selected, "size": size,
                "gathered": selected is not None}
  return out


_COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def collectives(hlo: str) -> list[dict]:
  """Every cross-device op of a compiled program: {"op", "shape", "elements"} (the elements of
  its result; for an all-gather what every device receives), in program order."""
  comps, _ = _parse(hlo)
  out = []
  for comp in comps.values():
    for shape, op, _, _, _ in comp.values():
      base = op.removesuffix("-start")
      if base in _COLLECTIVES and not op.endswith("-done"):
        elements = sum(math.prod(int(d) for d in filter(None, dims.split(",")))
                       for _, dims in re.findall(r"([a-z]+\d*)\[([\d,]*)\]", shape))
        out.append({"op": base, "shape": shape.split("{")[0], "elements": elements})
  return out


_NOT_KERNELS = ("parameter", "constant", "bitcast", "tuple", "get-tuple-element")


def kernel_counts(hlo: str) -> dict:
  """{opcode: count} of the kernels a compiled program's entry computation runs (each fusion,
  dot, copy, ...; parameters, constants, bitcasts and tuples are free), most frequent first."""
  comps, entry = _parse(hlo)
  counts = {}
  for _, op, _, _, _ in comps[entry].values():
    if op not in _NOT_KERNELS:
      counts[op] = counts.get(op, 0) + 1
  return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
