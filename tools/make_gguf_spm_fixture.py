"""A SentencePiece-vocabulary GGUF written by llama.cpp's own converter, and what llama.cpp does with it.

    /work/venv/bin/python tools/make_gguf_spm_fixture.py --llama-cpp SRC --llama-cpp-python PY

SRC is a llama.cpp source tree (the one inside llama-cpp-python's sdist does:
`pip download --no-binary :all: --no-deps llama-cpp-python` and unpack `vendor/llama.cpp`); PY is a
Python with llama-cpp-python installed. This Python needs torch, numpy, safetensors and
sentencepiece (llama.cpp's converter imports torch).

1. Trains a 400-piece SentencePiece BPE with byte fallback on Tiny Shakespeare (Llama 2's kind of
   vocabulary: `▁` for a space, `<0xNN>` byte pieces, scores), and makes a tiny random Llama in
   Hugging Face's layout with it.
2. Converts that with llama.cpp's `convert_hf_to_gguf.py` (f32): `tests/fixtures/gguf/spm.gguf`
   (`tokenizer.ggml.model = llama`, tokens, scores, token types).
3. Asks llama.cpp (through llama-cpp-python) for the ids of some texts and for a greedy
   continuation: `tests/fixtures/gguf/spm_expected.json`. tests/gguf.rs checks that lmforge gives
   the same ids and the same continuation.
"""
import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gguf"
TEXTS = ["First Citizen:\nBefore we proceed any further, hear me speak.",
         "  two spaces,\ttabs and a trailing space ",
         "Zürich, naïve café — 日本語 🙂",
         "MENENIUS: I tell you, friends, most charitable care\nHave the patricians of you.",
         "1234567 + 89 = ?"]
PROMPT = "ROMEO:"


def tiny_llama(out, tokenizer_model):
    rng = np.random.default_rng(0)
    n = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)
    c, hidden, v = 32, 64, 400
    sd = {"model.embed_tokens.weight": n(v, c), "model.norm.weight": 1 + n(c), "lm_head.weight": n(v, c)}
    for name, shape in [("input_layernorm", (c,)), ("self_attn.q_proj", (c, c)),
                        ("self_attn.k_proj", (c // 2, c)), ("self_attn.v_proj", (c // 2, c)),
                        ("self_attn.o_proj", (c, c)), ("post_attention_layernorm", (c,)),
                        ("mlp.gate_proj", (hidden, c)), ("mlp.up_proj", (hidden, c)),
                        ("mlp.down_proj", (c, hidden))]:
        sd[f"model.layers.0.{name}.weight"] = (1 + n(c)) if name.endswith("layernorm") else n(*shape)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": v,
              "hidden_size": c, "intermediate_size": hidden, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    out.mkdir(parents=True)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(tokenizer_model, out / "tokenizer.model")


LLAMA_CPP_SIDE = """
import json, sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
texts = json.loads(sys.argv[2])
ids = [llm.tokenize(t.encode(), add_bos=False) for t in texts]
prompt = llm.tokenize(sys.argv[3].encode(), add_bos=False)
greedy = []
for t in llm.generate(prompt, top_k=1, temp=0.0):
    if t == llm.token_eos() or len(greedy) == 16:
        break
    greedy.append(t)
print(json.dumps({"texts": texts, "ids": ids, "prompt": sys.argv[3], "prompt_ids": prompt,
                  "greedy_ids": greedy, "greedy_text": llm.detokenize(greedy).decode("utf-8", "replace")}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True, help="a llama.cpp source tree")
    ap.add_argument("--llama-cpp-python", required=True, help="a Python with llama-cpp-python")
    args = ap.parse_args()
    src = pathlib.Path(args.llama_cpp)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        spm.SentencePieceTrainer.train(
            input=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"), model_prefix=str(tmp / "tok"),
            vocab_size=400, model_type="bpe", byte_fallback=True, character_coverage=0.99,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
        tiny_llama(tmp / "hf", tmp / "tok.model")
        gguf = OUT / "spm.gguf"
        subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(tmp / "hf"),
                        "--outfile", str(gguf), "--outtype", "f32"], check=True, capture_output=True,
                       env={"PYTHONPATH": str(src / "gguf-py")})
        expected = subprocess.run([args.llama_cpp_python, "-c", LLAMA_CPP_SIDE, str(gguf),
                                   json.dumps(TEXTS), PROMPT], check=True, capture_output=True,
                                  text=True).stdout
        (OUT / "spm_expected.json").write_text(json.dumps(json.loads(expected), indent=1) + "\n")
        print(f"wrote {gguf} ({gguf.stat().st_size} bytes) and spm_expected.json")


if __name__ == "__main__":
    main()
