#!/usr/bin/env python3
"""Decoding speed and memory of lmforge against llama.cpp, on the same GGUF files.

    python3 bench/gguf_decode.py --llama-cpp-python PY [--shape gpt2|tinyllama] [--types f32,q8_0,q4_0]
        [--threads 2] [--rounds 2] [--lmforge target/release/lmforge] [--work DIR]

PY is a Python with llama-cpp-python installed (it builds llama.cpp from source); this one needs
numpy and safetensors. For each shape the script makes a random model in Hugging Face's layout
(GPT-2 124M: 12 layers x 768; TinyLlama 1.1B: 22 layers x 2048, 32 heads over 4 key/value heads,
SwiGLU 5632; both with GPT-2's tokenizer, which changes TinyLlama's vocabulary from 32000 to
50257), imports it (`lmforge import-hf`) and exports one GGUF per type (`lmforge export-gguf`).
On each file, in separate processes, with the same thread count:
  - decode: a 16-token prompt, then 128 new tokens, greedy; tokens/s of the 128;
  - prompt processing: 512 tokens in one forward; tokens/s;
  - peak RSS of the process (`wait4`'s ru_maxrss).
lmforge runs `lmforge bench sample --model FILE --weights TYPE` (its weights kept in the file's type);
llama.cpp runs through llama-cpp-python's low-level `eval`. The two alternate, round by round; the best
of --rounds is kept, and each round's decode speeds are printed too.
Prints one table row per (shape, type) with the ratios lmforge / llama.cpp.
"""
import argparse
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROMPT, NEW, PP = 16, 128, 512

SHAPES = {
    "gpt2": dict(model_type="gpt2", n_layer=12, n_embd=768, n_head=12),
    "tinyllama": dict(model_type="llama", n_layer=22, n_embd=2048, n_head=32, n_kv_head=4, hidden=5632),
}

LLAMA_CPP_SIDE = r"""
import json, resource, sys, time
import numpy as np, llama_cpp
path, threads, prompt_len, new, pp = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
v = llm.n_vocab()
prompt = [(i * 7919) % v for i in range(prompt_len)]
llm.reset()
llm.eval(prompt)
t0 = time.perf_counter()
for _ in range(new):
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    llm.eval([token])
decode = new / (time.perf_counter() - t0)
llm.reset()
long_prompt = [(i * 7919) % v for i in range(pp)]
t0 = time.perf_counter()
llm.eval(long_prompt)
prompt_speed = pp / (time.perf_counter() - t0)
print(json.dumps({"decode": decode, "prompt": prompt_speed}))
"""


def run_measured(cmd):
    """Run `cmd`; its stdout and its peak RSS in MiB."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        stderr = proc.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{' '.join(map(str, cmd))} failed:\n{stderr}")
        out.seek(0)
        return out.read().decode(), usage.ru_maxrss / 1024


def gpt2_tokenizer(lmforge, work):
    """GPT-2's tokenizer.json, as lmforge writes it into a run."""
    run = work / "tokenizer_run"
    if not (run / "tokenizer.json").exists():
        text = work / "text.txt"
        text.write_text("hello world. " * 2000)
        subprocess.run([lmforge, "train", "--preset", "gpt2", "--data", str(text), "--out", str(run),
                        "--n-layer", "1", "--n-head", "1", "--n-embd", "8", "--block", "8", "--batch", "1",
                        "--max-iters", "1", "--eval-iters", "1", "--plot", "none", "--overwrite"],
                       check=True, capture_output=True)
    return run / "tokenizer.json"


def make_hf(shape, folder, tokenizer):
    s = SHAPES[shape]
    v, c, layers = 50257, s["n_embd"], s["n_layer"]
    rng = np.random.default_rng(0)
    n = lambda *dims: (rng.standard_normal(dims, dtype=np.float32) * 0.02)
    folder.mkdir(parents=True)
    if s["model_type"] == "gpt2":
        sd = {"transformer.wte.weight": n(v, c), "transformer.wpe.weight": n(1024, c),
              "transformer.ln_f.weight": np.ones(c, np.float32), "transformer.ln_f.bias": np.zeros(c, np.float32)}
        for l in range(layers):
            for name, dims in [("ln_1", (c,)), ("attn.c_attn", (c, 3 * c)), ("attn.c_proj", (c, c)),
                               ("ln_2", (c,)), ("mlp.c_fc", (c, 4 * c)), ("mlp.c_proj", (4 * c, c))]:
                sd[f"transformer.h.{l}.{name}.weight"] = np.ones(c, np.float32) if name.startswith("ln") else n(*dims)
                sd[f"transformer.h.{l}.{name}.bias"] = np.zeros(dims[-1], np.float32)
        config = {"model_type": "gpt2", "vocab_size": v, "n_positions": 1024, "n_embd": c, "n_layer": layers,
                  "n_head": s["n_head"], "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
                  "bos_token_id": 50256, "eos_token_id": 50256, "tie_word_embeddings": True}
        save_file(sd, str(folder / "model.safetensors"))
    else:
        kv, hidden = c // s["n_head"] * s["n_kv_head"], s["hidden"]
        shards = [{"model.embed_tokens.weight": n(v, c), "model.norm.weight": np.ones(c, np.float32),
                   "lm_head.weight": n(v, c)}]
        for l in range(layers):
            shard = {}
            for name, dims in [("input_layernorm", (c,)), ("self_attn.q_proj", (c, c)),
                               ("self_attn.k_proj", (kv, c)), ("self_attn.v_proj", (kv, c)),
                               ("self_attn.o_proj", (c, c)), ("post_attention_layernorm", (c,)),
                               ("mlp.gate_proj", (hidden, c)), ("mlp.up_proj", (hidden, c)),
                               ("mlp.down_proj", (c, hidden))]:
                shard[f"model.layers.{l}.{name}.weight"] = (np.ones(c, np.float32) if name.endswith("layernorm")
                                                             else n(*dims))
            shards.append(shard)
        index = {"metadata": {}, "weight_map": {}}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / name))
            index["weight_map"].update({k: name for k in shard})
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        config = {"model_type": "llama", "vocab_size": v, "hidden_size": c, "intermediate_size": hidden,
                  "num_hidden_layers": layers, "num_attention_heads": s["n_head"],
                  "num_key_value_heads": s["n_kv_head"], "max_position_embeddings": 2048,
                  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
                  "tie_word_embeddings": False, "bos_token_id": 50256, "eos_token_id": 50256}
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(tokenizer, folder / "tokenizer.json")


def lmforge_speeds(lmforge, path, ty, threads):
    def bench(prompt, new):
        out, rss = run_measured([lmforge, "bench", "sample", "--model", str(path), "--weights", ty,
                                 "--threads", str(threads), "--prompt-tokens", str(prompt), "--new-tokens", str(new)])
        return out, rss
    out, rss = bench(PROMPT, NEW)
    decode = float(re.search(r"lmforge sample tokens/s: ([\d.]+)", out).group(1))
    out, rss_pp = bench(PP, 1)
    prompt = float(re.search(r"lmforge prompt tokens/s: ([\d.]+)", out).group(1))
    return {"decode": decode, "prompt": prompt, "rss": max(rss, rss_pp)}


def llama_cpp_speeds(python, path, threads):
    out, rss = run_measured([python, "-c", LLAMA_CPP_SIDE, str(path), str(threads), str(PROMPT), str(NEW), str(PP)])
    return dict(json.loads(out), rss=rss)


def best(runs):
    return {"decode": max(r["decode"] for r in runs), "prompt": max(r["prompt"] for r in runs),
            "rss": min(r["rss"] for r in runs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp-python", required=True)
    ap.add_argument("--lmforge", default=str(ROOT / "target" / "release" / "lmforge"))
    ap.add_argument("--shape", default="gpt2", choices=SHAPES)
    ap.add_argument("--types", default="f32,q8_0,q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", help="keep the models here (default: a temporary folder)")
    args = ap.parse_args()
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="gguf_decode_"))
    work.mkdir(parents=True, exist_ok=True)
    cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if l.startswith("Model name")), "?")
    print(f"CPU: {cpu}; {args.threads} threads; prompt {PROMPT} + {NEW} new tokens (greedy), "
          f"prompt processing {PP} tokens; load before: {os.getloadavg()[0]:.2f}")
    run = work / f"{args.shape}_run"
    if not (run / "config.json").exists():
        hf = work / f"{args.shape}_hf"
        # In a child process: Linux carries a parent's peak RSS into the
        # children it starts (ru_maxrss survives fork and exec), so making a
        # 4 GB model here would show as every later process's peak.
        maker = multiprocessing.get_context("fork").Process(
            target=make_hf, args=(args.shape, hf, gpt2_tokenizer(args.lmforge, work)))
        maker.start()
        maker.join()
        if maker.exitcode != 0:
            sys.exit(f"making the {args.shape} model failed")
        subprocess.run([args.lmforge, "import-hf", str(hf), "--out", str(run)], check=True, capture_output=True)
        shutil.rmtree(hf)
    print("| shape | type | file MB | lmforge decode tok/s | llama.cpp | ratio | lmforge pp512 tok/s | llama.cpp | ratio "
          "| lmforge peak RSS MiB | llama.cpp | ratio | decode per round, lmforge/llama.cpp |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ty in args.types.split(","):
        path = work / f"{args.shape}.{ty}.gguf"
        if not path.exists():
            subprocess.run([args.lmforge, "export-gguf", str(run), "--out", str(path), "--type", ty],
                           check=True, capture_output=True)
        # The sides alternate round by round, so a slow spell of a shared
        # machine falls on both.
        rounds = [(lmforge_speeds(args.lmforge, path, ty, args.threads),
                   llama_cpp_speeds(args.llama_cpp_python, path, args.threads)) for _ in range(args.rounds)]
        ours, theirs = best([r[0] for r in rounds]), best([r[1] for r in rounds])
        per_round = ", ".join(f"{a['decode']:.1f}/{b['decode']:.1f}" for a, b in rounds)
        print(f"| {args.shape} | {ty} | {path.stat().st_size / 2**20:.0f} "
              f"| {ours['decode']:.1f} | {theirs['decode']:.1f} | {ours['decode'] / theirs['decode']:.2f}x "
              f"| {ours['prompt']:.1f} | {theirs['prompt']:.1f} | {ours['prompt'] / theirs['prompt']:.2f}x "
              f"| {ours['rss']:.0f} | {theirs['rss']:.0f} | {ours['rss'] / theirs['rss']:.2f}x | {per_round} |",
              flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}; models kept in {work}")


if __name__ == "__main__":
    main()
