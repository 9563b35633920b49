"""Writes a GGUF file's model with every tensor dequantized to F32, the
metadata unchanged: `dequantize-gguf.py SRC.gguf OUT.gguf`. llama.cpp then
computes in F32 as ludus's built-in backend does (on a quantized file it
also quantizes the activations, which moves log-probabilities by up to a
few tenths of a nat), so the two can be compared token for token."""

import sys

import gguf
import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: dequantize-gguf.py SRC.gguf OUT.gguf")
    src, out = sys.argv[1], sys.argv[2]
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(out, arch)
    skip = {"general.architecture", "general.file_type", "general.quantization_version"}
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        w.add_key_value(key, field.contents(), vtype, sub_type=sub)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in r.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]
        w.add_tensor(t.name, values.reshape(shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
