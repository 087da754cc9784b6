"""lmforge.Run: numpy tensors and text equal to the command line's."""

import json

import numpy as np
import pytest

import lmforge
from conftest import TINY, cli, read_safetensors


def test_greedy_tokens_from_logits_equal_cli_sample_temperature_0(tiny_run):
    run = lmforge.Run(tiny_run)
    prompt, n = "ROMEO:", 9
    ids = run.tokenizer.encode(prompt).tolist()
    for _ in range(n):
        ids.append(int(run.logits(ids)[-1].argmax()))
    greedy = run.tokenizer.decode(ids[len(prompt):])
    out = cli("sample", tiny_run, "--prompt", prompt, "--temperature", "0",
              "--max-new-tokens", n, "--threads", "2").stdout
    assert out == prompt + greedy + "\n"
    assert run.sample(prompt, temperature=0, max_new_tokens=n) == greedy


def test_sample_is_the_cli_sample_with_the_same_seed(tiny_run):
    run = lmforge.Run(tiny_run)
    out = cli("sample", tiny_run, "--prompt", "A", "--max-new-tokens", 30, "--seed", 5,
              "--top-k", 10).stdout
    assert out == "A" + run.sample("A", max_new_tokens=30, seed=5, top_k=10) + "\n"
    assert run.sample("A", max_new_tokens=30, seed=6) != run.sample("A", max_new_tokens=30, seed=5)
    with pytest.raises(lmforge.BadInputError, match="--temperature"):
        run.sample("A", temperature=-1)
    with pytest.raises(lmforge.BadInputError, match="not in the vocabulary"):
        run.sample("\u263a")


def test_logits_shapes_batches_and_loss(tiny_run):
    run = lmforge.Run(tiny_run)
    v = run.tokenizer.vocab_size
    a = run.tokenizer.encode("First Citizen:\nB")
    b = run.tokenizer.encode("Before we proceed any")
    one = run.logits(a)
    assert one.shape == (len(a), v) and one.dtype == np.float32
    both = run.logits(np.stack([a, b[: len(a)]]))
    assert both.shape == (2, len(a), v)
    np.testing.assert_array_equal(both[0], one)
    np.testing.assert_array_equal(both[1], run.logits(b[: len(a)]))
    # The loss is the mean cross-entropy of the next token, from these logits.
    z = one[:-1].astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    want = -logp[np.arange(len(a) - 1), a[1:]].mean()
    assert abs(run.loss(a) - want) < 1e-5
    assert abs(run.loss([a.tolist(), a.tolist()]) - want) < 1e-5
    with pytest.raises(lmforge.BadInputError, match="longer than the model's context"):
        run.logits(np.zeros(TINY["block"] + 1, dtype=np.uint32))
    with pytest.raises(lmforge.BadInputError, match="outside the model's vocabulary"):
        run.logits([v])
    with pytest.raises(lmforge.BadInputError, match="same length"):
        run.logits([[1, 2], [3]])
    with pytest.raises(lmforge.BadInputError, match="at least two tokens"):
        run.loss([1])


def test_parameters_are_read_only_views_of_the_saved_weights(tiny_run):
    run = lmforge.Run(tiny_run)
    params = run.parameters()
    config = run.config
    v, c = run.tokenizer.vocab_size, TINY["n_embd"]
    assert params["transformer.wte.weight"].shape == (v, c)
    assert params["transformer.wpe.weight"].shape == (TINY["block"], c)
    assert params["transformer.h.0.attn.c_attn.weight"].shape == (c, 3 * c)
    saved = read_safetensors(tiny_run / "model.safetensors")
    matched = [name for name in params if name in saved]
    assert "transformer.wte.weight" in matched and len(matched) == len(params), matched
    for name in matched:
        np.testing.assert_array_equal(params[name], saved[name], err_msg=name)
    with pytest.raises(ValueError):
        params["transformer.wte.weight"][0, 0] = 1.0
    assert config["max_iters"] == 20 and config["n_embd"] == c


def test_metrics_and_frame(tiny_run):
    run = lmforge.Run(tiny_run)
    metrics = run.metrics
    assert metrics[0]["step"] == 0 and metrics[0]["eval"] is True
    steps = [m["step"] for m in metrics if "train_loss" in m and not m.get("eval")]
    assert steps == list(range(1, 21))
    evals = [m for m in metrics if m.get("eval")]
    assert [m["step"] for m in evals] == [0, 10, 20]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    pandas = pytest.importorskip("pandas")
    frame = run.metrics_frame()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == len(metrics)


def test_a_base_model_chats_in_the_continue_form(tiny_run):
    run = lmforge.Run(tiny_run)
    reply = run.chat([{"role": "user", "content": "ROMEO:"}], max_new_tokens=20, seed=3)
    assert isinstance(reply, str) and "\n\n" not in reply
    with pytest.raises(lmforge.BadInputError, match="role"):
        run.chat([{"content": "hi"}])
    with pytest.raises(lmforge.BadInputError, match="unknown role"):
        run.chat([{"role": "robot", "content": "hi"}])


def test_export_hf(tiny_run, tmp_path):
    run = lmforge.Run(tiny_run)
    out = run.export_hf(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["n_embd"] == TINY["n_embd"]
    exported = read_safetensors(tmp_path / "hf" / "model.safetensors")
    wte = [t for name, t in exported.items() if name.endswith("wte.weight")]
    np.testing.assert_array_equal(wte[0], run.parameters()["transformer.wte.weight"])
    assert str(out).endswith("hf")


def test_loading_a_missing_run_says_so(tmp_path):
    with pytest.raises(lmforge.Error, match="loading the run"):
        lmforge.Run(tmp_path / "nothing")
