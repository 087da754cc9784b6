#!/usr/bin/env python3
"""Write data/conversations.jsonl: a few hundred short chats written so that a
tiny model trained from scratch (examples/08_chatbot.rs, docs/src/chatbot.md)
can learn them in minutes on a CPU; also the SFT data of
notebooks/04_finetune_and_chat.ipynb and python/tests.

Each line is {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]},
the format `lmforge train --sft` reads.

What makes it learnable by a model of ~100k parameters:
- one persona (Pip), answering the same questions the same way every time;
- a small set of facts (capitals, Shakespeare's plays, opposites, colours,
  animals, counting), each asked in one or two phrasings and each answered
  with one fixed sentence that repeats the question's key word, so the
  model learns a copy-then-recall pattern rather than free text;
- every fact appears many times across the file (about 10 times on
  average), as pretraining data would repeat common facts;
- questions outside what it knows get one fixed refusal.

The chats are drawn from these sets with a fixed seed, so the file is
reproducible: run `python3 tools/make_conversations.py` and it is rewritten
byte for byte.

`python3 tools/make_conversations.py --text FILE` instead writes the chats'
words as plain text into FILE (each message's content on a line, a blank line
after each chat), for `lmforge tokenizer train` to learn them as
examples/08_chatbot.rs does.
"""

import json
import random
import sys
from pathlib import Path

NAME = "Pip"

GREETINGS = [
    ("Hello!", f"Hello! I am {NAME}. Ask me a question."),
    ("Hi!", f"Hi! I am {NAME}. Ask me a question."),
    ("Good morning.", "Good morning! Ask me a question."),
    ("Thank you.", "You are welcome."),
    ("Thanks!", "You are welcome."),
    ("Goodbye.", "Goodbye! Come back soon."),
    ("Bye!", "Goodbye! Come back soon."),
]

PERSONA = [
    ("Who are you?", f"I am {NAME}, a tiny chatbot trained from scratch with lmforge."),
    ("What is your name?", f"My name is {NAME}."),
    ("Who made you?", "I was trained with lmforge, on Shakespeare and then on these chats."),
    ("What can you do?", "I know capitals, Shakespeare's plays, opposites, colours and animals."),
    ("How are you?", "I am well, thank you. Ask me a question."),
]

CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
    ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Greece", "Athens"),
    ("Norway", "Oslo"), ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Ireland", "Dublin"),
]

PLAYS = [
    ("Hamlet", "Denmark", "a prince who avenges his father"),
    ("Macbeth", "Scotland", "a general who kills the king"),
    ("Romeo and Juliet", "Verona", "two young lovers"),
    ("Othello", "Venice", "a jealous general"),
    ("King Lear", "Britain", "an old king and his three daughters"),
    ("The Tempest", "an island", "a magician and his daughter"),
    ("Julius Caesar", "Rome", "the murder of Caesar"),
    ("Twelfth Night", "Illyria", "twins lost at sea"),
]

OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("old", "new"),
    ("up", "down"), ("day", "night"), ("loud", "quiet"), ("begin", "end"), ("rich", "poor"),
    ("strong", "weak"), ("early", "late"),
]

COLOURS = [
    ("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("a banana", "yellow"),
    ("coal", "black"), ("a tomato", "red"), ("an orange", "orange"), ("a plum", "purple"),
]

ANIMALS = [
    ("a dog", "woof"), ("a cat", "meow"), ("a cow", "moo"), ("a duck", "quack"),
    ("a sheep", "baa"), ("an owl", "hoot"), ("a lion", "roar"), ("a horse", "neigh"),
]

UNKNOWN = [
    "What will the weather be tomorrow?", "What is the price of gold today?",
    "Who will win the next election?", "Can you read my email?",
    "What time is it?", "What is the meaning of life?", "Can you book a flight for me?",
    "What is the news today?",
]
DONT_KNOW = "I do not know that. I only know a few simple facts."

SYSTEMS = [None, None, None, None, "You are Pip, a helpful assistant.", "Answer briefly."]


def facts():
    """Every (questions, answer) pair: the questions are the phrasings one is asked in."""
    pairs = []
    for country, city in CAPITALS:
        pairs.append(([f"What is the capital of {country}?", f"Tell me the capital of {country}."],
                      f"The capital of {country} is {city}."))
    for title, place, plot in PLAYS:
        pairs.append(([f"Who wrote {title}?"], f"{title} was written by William Shakespeare."))
        pairs.append(([f"Where is {title} set?"], f"{title} is set in {place}."))
        pairs.append(([f"What is {title} about?"], f"{title} is about {plot}."))
    for word, other in OPPOSITES:
        pairs.append(([f"What is the opposite of {word}?", f"Tell me the opposite of {word}."],
                      f"The opposite of {word} is {other}."))
    for thing, value in COLOURS:
        pairs.append(([f"What colour is {thing}?"], f"{thing[0].upper() + thing[1:]} is {value}."))
    for beast, sound in ANIMALS:
        pairs.append(([f"What does {beast} say?"], f"{beast[0].upper() + beast[1:]} says {sound}."))
    for n in range(1, 10):
        pairs.append(([f"What number comes after {n}?"], f"After {n} comes {n + 1}."))
    for question in UNKNOWN:
        pairs.append(([question], DONT_KNOW))
    for question, answer in PERSONA:
        pairs.append(([question], answer))
    return pairs


class Deck:
    """Draws every fact once, in a shuffled order, before any fact comes again:
    each is asked about equally often."""

    def __init__(self, rng):
        self.rng, self.pairs, self.left = rng, facts(), []

    def draw(self):
        if not self.left:
            self.left = self.pairs[:]
            self.rng.shuffle(self.left)
        questions, answer = self.left.pop()
        return self.rng.choice(questions), answer


def conversation(rng, deck):
    messages = []
    system = rng.choice(SYSTEMS)
    if system:
        messages.append({"role": "system", "content": system})
    if rng.random() < 0.3:
        user, reply = rng.choice(GREETINGS[:3])
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    for _ in range(rng.choice([1, 2, 2, 3])):
        user, reply = deck.draw()
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    if rng.random() < 0.2:
        user, reply = rng.choice(GREETINGS[3:])
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages}


def write_text(jsonl, out):
    """The contents of every message of `jsonl`, one a line, a blank line after each chat."""
    text = ""
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        text += "".join(m["content"] + "\n" for m in json.loads(line)["messages"]) + "\n"
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}: the text of {jsonl}, {len(text.encode())} bytes")


def main():
    out = Path(__file__).resolve().parent.parent / "data" / "conversations.jsonl"
    if sys.argv[1:2] == ["--text"] and len(sys.argv) == 3:
        return write_text(out, Path(sys.argv[2]))
    if sys.argv[1:]:
        sys.exit("usage: make_conversations.py [--text FILE]")
    rng = random.Random(28)
    deck = Deck(rng)
    lines = [json.dumps(conversation(rng, deck), ensure_ascii=False) for _ in range(400)]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(lines)} conversations, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
