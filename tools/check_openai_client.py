#!/usr/bin/env python3
"""Check `lmforge serve` with the official `openai` Python package.

    python3 -m venv .venv && .venv/bin/pip install openai
    .venv/bin/python tools/check_openai_client.py RUN [--bin target/release/lmforge]

Starts the server on a free loopback port, then uses `openai.OpenAI(base_url=...)`
for: the model list, a completion, a chat completion, both streamed, a stop
string, and a bad request (which must raise `openai.BadRequestError` naming
the field). Exits non-zero at the first thing that differs.
"""

import argparse
import re
import subprocess
import sys

import openai


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--bin", default="target/release/lmforge")
    args = p.parse_args()
    server = subprocess.Popen([args.bin, "serve", args.run, "--port", "0", "--api-key", "test-key"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        base = re.search(r"http://\S+", line).group(0)
        client = openai.OpenAI(base_url=base + "/v1", api_key="test-key")
        check(client)
    finally:
        server.terminate()
        server.wait()
    print("ok: the openai client works with lmforge serve")


def check(client):
    models = client.models.list().data
    name = models[0].id
    print("models:", [m.id for m in models])

    done = client.completions.create(model=name, prompt="ROMEO:", max_tokens=20, temperature=0)
    text = done.choices[0].text
    assert done.usage.completion_tokens == 20 and done.choices[0].finish_reason == "length", done
    print("completion:", repr(text))
    pieces = client.completions.create(model=name, prompt="ROMEO:", max_tokens=20, temperature=0, stream=True)
    streamed = "".join(c.choices[0].text for c in pieces if c.choices)
    assert streamed == text, (streamed, text)

    messages = [{"role": "user", "content": "JULIET:"}]
    reply = client.chat.completions.create(model=name, messages=messages, max_tokens=30, temperature=0)
    content = reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant" and reply.usage.total_tokens > 0, reply
    print("chat:", repr(content))
    chunks = client.chat.completions.create(model=name, messages=messages, max_tokens=30, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == content, (streamed, content)
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens, chunks[-1]

    stop = text[5:8]
    cut = client.completions.create(model=name, prompt="ROMEO:", max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop", cut

    try:
        client.completions.create(model=name, prompt="x", temperature=7)
        sys.exit("a temperature of 7 was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "temperature", e.body
    try:
        openai.OpenAI(base_url=client.base_url, api_key="wrong").models.list()
        sys.exit("a wrong API key was accepted")
    except openai.AuthenticationError:
        pass


if __name__ == "__main__":
    main()
