"""Makes the small random-weight models the tests and benchmarks use, from
numbers alone (no model hub): a Llama-architecture GGUF with a byte-fallback
vocabulary and a ChatML chat template, and a LLaVA-style image projector for
llama.cpp's image path. Deterministic for a seed.

usage: make-tiny-model.py llm OUT.gguf [--embd 64] [--layers 2] [--seed 7]
       make-tiny-model.py mmproj OUT.gguf --embd N [--seed 7]
The weights are random: what such a model says is noise, but it loads in
milliseconds, generates over a thousand tokens a second, and at temperature
0 says the same thing every time."""

import argparse
import sys

import gguf
import numpy as np

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def vocabulary():
    normal, unknown, control, byte = (
        gguf.TokenType.NORMAL, gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.BYTE)
    pieces = [("<unk>", 0.0, unknown), ("<s>", 0.0, control), ("</s>", 0.0, control),
              ("<|im_start|>", 0.0, control), ("<|im_end|>", 0.0, control)]
    pieces += [(f"<0x{b:02X}>", 0.0, byte) for b in range(256)]
    printable = [chr(c) for c in range(33, 127)]
    pieces += [(c, -1.0, normal) for c in printable]
    pieces += [("\u2581", -1.0, normal)] + [("\u2581" + c, -0.5, normal) for c in printable]
    for word in ("up down left right move wall goal the a to is").split():
        pieces.append(("\u2581" + word, 0.0, normal))
    seen, out = set(), []
    for p in pieces:
        if p[0] not in seen:
            seen.add(p[0])
            out.append(p)
    return out


def llm(path, embd, layers, seed):
    rng = np.random.default_rng(seed)
    heads, ff = 4, embd * 2
    vocab = vocabulary()

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("ludus-tiny-random")
    w.add_context_length(4096)
    w.add_embedding_length(embd)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(embd // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(vocab))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([p[0] for p in vocab])
    w.add_token_scores([p[1] for p in vocab])
    w.add_token_types([int(p[2]) for p in vocab])
    w.add_bos_token_id(1)
    w.add_eos_token_id(4)
    w.add_unk_token_id(0)
    w.add_pad_token_id(0)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)
    w.add_tensor("token_embd.weight", weights(len(vocab), embd))
    for i in range(layers):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.ones(embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(b + name + ".weight", weights(embd, embd))
        w.add_tensor(b + "ffn_norm.weight", np.ones(embd, np.float32))
        w.add_tensor(b + "ffn_gate.weight", weights(ff, embd))
        w.add_tensor(b + "ffn_up.weight", weights(ff, embd))
        w.add_tensor(b + "ffn_down.weight", weights(embd, ff))
    w.add_tensor("output_norm.weight", np.ones(embd, np.float32))
    w.add_tensor("output.weight", weights(len(vocab), embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def mmproj(path, embd, seed):
    """A two-layer CLIP vision encoder and an MLP projector into `embd`."""
    rng = np.random.default_rng(seed)
    size, patch, hidden, heads, ff, layers = 64, 16, 64, 4, 128, 2
    n_patches = (size // patch) ** 2

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w = gguf.GGUFWriter(path, "clip")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", size)
    w.add_uint32("clip.vision.patch_size", patch)
    w.add_uint32("clip.vision.embedding_length", hidden)
    w.add_uint32("clip.vision.feed_forward_length", ff)
    w.add_uint32("clip.vision.projection_dim", embd)
    w.add_uint32("clip.vision.attention.head_count", heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_uint32("clip.vision.block_count", layers)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("general.file_type", 0)
    w.add_tensor("v.patch_embd.weight", weights(hidden, 3, patch, patch))
    w.add_tensor("v.class_embd", weights(hidden))
    w.add_tensor("v.position_embd.weight", weights(n_patches + 1, hidden))
    w.add_tensor("v.pre_ln.weight", np.ones(hidden, np.float32))
    w.add_tensor("v.pre_ln.bias", np.zeros(hidden, np.float32))
    for i in range(layers):
        b = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(b + name + ".weight", weights(hidden, hidden))
            w.add_tensor(b + name + ".bias", np.zeros(hidden, np.float32))
        for name in ("ln1", "ln2"):
            w.add_tensor(b + name + ".weight", np.ones(hidden, np.float32))
            w.add_tensor(b + name + ".bias", np.zeros(hidden, np.float32))
        w.add_tensor(b + "ffn_up.weight", weights(ff, hidden))
        w.add_tensor(b + "ffn_up.bias", np.zeros(ff, np.float32))
        w.add_tensor(b + "ffn_down.weight", weights(hidden, ff))
        w.add_tensor(b + "ffn_down.bias", np.zeros(hidden, np.float32))
    w.add_tensor("mm.0.weight", weights(embd, hidden))
    w.add_tensor("mm.0.bias", np.zeros(embd, np.float32))
    w.add_tensor("mm.2.weight", weights(embd, embd))
    w.add_tensor("mm.2.bias", np.zeros(embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["llm", "mmproj"])
    ap.add_argument("out")
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if a.kind == "llm":
        llm(a.out, a.embd, a.layers, a.seed)
    else:
        mmproj(a.out, a.embd, a.seed)
    print(a.out)


if __name__ == "__main__":
    sys.exit(main())
