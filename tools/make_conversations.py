#!/usr/bin/env python3
"""Write data/conversations.jsonl: a few hundred short, plausible chats for the
SFT part of notebooks/04_finetune_and_chat.ipynb (and python/tests).

Each line is {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]},
the format `lmforge train --sft` reads. The chats are composed from small
hand-written sets (greetings, arithmetic, Shakespeare's plays, word facts,
unit conversions, polite refusals), so the file is reproducible: run
`python3 tools/make_conversations.py` and it is rewritten byte for byte.
"""

import json
import random
from pathlib import Path

GREETINGS = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there.", "Hi! What would you like to talk about?"),
    ("Good morning.", "Good morning! What can I do for you?"),
    ("Hey, are you awake?", "I am here. Ask me anything."),
    ("Thanks for your help.", "You are welcome. Come back any time."),
    ("Goodbye.", "Goodbye, and have a good day!"),
    ("Who are you?", "I am a small language model trained with lmforge."),
    ("What can you do?", "I can answer simple questions about numbers, words and Shakespeare."),
]

PLAYS = [
    ("Hamlet", "a prince of Denmark who seeks revenge for his father's murder", "Denmark"),
    ("Macbeth", "a Scottish general who murders the king to take the crown", "Scotland"),
    ("Romeo and Juliet", "two young lovers from feuding families in Verona", "Verona"),
    ("Othello", "a Moorish general deceived by his ensign Iago", "Venice and Cyprus"),
    ("King Lear", "an old king who divides his kingdom among his daughters", "Britain"),
    ("The Tempest", "the magician Prospero on an island with his daughter Miranda", "an island"),
    ("Twelfth Night", "the twins Viola and Sebastian, separated by a shipwreck", "Illyria"),
    ("Julius Caesar", "the plot to assassinate Caesar and the war that follows", "Rome"),
    ("A Midsummer Night's Dream", "lovers and fairies lost in a wood near Athens", "Athens"),
    ("Coriolanus", "a proud Roman general who turns against his city", "Rome"),
    ("Richard III", "a duke who schemes his way to the English throne", "England"),
    ("The Merchant of Venice", "a merchant whose bond with Shylock is a pound of flesh", "Venice"),
]

WORDS = [
    ("happy", "glad", "sad"), ("big", "large", "small"), ("fast", "quick", "slow"),
    ("begin", "start", "end"), ("brave", "bold", "afraid"), ("bright", "shining", "dim"),
    ("cold", "chilly", "hot"), ("easy", "simple", "hard"), ("old", "ancient", "new"),
    ("quiet", "silent", "loud"), ("rich", "wealthy", "poor"), ("strong", "mighty", "weak"),
]

UNITS = [
    ("kilometre", "metres", 1000), ("metre", "centimetres", 100), ("hour", "minutes", 60),
    ("minute", "seconds", 60), ("day", "hours", 24), ("week", "days", 7),
    ("kilogram", "grams", 1000), ("year", "months", 12),
]

SYSTEMS = [
    None, None, None,
    "You are a helpful assistant.",
    "You are a friendly tutor. Answer briefly.",
    "You answer questions about Shakespeare and simple arithmetic.",
]


def arithmetic(rng):
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    op = rng.choice(["plus", "minus", "times"])
    value = {"plus": a + b, "minus": a - b, "times": a * b}[op]
    question = rng.choice([
        f"What is {a} {op} {b}?",
        f"Can you tell me what {a} {op} {b} is?",
        f"Compute {a} {op} {b}, please.",
    ])
    return question, f"{a} {op} {b} is {value}."


def play(rng):
    title, plot, place = rng.choice(PLAYS)
    kind = rng.randrange(3)
    if kind == 0:
        return f"What is {title} about?", f"{title} is about {plot}."
    if kind == 1:
        return f"Where is {title} set?", f"{title} is set in {place}."
    return f"Who wrote {title}?", f"{title} was written by William Shakespeare."


def word(rng):
    w, same, opposite = rng.choice(WORDS)
    if rng.random() < 0.5:
        return f"What is another word for {w}?", f"Another word for {w} is {same}."
    return f"What is the opposite of {w}?", f"The opposite of {w} is {opposite}."


def unit(rng):
    one, many, n = rng.choice(UNITS)
    k = rng.randint(2, 9)
    if rng.random() < 0.5:
        return f"How many {many} are in a {one}?", f"There are {n} {many} in a {one}."
    return f"How many {many} are in {k} {one}s?", f"There are {k * n} {many} in {k} {one}s."


def refusal(rng):
    question = rng.choice([
        "What will the weather be tomorrow?",
        "What is the price of gold today?",
        "Who will win the next election?",
        "Can you read my email?",
    ])
    return question, "I cannot know that: I am a small model without access to news or your data."


TOPICS = [arithmetic, play, word, unit, refusal]


def conversation(rng):
    messages = []
    system = rng.choice(SYSTEMS)
    if system:
        messages.append({"role": "system", "content": system})
    if rng.random() < 0.3:
        user, reply = rng.choice(GREETINGS)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    for _ in range(rng.choice([1, 1, 2, 3])):
        user, reply = rng.choice(TOPICS)(rng)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages}


def main():
    rng = random.Random(28)
    lines = [json.dumps(conversation(rng), ensure_ascii=False) for _ in range(400)]
    out = Path(__file__).resolve().parent.parent / "data" / "conversations.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(lines)} conversations, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
