"""The float32 twin of a quantized GGUF: every tensor dequantized with gguf.quants and written as
F32, all metadata copied (general.file_type set to ALL_F32), so llama.cpp runs exactly the float
weights that `hire import` dequantizes.

  python benchmarks/f32_twin.py IN.gguf OUT.gguf
"""

import argparse
import pathlib
import time

import gguf
import numpy as np


def copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
  """Every key-value pair but the header's and the architecture (the writer adds both)."""
  for key, field in reader.fields.items():
    if key.startswith("GGUF.") or key == gguf.Keys.General.ARCHITECTURE:
      continue
    vtype = field.types[0]
    if key == gguf.Keys.General.FILE_TYPE:
      writer.add_key_value(key, int(gguf.LlamaFileType.ALL_F32), vtype)
    elif vtype == gguf.GGUFValueType.ARRAY:
      writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
    else:
      writer.add_key_value(key, field.contents(), vtype)


def write_twin(src: str, dst: str) -> dict:
  """Writes the twin tensor by tensor (one dequantized tensor in memory at a time)."""
  t0 = time.perf_counter()
  reader = gguf.GGUFReader(src)
  arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
  writer = gguf.GGUFWriter(dst, arch)
  copy_fields(reader, writer)
  for t in reader.tensors:
    shape = [int(n) for n in reversed(t.shape)]  # numpy order: (rows, row length)
    writer.add_tensor_info(t.name, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_ti_data_to_file()
  for t in reader.tensors:
    x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
    writer.write_tensor_data(np.ascontiguousarray(x.reshape([int(n) for n in reversed(t.shape)])))
  writer.close()
  return dict(seconds=time.perf_counter() - t0, bytes=pathlib.Path(dst).stat().st_size,
              tensors=len(reader.tensors))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("src")
  ap.add_argument("dst")
  args = ap.parse_args()
  info = write_twin(args.src, args.dst)
  print(f"{args.dst}: {info['tensors']} tensors, {info['bytes'] / 2**20:.1f} MiB, "
        f"written in {info['seconds']:.1f} s")


if __name__ == "__main__":
  main()
