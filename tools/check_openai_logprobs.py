#!/usr/bin/env python3
"""Score a text through `lmforge serve` the way an evaluation harness does, and
check it against `lmforge eval`.

    /work/venv/bin/python tools/check_openai_logprobs.py RUN TEXT_FILE [--bin target/release/lmforge]

1. `lmforge eval RUN --text TEXT_FILE --json --per-token`: every token's loss.
2. `lmforge serve RUN` on a free loopback port, then with the `openai` client:
   - `completions.create(prompt=text, max_tokens=0, echo=True, logprobs=5)`:
     the prompt's tokens with their log-probabilities (the first null), as
     lm-evaluation-harness asks for a loglikelihood; each must equal minus
     eval's loss for that token (to 1e-5), and the tokens eval's tokens;
   - a harness-style loglikelihood of a continuation (the text's second half
     after its first half), summed over the tokens that `text_offset` puts in
     the continuation, against the same sum of eval's losses;
   - a generation with `logprobs`, `n` and `best_of`, and a chat completion
     with `logprobs` and `top_logprobs`, checked for OpenAI's shapes.
Exits non-zero at the first thing that differs.
"""

import argparse
import json
import math
import re
import subprocess
import sys

import openai

TOLERANCE = 1e-5


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("text")
    p.add_argument("--bin", default="target/release/lmforge")
    p.add_argument("--threads", default="2")
    args = p.parse_args()
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    eval_out = subprocess.run([args.bin, "eval", args.run, "--text", args.text, "--json", "--per-token",
                               "--threads", args.threads], check=True, capture_output=True, text=True)
    reference = json.loads(eval_out.stdout)
    server = subprocess.Popen([args.bin, "serve", args.run, "--port", "0", "--threads", args.threads],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        base = re.search(r"http://\S+", line).group(0)
        client = openai.OpenAI(base_url=base + "/v1", api_key="none")
        check_echo(client, text, reference)
        check_generation(client)
    finally:
        server.terminate()
        server.wait()
    print("ok: echo + logprobs through the openai client equal lmforge eval")


def check_echo(client, text, reference):
    model = client.models.list().data[0].id
    done = client.completions.create(model=model, prompt=text, max_tokens=0, echo=True, logprobs=5)
    choice = done.choices[0]
    lp = choice.logprobs
    assert choice.text == text, "echo returns the prompt"
    assert lp.tokens == reference["token_texts"], "the same tokens as eval"
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None, "the first token has none"
    losses = reference["losses"]
    assert len(lp.token_logprobs) == len(losses) + 1
    diffs = [abs(a + b) for a, b in zip(lp.token_logprobs[1:], losses)]
    worst = max(diffs)
    total = -sum(lp.token_logprobs[1:])
    bpb = total / (math.log(2) * reference["scored_bytes"])
    print(f"model {model}: {reference['tokens']} tokens, context {reference['context']}, "
          f"{reference['windows']} windows (stride {reference['stride']})")
    print(f"echo token_logprobs vs eval losses: worst |logprob + loss| = {worst:.2e} over {len(diffs)} tokens")
    print(f"sum of -logprobs {total:.6f} vs eval total_loss {reference['total_loss']:.6f}; "
          f"bits per byte {bpb:.6f} vs {reference['bits_per_byte']:.6f}")
    assert worst <= TOLERANCE, worst
    for top, chosen, logprob in zip(lp.top_logprobs[1:], lp.tokens[1:], lp.token_logprobs[1:]):
        assert chosen in top and abs(top[chosen] - logprob) <= TOLERANCE and len(top) <= 6, top
    # A harness's loglikelihood(context, continuation): the continuation's tokens by text_offset.
    split = len(text) // 2
    in_continuation = [i for i, at in enumerate(lp.text_offset) if at >= split and i > 0]
    harness = sum(lp.token_logprobs[i] for i in in_continuation)
    expected = -sum(losses[i - 1] for i in in_continuation)
    print(f"loglikelihood of the second half ({len(in_continuation)} tokens): {harness:.6f} vs eval {expected:.6f}")
    assert abs(harness - expected) <= TOLERANCE * len(in_continuation)


def check_generation(client):
    model = client.models.list().data[0].id
    done = client.completions.create(model=model, prompt="ROMEO:", max_tokens=8, logprobs=3, n=2,
                                     best_of=3, seed=1, presence_penalty=0.5, frequency_penalty=0.5)
    assert [c.index for c in done.choices] == [0, 1]
    for c in done.choices:
        lp = c.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
        assert all(t in top for t, top in zip(lp.tokens, lp.top_logprobs))
    assert done.usage.completion_tokens >= sum(len(c.logprobs.tokens) for c in done.choices)
    print("completion, n=2 of best_of=3:", [c.text for c in done.choices])
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "JULIET:"}],
                                           max_tokens=8, logprobs=True, top_logprobs=2, seed=1)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token and len(entry.top_logprobs) == 2
    print("chat logprobs:", [(e.token, round(e.logprob, 4)) for e in content])
    try:
        client.completions.create(model=model, prompt="a", logprobs=21)
        sys.exit("logprobs 21 was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "logprobs", e.body
        print("logprobs 21:", e.body["message"])


if __name__ == "__main__":
    main()
