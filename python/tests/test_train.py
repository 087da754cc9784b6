"""lmforge.train and the Training handle: records as they happen, errors,
interrupt and resume to the same bits, the GIL released; lmforge.prepare."""

import _thread
import json
import threading
import time

import numpy as np
import pytest

import lmforge
from conftest import REPO, TINY, cli, read_safetensors


def test_iterating_yields_each_record_as_written(tmp_path, text_file):
    training = lmforge.train(out=tmp_path / "r", data=text_file, threads=2, max_iters=12, **TINY)
    records = list(training)
    assert records[0] == {**records[0], "step": 0, "eval": True}
    assert [r["step"] for r in records if not r.get("eval")] == list(range(1, 13))
    assert all(r["tokens_per_sec"] > 0 for r in records if not r.get("eval"))
    summary = training.wait()
    assert training.done and summary["step"] == 12 and not summary["interrupted"]
    assert summary["val_loss"] == records[-1]["val_loss"] and summary["eval_step"] == 12
    on_disk = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert on_disk == records


def test_options_are_the_clis_and_unknown_ones_are_refused_by_name(tmp_path, text_file):
    with pytest.raises(lmforge.BadInputError, match="n_layers"):
        lmforge.train(out=tmp_path / "x", n_layers=2)
    with pytest.raises(lmforge.BadInputError, match="preset"):
        lmforge.train(out=tmp_path / "x", preset="huge")
    with pytest.raises(lmforge.BadInputError, match="divisible by n_head"):
        lmforge.train(out=tmp_path / "x", n_head=3)
    with pytest.raises(lmforge.BadInputError, match="--resume cannot be used with --out"):
        lmforge.train(out=tmp_path / "x", resume=tmp_path / "y")
    with pytest.raises(lmforge.BadInputError, match="--lora-rank needs --init-from"):
        lmforge.train(out=tmp_path / "x", lora_rank=4)
    run = tmp_path / "cfg"
    lmforge.train(out=run, data=text_file, threads=2, max_iters=2, lr=2e-3, **TINY).wait()
    assert lmforge.Run(run).config["lr"] == pytest.approx(2e-3)


def test_errors_carry_the_clis_message(tiny_run, text_file):
    args = dict(out=tiny_run, data=text_file, max_iters=5)
    with pytest.raises(lmforge.RunExistsError) as error:
        lmforge.train(**args).wait()
    done = cli("train", "--out", tiny_run, "--data", text_file, "--max-iters", 5, check=False)
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: {error.value}"
    with pytest.raises(lmforge.BadInputError, match="already trained for 20 iterations"):
        lmforge.train(resume=tiny_run).wait()


def test_interrupt_then_resume_gives_the_bits_of_an_uninterrupted_run(tmp_path, text_file):
    options = dict(data=text_file, threads=2, max_iters=30, **TINY)
    lmforge.train(out=tmp_path / "straight", **options).wait()

    training = lmforge.train(out=tmp_path / "cut", **options)
    with pytest.raises(KeyboardInterrupt):
        for record in training:
            if record["step"] == 8 and not record.get("eval"):
                _thread.interrupt_main()  # what Jupyter's stop button does
    summary = training.wait()
    assert summary["interrupted"] and 8 <= summary["step"] < 30, summary
    cut = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
    assert summary["eval_step"] == [r["step"] for r in cut if r.get("eval")][-1], summary
    resumed = lmforge.train(resume=tmp_path / "cut").wait()
    assert resumed["step"] == 30 and not resumed["interrupted"]
    model = "model.safetensors"
    assert (tmp_path / "cut" / model).read_bytes() == (tmp_path / "straight" / model).read_bytes()
    # The optimizer's moments too (the file's metadata holds the wall time).
    state = [read_safetensors(tmp_path / run / "train_state.safetensors") for run in ["cut", "straight"]]
    assert state[0].keys() == state[1].keys() and len(state[0]) > 0
    for name in state[0]:
        assert state[0][name].tobytes() == state[1][name].tobytes(), name
    losses = lambda run: [r["train_loss"] for r in lmforge.Run(run).metrics if not r.get("eval")]
    assert losses(tmp_path / "cut") == losses(tmp_path / "straight")


def test_stop_ends_at_a_step_with_a_checkpoint(tmp_path, text_file):
    training = lmforge.train(out=tmp_path / "s", data=text_file, threads=2, max_iters=10_000,
                             **TINY)
    next(iter(training))
    summary = training.stop()
    assert summary["interrupted"] and summary["step"] < 10_000
    assert lmforge.Run(tmp_path / "s").metrics[-1]["step"] == summary["step"]


def test_the_gil_is_released_while_training(tmp_path, text_file):
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.002)

    ticker = threading.Thread(target=tick)
    training = lmforge.train(out=tmp_path / "g", data=text_file, threads=2, max_iters=300, **TINY)
    ticker.start()
    start = time.perf_counter()
    training.wait()
    elapsed = time.perf_counter() - start
    done.set()
    ticker.join()
    during = [t for t in ticks if t <= start + elapsed]
    assert elapsed > 0.2, "training long enough to measure"
    # A thread sleeping 2 ms per tick gets at least a quarter of its ticks.
    assert len(during) > 0.25 * elapsed / 0.002, (len(during), elapsed)


def test_prepare_a_folder_then_train_on_its_shards(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"doc{i}.txt").write_text(f"Document number {i}. " * 40)
    report = lmforge.prepare([corpus], tokenizer="char", out=tmp_path / "shards", progress=False)
    assert report["documents"] == 20 and report["inputs_read"] == 20
    assert report["train_tokens"] > 0 and report["val_tokens"] > 0
    with pytest.raises(lmforge.BadInputError, match="on_bad_utf8"):
        lmforge.prepare([corpus], tokenizer="char", out=tmp_path / "x", on_bad_utf8="maybe")
    summary = lmforge.train(out=tmp_path / "r", data=tmp_path / "shards", threads=2,
                            max_iters=3, **TINY).wait()
    assert summary["step"] == 3


def test_full_lora_and_sft_fine_tunes_then_chat(tmp_path, text_file):
    bpe = lmforge.Tokenizer.train([text_file], 300, special=["<|endoftext|>"])
    bpe.save(tmp_path / "bpe.json")
    base = tmp_path / "base"
    lmforge.train(out=base, data=text_file, threads=2, tokenizer=str(tmp_path / "bpe.json"),
                  max_iters=10, **TINY).wait()
    tiny = dict(threads=2, eval_iters=2, eval_interval=5, batch=4, block=16)
    full = lmforge.train(out=tmp_path / "full", init_from=base, data=text_file, max_iters=5,
                         **tiny).wait()
    lora = lmforge.train(out=tmp_path / "lora", init_from=base, data=text_file, lora_rank=2,
                         lora_targets=["c_attn"], max_iters=5, **tiny).wait()
    assert full["step"] == lora["step"] == 5
    # A run loads with its adapters merged: LoRA on c_attn changed c_attn only.
    assert lmforge.Run(tmp_path / "lora").config["lora"]["targets"] == ["c_attn"]
    before = lmforge.Run(base).parameters()
    after = lmforge.Run(tmp_path / "lora").parameters()
    changed = sorted(n for n in before if not np.array_equal(before[n], after[n]))
    assert changed == ["transformer.h.0.attn.c_attn.weight"], changed
    with pytest.raises(lmforge.BadInputError, match="lora_targets"):
        lmforge.train(out=tmp_path / "x", init_from=base, lora_rank=2, lora_targets=["qkv"])
    sft = tmp_path / "sft"
    lmforge.train(out=sft, init_from=base, sft=REPO / "data" / "conversations.jsonl",
                  max_iters=5, **tiny).wait()
    run = lmforge.Run(sft)
    assert run.tokenizer.vocab_size == 304, "the chat template's four tokens added"
    question = [{"role": "user", "content": "What is 2 plus 2?"}]
    reply = run.chat(question, max_new_tokens=12, temperature=0)
    assert isinstance(reply, str) and reply == run.chat(question, max_new_tokens=12, temperature=0)
