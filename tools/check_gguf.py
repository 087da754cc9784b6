"""Check lmforge's GGUF files against the Python `gguf` package and, when given, llama.cpp.

    /work/venv/bin/python tools/check_gguf.py [--lmforge target/release/lmforge]
        [--llama-cpp-python /path/to/venv-with-llama-cpp-python/bin/python]

1. Makes tiny random GPT-2 and Llama models in transformers' layout with numpy (the 400-token byte-level BPE of
   tests/fixtures/tokenizer/hf_bpe_tokenizer.json), imports them (`lmforge import-hf`) and exports
   each as GGUF in every type (`lmforge export-gguf --type f32|f16|bf16|q8_0|q4_0`).
2. Reads every file with gguf-py's GGUFReader and checks each tensor against the transformers
   weights laid out as llama.cpp's convert_hf_to_gguf.py lays them out (GPT-2's Conv1D weights
   transposed, Llama's q/k rows permuted for llama.cpp's rotary pairs): F32 equal, F16/BF16/Q8_0/Q4_0
   byte for byte what gguf-py's own `quants.quantize` makes of the same values. Tensor names,
   shapes and the architecture keys are checked too.
3. With --llama-cpp-python, llama.cpp (through llama-cpp-python) generates greedily from the f32
   and q8_0 files, and its text must equal `lmforge sample --temperature 0` on the same file.
4. With --llama-cpp-python, llama.cpp's own quantizer (`llama_model_quantize`) turns 256-wide
   models' f32 files into Q8_0, Q4_0, Q4_K_M and Q6_K files; lmforge must read each (a failure
   to read fails the check) and its greedy text is printed beside llama.cpp's.

Prints one line per file and exits non-zero on any mismatch. Nothing is downloaded.
"""
import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType, quants
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "hf_bpe_tokenizer.json"
TYPES = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16,
         "bf16": GGMLQuantizationType.BF16, "q8_0": GGMLQuantizationType.Q8_0,
         "q4_0": GGMLQuantizationType.Q4_0}
PROMPT = "the quick brown fox"


def gpt2_tensors(rng, v=400, p=64, c=64, layers=2):
    """A GPT-2 state dict as `save_pretrained` writes it (Conv1D weights `(in, out)`, LM head tied)."""
    n = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)
    sd = {"transformer.wte.weight": n(v, c), "transformer.wpe.weight": n(p, c),
          "transformer.ln_f.weight": 1 + n(c), "transformer.ln_f.bias": n(c)}
    for l in range(layers):
        for name, shape in [("ln_1", (c,)), ("attn.c_attn", (c, 3 * c)), ("attn.c_proj", (c, c)),
                            ("ln_2", (c,)), ("mlp.c_fc", (c, 4 * c)), ("mlp.c_proj", (4 * c, c))]:
            sd[f"transformer.h.{l}.{name}.weight"] = (1 + n(c)) if name.startswith("ln") else n(*shape)
            sd[f"transformer.h.{l}.{name}.bias"] = n(shape[-1])
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": v,
              "n_positions": p, "n_embd": c, "n_layer": layers, "n_head": 4, "n_inner": None,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
              "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": True}
    return sd, config


def llama_tensors(rng, v=400, p=64, c=64, hidden=128, layers=2, heads=4, kv_heads=2):
    """A Llama state dict as `save_pretrained` writes it (`(out, in)` weights, untied head)."""
    n = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)
    kv = c // heads * kv_heads
    sd = {"model.embed_tokens.weight": n(v, c), "model.norm.weight": 1 + n(c), "lm_head.weight": n(v, c)}
    for l in range(layers):
        for name, shape in [("input_layernorm", (c,)), ("self_attn.q_proj", (c, c)),
                            ("self_attn.k_proj", (kv, c)), ("self_attn.v_proj", (kv, c)),
                            ("self_attn.o_proj", (c, c)), ("post_attention_layernorm", (c,)),
                            ("mlp.gate_proj", (hidden, c)), ("mlp.up_proj", (hidden, c)),
                            ("mlp.down_proj", (c, hidden))]:
            sd[f"model.layers.{l}.{name}.weight"] = (1 + n(c)) if name.endswith("layernorm") else n(*shape)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": v,
              "hidden_size": c, "intermediate_size": hidden, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "max_position_embeddings": p, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0}
    return sd, config


def partial_utf8_tokens():
    """Ids of the tokens whose bytes are not UTF-8 on their own (a lone byte of a multi-byte
    character): text made of them prints as U+FFFD whichever of them it was."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_of = {chr(b): b for b in printable}
    byte_of.update({chr(256 + i): b for i, b in enumerate(b for b in range(256) if b not in printable)})
    vocab = json.loads(TOKENIZER.read_text())["model"]["vocab"]
    ids = []
    for token, i in vocab.items():
        try:
            bytes(byte_of[ch] for ch in token).decode("utf-8")
        except (UnicodeDecodeError, KeyError):
            ids.append(i)
    return ids


def make_models(out, width=64):
    """Tiny random models in Hugging Face's layout, written with numpy alone (no torch needed).
    Their weights are larger than GPT-2's 0.02 init, so greedy decoding does not sit on near-ties,
    and the output rows of partial UTF-8 tokens are zero, so greedy text is readable and a
    differing token shows in it."""
    rng = np.random.default_rng(0)
    partial = partial_utf8_tokens()
    models = {}
    for name, (sd, config) in [("gpt2", gpt2_tensors(rng, c=width)),
                               ("llama", llama_tensors(rng, c=width, hidden=2 * width))]:
        head = "transformer.wte.weight" if name == "gpt2" else "lm_head.weight"
        sd[head][partial] = 0.0
        (out / name).mkdir(parents=True)
        save_file(sd, str(out / name / "model.safetensors"), metadata={"format": "pt"})
        (out / name / "config.json").write_text(json.dumps(config, indent=2))
        shutil.copy(TOKENIZER, out / name / "tokenizer.json")
        if name == "gpt2":
            sd = dict(sd, **{"lm_head.weight": sd["transformer.wte.weight"]})
        models[name] = sd
    return models


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate neighbours, not halves."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(arch, sd):
    """The tensors llama.cpp's converter would write, by GGUF name."""
    out = {}
    if arch == "gpt2":
        out["token_embd.weight"] = sd["transformer.wte.weight"]
        out["position_embd.weight"] = sd["transformer.wpe.weight"]
        out["output_norm.weight"] = sd["transformer.ln_f.weight"]
        out["output_norm.bias"] = sd["transformer.ln_f.bias"]
        out["output.weight"] = sd["lm_head.weight"]
        names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
                 "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        for l in range(2):
            for hf, gg in names.items():
                for kind in ("weight", "bias"):
                    w = sd[f"transformer.h.{l}.{hf}.{kind}"]
                    out[f"blk.{l}.{gg}.{kind}"] = w.T.copy() if w.ndim == 2 else w
        return out
    out["token_embd.weight"] = sd["model.embed_tokens.weight"]
    out["output_norm.weight"] = sd["model.norm.weight"]
    out["output.weight"] = sd["lm_head.weight"]
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for l in range(2):
        for hf, gg in names.items():
            w = sd[f"model.layers.{l}.{hf}.weight"]
            if gg == "attn_q":
                w = permute(w, 4)
            elif gg == "attn_k":
                w = permute(w, 2)
            out[f"blk.{l}.{gg}.weight"] = w
    return out


def check_file(path, arch, ty, sd):
    reader = GGUFReader(path)
    field = lambda key: reader.fields[key].contents()
    assert field("general.architecture") == arch, field("general.architecture")
    assert field(f"{arch}.block_count") == 2 and field(f"{arch}.embedding_length") == sd[
        "transformer.wte.weight" if arch == "gpt2" else "model.embed_tokens.weight"].shape[1]
    assert field("tokenizer.ggml.model") == "gpt2" and len(field("tokenizer.ggml.tokens")) == 400
    expected = expected_tensors(arch, sd)
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    worst = 0.0
    for name, want in expected.items():
        t = got[name]
        shape = tuple(int(d) for d in reversed(t.shape))
        assert shape == want.shape, (name, shape, want.shape)
        values = quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        if want.ndim == 1:
            assert t.tensor_type == GGMLQuantizationType.F32, (name, t.tensor_type)
        else:
            qtype = TYPES[ty] if want.shape[-1] % 32 == 0 else GGMLQuantizationType.F16
            assert t.tensor_type == qtype, (name, t.tensor_type.name, qtype.name)
            ours = np.asarray(t.data).tobytes()
            theirs = quants.quantize(want.astype(np.float32), qtype).tobytes()
            assert ours == theirs, f"{name}: lmforge's {qtype.name} bytes differ from gguf-py's"
        worst = max(worst, float(np.abs(values - want).max()))
    return worst


def greedy_llama_cpp(python, path, n):
    """llama.cpp's greedy continuation of PROMPT: its token ids, detokenized to bytes and decoded
    as lmforge prints text (an invalid UTF-8 sequence becomes U+FFFD; `create_completion` would
    drop such bytes, hiding a differing token)."""
    code = ("import sys, llama_cpp\n"
            "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, verbose=False)\n"
            "ids = []\n"
            "for t in llm.generate(llm.tokenize(sys.argv[2].encode(), add_bos=False), top_k=1, temp=0.0):\n"
            "    if t == llm.token_eos() or len(ids) == int(sys.argv[3]): break\n"
            "    ids.append(t)\n"
            "sys.stdout.buffer.write(llm.detokenize(ids))\n")
    out = subprocess.run([python, "-c", code, str(path), PROMPT, str(n)], check=True,
                         capture_output=True).stdout
    return out.decode("utf-8", errors="replace")


# llama.cpp's own quantizer (`llama_model_quantize`, the `llama-quantize` tool's library call)
# with its file types: LLAMA_FTYPE_MOSTLY_*.
LLAMA_FTYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15, "q6_k": 18}


def quantize_llama_cpp(python, src, dst, ftype):
    code = ("import sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            "p.ftype = int(sys.argv[3])\n"
            "rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p)\n"
            "sys.exit(rc)\n")
    subprocess.run([python, "-c", code, str(src), str(dst), str(ftype)], check=True, capture_output=True)
    return sorted({t.tensor_type.name for t in GGUFReader(dst).tensors})


def greedy_both(lmforge, python, path, label, weights=None, n=24):
    """lmforge's and llama.cpp's greedy continuations of PROMPT on one file: 1 if they differ.
    `weights`: the type lmforge computes in (`--weights`), as llama.cpp computes in the file's."""
    extra = ["--weights", weights] if weights else []
    ours = lmforge("sample", str(path), "--prompt", PROMPT, "--temperature", "0",
                   "--max-new-tokens", str(n), "--threads", "2", *extra).stdout
    ours = ours[len(PROMPT):].removesuffix("\n")
    theirs = greedy_llama_cpp(python, path, n)
    same = ours == theirs
    agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    print(f"{label}: greedy text {'EQUAL' if same else f'DIFFERS after {agree} characters'}\n"
          f"  lmforge:   {json.dumps(ours)}\n  llama.cpp: {json.dumps(theirs)}")
    return int(not same)


def llama_cpp_quantized(lmforge, python, tmp):
    """Files llama.cpp quantized itself, read back by lmforge (models 256 wide, so the
    K-quants' 256-value super-blocks fit every matrix). lmforge must read each one; its greedy
    text is shown beside llama.cpp's but not required equal: llama.cpp keeps some tensors in
    Q6_K (and all in K-quants) that lmforge computes in Q8_0 or Q4_0, and keeps its KV cache in
    f16, so on random weights the two drift apart at the first near-tie."""
    for arch in make_models(tmp / "wide", width=256):
        run = tmp / f"wide_run_{arch}"
        lmforge("import-hf", str(tmp / "wide" / arch), "--out", str(run))
        f32 = tmp / f"wide_{arch}.f32.gguf"
        lmforge("export-gguf", str(run), "--out", str(f32), "--type", "f32")
        for name, ftype in LLAMA_FTYPES.items():
            path = tmp / f"wide_{arch}.llama-cpp-{name}.gguf"
            types = quantize_llama_cpp(python, f32, path, ftype)
            weights = name if name in ("q8_0", "q4_0") else "q8_0"
            greedy_both(lmforge, python, path,
                        f"{arch} llama.cpp {name} ({', '.join(types)}), lmforge --weights {weights}", weights)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmforge", default=str(ROOT / "target" / "release" / "lmforge"))
    ap.add_argument("--llama-cpp-python", help="a Python with llama-cpp-python installed")
    args = ap.parse_args()
    lmforge = lambda *a: subprocess.run([args.lmforge, *a], check=True, capture_output=True, text=True)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        models = make_models(tmp)
        for arch, sd in models.items():
            run = tmp / f"run_{arch}"
            lmforge("import-hf", str(tmp / arch), "--out", str(run))
            for ty in TYPES:
                path = tmp / f"{arch}.{ty}.gguf"
                lmforge("export-gguf", str(run), "--out", str(path), "--type", ty)
                try:
                    worst = check_file(path, arch, ty, sd)
                    print(f"{arch} {ty}: gguf-py reads it; every tensor as convert_hf_to_gguf.py lays it "
                          f"out (quantized bytes equal gguf-py's), worst |difference| {worst:.3g}")
                except AssertionError as e:
                    failures += 1
                    print(f"{arch} {ty}: MISMATCH {e}")
                if args.llama_cpp_python and ty in ("f32", "q8_0"):
                    failures += greedy_both(lmforge, args.llama_cpp_python, path, f"{arch} {ty}", ty)
        if args.llama_cpp_python:
            llama_cpp_quantized(lmforge, args.llama_cpp_python, tmp)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
