"""Check lmforge's GGUF files against the Python `gguf` package and, when given, llama.cpp.

    /work/venv/bin/python tools/check_gguf.py [--lmforge target/release/lmforge]
        [--llama-cpp-python /path/to/venv-with-llama-cpp-python/bin/python]

1. Makes tiny random GPT-2 and Llama models with transformers (the 400-token byte-level BPE of
   tests/fixtures/tokenizer/hf_bpe_tokenizer.json), imports them (`lmforge import-hf`) and exports
   each as GGUF in every type (`lmforge export-gguf --type f32|f16|bf16|q8_0|q4_0`).
2. Reads every file with gguf-py's GGUFReader and checks each tensor against the transformers
   weights laid out as llama.cpp's convert_hf_to_gguf.py lays them out (GPT-2's Conv1D weights
   transposed, Llama's q/k rows permuted for llama.cpp's rotary pairs): F32 equal, F16/BF16/Q8_0/Q4_0
   byte for byte what gguf-py's own `quants.quantize` makes of the same values. Tensor names,
   shapes and the architecture keys are checked too.
3. With --llama-cpp-python, llama.cpp (through llama-cpp-python) generates greedily from the f32
   and q8_0 files, and its text must equal `lmforge sample --temperature 0` on the same file.

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
import torch
from gguf import GGUFReader, GGMLQuantizationType, quants
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "hf_bpe_tokenizer.json"
TYPES = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16,
         "bf16": GGMLQuantizationType.BF16, "q8_0": GGMLQuantizationType.Q8_0,
         "q4_0": GGMLQuantizationType.Q4_0}
PROMPT = "the quick brown fox"


def make_models(out):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=400, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                      bos_token_id=0, eos_token_id=0))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=64,
                                         rms_norm_eps=1e-5, tie_word_embeddings=False,
                                         bos_token_id=0, eos_token_id=0))
    models = {}
    for name, model in [("gpt2", gpt2), ("llama", llama)]:
        # Larger weights than the 0.02 init, so greedy decoding does not sit on near-ties.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(5.0)
        model.save_pretrained(out / name, safe_serialization=True)
        shutil.copy(TOKENIZER, out / name / "tokenizer.json")
        models[name] = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
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
    assert field(f"{arch}.block_count") == 2 and field(f"{arch}.embedding_length") == 64
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
    code = ("import sys, llama_cpp\n"
            "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, verbose=False)\n"
            "r = llm.create_completion(sys.argv[2], max_tokens=int(sys.argv[3]), temperature=0.0, top_k=1)\n"
            "sys.stdout.write(r['choices'][0]['text'])\n")
    return subprocess.run([python, "-c", code, str(path), PROMPT, str(n)], check=True,
                          capture_output=True, text=True).stdout


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
                    n = 24
                    ours = lmforge("sample", str(path), "--prompt", PROMPT, "--temperature", "0",
                                   "--max-new-tokens", str(n), "--threads", "2").stdout
                    ours = ours[len(PROMPT):].removesuffix("\n")
                    theirs = greedy_llama_cpp(args.llama_cpp_python, path, n)
                    same = ours == theirs
                    failures += not same
                    print(f"{arch} {ty}: greedy text {'EQUAL' if same else 'DIFFERS'}\n"
                          f"  lmforge:   {json.dumps(ours)}\n  llama.cpp: {json.dumps(theirs)}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
