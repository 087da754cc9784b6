"""`lmforge eval`'s numbers computed by `transformers`, the reference it is checked against.

    python3 tools/eval_reference.py fixture
        Writes tests/fixtures/eval/expected.json: the scores of the tiny
        GPT-2 tests/fixtures/hf_gpt2/single (see tools/make_hf_fixture.py) on
        tests/fixtures/eval/text.txt (strides 16, 5 and 1) and
        tests/fixtures/eval/choices.jsonl. tests/eval.rs imports that folder
        with `lmforge import-hf` and compares.

    python3 tools/eval_reference.py check RUN (--text FILE [--stride N] | --choices FILE)
        Exports the run (`lmforge export-hf`), scores the file with
        transformers on the export and with `lmforge eval --json` on the run,
        prints both and exits non-zero unless they agree to 1e-4 relative
        (text) or pick the same choice for every question (choices).

The reference follows lmforge's definitions (src/eval/): token i >= 1 is
predicted from the tokens before it, in windows of `n_positions` inputs whose
starts are `stride` apart, each token scored in the first window that
predicts it; bits per byte = sum of losses / (ln 2 * bytes of the scored
tokens). Multiple choice follows llm.c's hellaswag.py: context and ending
encoded apart (HellaSwag endings after a space), `acc` by summed loss over the
ending's tokens, `acc_norm` by mean loss. Computed in float64. Nothing is downloaded.
"""
import argparse
import json
import math
import pathlib
import re
import subprocess
import sys
import tempfile

import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
MODEL = ROOT / "tests" / "fixtures" / "hf_gpt2" / "single"


def load(folder):
    model = GPT2LMHeadModel.from_pretrained(folder).eval().to(torch.float64)
    return model, AutoTokenizer.from_pretrained(folder)


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def token_losses(model, ids):
    """-ln p(ids[t+1] | ids[..t+1]) for every t, one forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]])).logits[0]
    logp = torch.log_softmax(logits, dim=-1)
    return [-logp[t, ids[t + 1]].item() for t in range(len(ids) - 1)]


def score_text(model, tok, text, stride):
    ids = encode(tok, text)
    context = model.config.n_positions
    inputs, losses, start, done, windows = len(ids) - 1, [], 0, 0, 0
    while done < inputs:
        end = min(start + context, inputs)
        losses += token_losses(model, ids[start:end + 1])[done - start:]
        done, start, windows = end, start + stride, windows + 1
    total = sum(losses)
    scored_bytes = max(len(text.encode()) - len(tok.decode(ids[:1]).encode()), 1)
    return {"stride": stride, "tokens": len(ids), "scored_tokens": len(losses), "windows": windows,
            "scored_bytes": scored_bytes, "total_loss": total, "mean_loss": total / len(losses),
            "perplexity": math.exp(total / len(losses)),
            "bits_per_byte": total / (math.log(2) * scored_bytes), "ids": ids}


def parse_example(line):
    e = json.loads(line)
    if "endings" in e:
        ctx = e.get("ctx") or (e["ctx_a"] + (" " + e["ctx_b"] if e.get("ctx_b") else ""))
        return ctx, [" " + x for x in e["endings"]], int(e["label"])
    return e["context"], e["choices"], int(e["label"])


def score_choices(model, tok, path):
    picks = []
    context = model.config.n_positions
    for number, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        ctx, choices, label = parse_example(line)
        ctx_ids, sums, counts = encode(tok, ctx), [], []
        for choice in choices:
            end = encode(tok, choice)
            ids = (ctx_ids + end)[-(context + 1):]
            n = min(len(end), len(ids) - 1)
            sums.append(sum(token_losses(model, ids)[-n:]))
            counts.append(n)
        pred = min(range(len(sums)), key=lambda i: (sums[i], i))
        pred_norm = min(range(len(sums)), key=lambda i: (sums[i] / counts[i], i))
        picks.append({"line": number, "label": label, "pred": pred, "pred_norm": pred_norm,
                      "losses": sums, "tokens": counts})
    acc = sum(p["pred"] == p["label"] for p in picks) / len(picks)
    acc_norm = sum(p["pred_norm"] == p["label"] for p in picks) / len(picks)
    return {"examples": len(picks), "acc": acc, "acc_norm": acc_norm, "picks": picks}


def fixture():
    model, tok = load(MODEL)
    text = (FIXTURES / "text.txt").read_text()
    scores = [score_text(model, tok, text, s) for s in (16, 5, 1)]
    expected = {
        "model": "tests/fixtures/hf_gpt2/single",
        "ids": scores[0]["ids"],
        "text": [{k: v for k, v in s.items() if k != "ids"} for s in scores],
        "choices": score_choices(model, tok, FIXTURES / "choices.jsonl"),
    }
    text = json.dumps(expected, indent=1)
    text = re.sub(r"\[\s+([-\d.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    (FIXTURES / "expected.json").write_text(text + "\n")
    for t in expected["text"]:
        print(f"stride {t['stride']}: {t['scored_tokens']} tokens, {t['windows']} windows, "
              f"loss {t['mean_loss']:.6f}, bpb {t['bits_per_byte']:.6f}")
    c = expected["choices"]
    print(f"choices: {c['examples']} examples, acc {c['acc']:.3f}, acc_norm {c['acc_norm']:.3f}")


def lmforge_eval(binary, run, args):
    out = subprocess.run([binary, "eval", run, "--json", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lmforge eval failed: {out.stderr}")
    return json.loads(out.stdout)


def check(args):
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([args.binary, "export-hf", args.run, "--out", folder], check=True,
                       capture_output=True)
        model, tok = load(folder)
    if args.text:
        stride = args.stride or max(model.config.n_positions // 2, 1)
        theirs = score_text(model, tok, pathlib.Path(args.text).read_text(), stride)
        ours = lmforge_eval(args.binary, args.run, ["--text", args.text, "--stride", str(stride)])
        worst = 0.0
        for key in ("mean_loss", "perplexity", "bits_per_byte"):
            rel = abs(ours[key] - theirs[key]) / abs(theirs[key])
            worst = max(worst, rel)
            print(f"{key:14} lmforge {ours[key]:.6f}  transformers {theirs[key]:.6f}  rel. diff {rel:.1e}")
        for key in ("tokens", "scored_bytes", "windows"):
            if ours[key] != theirs[key]:
                sys.exit(f"{key}: lmforge {ours[key]}, transformers {theirs[key]}")
        if worst > 1e-4:
            sys.exit(f"relative difference {worst:.1e} is above 1e-4")
    else:
        theirs = score_choices(model, tok, args.choices)
        ours = lmforge_eval(args.binary, args.run, ["--choices", args.choices])
        differ = [(a["line"], a["pred"], b["pred"], a["pred_norm"], b["pred_norm"])
                  for a, b in zip(ours["picks"], theirs["picks"])
                  if (a["pred"], a["pred_norm"]) != (b["pred"], b["pred_norm"])]
        print(f"{theirs['examples']} questions: acc {ours['acc']:.4f} / {theirs['acc']:.4f}, "
              f"acc_norm {ours['acc_norm']:.4f} / {theirs['acc_norm']:.4f} (lmforge / transformers)")
        if differ or ours["examples"] != theirs["examples"]:
            sys.exit(f"different picks (line, lmforge, transformers): {differ[:10]}")
        print("the same picks for every question")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("fixture")
    c = sub.add_parser("check")
    c.add_argument("run")
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--text")
    what.add_argument("--choices")
    c.add_argument("--stride", type=int)
    c.add_argument("--binary", default=str(ROOT / "target" / "release" / "lmforge"))
    args = ap.parse_args()
    fixture() if args.command == "fixture" else check(args)


if __name__ == "__main__":
    main()
