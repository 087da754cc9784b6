#!/usr/bin/env python3
"""Decoding speed and memory of lmforge against llama.cpp, on the same GGUF files.

    python3 bench/gguf_decode.py --llama-cpp-python PY [--shape gpt2|tinyllama] [--types f32,q8_0,q4_0]
        [--threads 2] [--rounds 2] [--streams N] [--lmforge target/release/lmforge] [--work DIR]

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

With --streams N, a second table: batched decoding of N sequences at once (what a server does),
each with its own 16-token prompt and 128 new greedy tokens, against one sequence through the same
batched path. lmforge runs `lmforge bench sample --streams N`; llama.cpp runs `llama_decode` on a
batch of one token from each of N sequences (`n_seq_max = N`). Tokens/s are of all N together.
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

# N sequences decoded together, each with its own prompt (token i of sequence s is
# (i + s) * 7919 mod vocab, as `lmforge bench sample --streams` makes them), after 1 alone.
LLAMA_CPP_BATCHED = r"""
import json, sys, time
import numpy as np, llama_cpp as L
path, threads, streams, prompt_len, new = sys.argv[1], *map(int, sys.argv[2:6])
L.llama_backend_init()
model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
vocab = L.llama_model_get_vocab(model)
v = L.llama_vocab_n_tokens(vocab)

def run(n):
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 256 * n, 512, 512, n
    cp.n_threads, cp.n_threads_batch = threads, threads
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(512, 0, n)
    def decode(items):  # (token, position, sequence, wants logits)
        batch.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        if L.llama_decode(ctx, batch) != 0:
            sys.exit("llama_decode failed")
    def greedy(i):
        return int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(v,))))
    tokens = []
    for s in range(n):
        decode([((i + s) * 7919 % v, i, s, int(i == prompt_len - 1)) for i in range(prompt_len)])
        tokens.append(greedy(prompt_len - 1))
    t0 = time.perf_counter()
    for step in range(new):
        decode([(tokens[s], prompt_len + step, s, 1) for s in range(n)])
        tokens = [greedy(s) for s in range(n)]
    speed = n * new / (time.perf_counter() - t0)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return speed

print(json.dumps({"one": run(1), "all": run(streams)}))
"""


def run_measured(cmd):
    """Run `cmd`; its stdout and its peak RSS in MiB. Both streams go to files: a pipe read only
    after the child ends would stop a child that writes more than the pipe holds (llama.cpp's log)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
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


def lmforge_batched(lmforge, path, ty, threads, streams):
    out, _ = run_measured([lmforge, "bench", "sample", "--model", str(path), "--weights", ty, "--threads", str(threads),
                           "--prompt-tokens", str(PROMPT), "--new-tokens", str(NEW), "--streams", str(streams)])
    one = float(re.search(r"batched tokens/s, 1 stream: ([\d.]+)", out).group(1))
    together = float(re.search(r"batched tokens/s, \d+ streams together: ([\d.]+)", out).group(1))
    return {"one": one, "all": together}


def llama_cpp_batched(python, path, threads, streams):
    out, _ = run_measured([python, "-c", LLAMA_CPP_BATCHED, str(path), str(threads), str(streams), str(PROMPT),
                           str(NEW)])
    return json.loads(out)


def batched_table(args, paths):
    """Batched decoding, N streams against one, both sides alternating round by round; the round with
    the median N-stream speed of each side is kept."""
    n = args.streams
    print(f"\nBatched decoding, {n} streams together against 1 (tokens/s of all streams):")
    print(f"| shape | type | lmforge 1 | lmforge {n} | {n} vs 1 | llama.cpp 1 | llama.cpp {n} | {n} vs 1 "
          f"| {n} streams lmforge / llama.cpp | {n} streams per round, lmforge/llama.cpp |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ty, path in paths:
        rounds = [(lmforge_batched(args.lmforge, path, ty, args.threads, n),
                   llama_cpp_batched(args.llama_cpp_python, path, args.threads, n)) for _ in range(args.rounds)]
        median = lambda runs: sorted(runs, key=lambda r: r["all"])[len(runs) // 2]
        ours, theirs = median([r[0] for r in rounds]), median([r[1] for r in rounds])
        per_round = ", ".join(f"{a['all']:.1f}/{b['all']:.1f}" for a, b in rounds)
        print(f"| {args.shape} | {ty} | {ours['one']:.1f} | {ours['all']:.1f} | {ours['all'] / ours['one']:.2f}x "
              f"| {theirs['one']:.1f} | {theirs['all']:.1f} | {theirs['all'] / theirs['one']:.2f}x "
              f"| {ours['all'] / theirs['all']:.2f}x | {per_round} |", flush=True)


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
    ap.add_argument("--streams", type=int, default=0,
                    help="also compare batched decoding of this many sequences (0: not)")
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
    paths = []
    for ty in args.types.split(","):
        path = work / f"{args.shape}.{ty}.gguf"
        if not path.exists():
            subprocess.run([args.lmforge, "export-gguf", str(run), "--out", str(path), "--type", ty],
                           check=True, capture_output=True)
        paths.append((ty, path))
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
    if args.streams > 0:
        batched_table(args, paths)
    print(f"load after: {os.getloadavg()[0]:.2f}; models kept in {work}")


if __name__ == "__main__":
    main()
