#!/usr/bin/env python
"""A small chat task with exact answers, built offline from your own text.

    python scripts/make_chat_data.py data/shakespeare_sample.txt chats/ [--questions 4000] [--seed 0]

writes chats/train.jsonl (questions about the first 90% of the text) and chats/test.jsonl
(questions about the last 10%, which a base model trained on the standard split never saw),
one conversation per line in OpenAI's form, {"messages": [{"role", "content"}, ...]}. Each
question has one right answer, computed from the text, so a model's replies can be scored
by exact match (benchmarks/chat.py):

    first      "First word? <line>"            -> its first word
    last       "Last word? <line>"             -> its last word
    count      "How many words? <line>"        -> the number, in digits
    backwards  "Spell backwards: <word>"       -> the word reversed
    capitals   "In capitals: <word>"           -> the word upper-cased

(short questions, so that a conversation fits a small model's context of 128 characters).

Some conversations open with a system message, and some ask a second question after the
first answer (multi-turn), so the template's every part is trained.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

from fundamentallm.atomic import write_text
from fundamentallm.data.text import read_text_file
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

SYSTEM = "Answer briefly."
WORD = re.compile(r"[A-Za-z]+")


def tasks(lines: list[str], words: list[str]):
    """Question makers: each takes a random generator and returns (question, answer)."""
    def line_words(rng):
        line = rng.choice(lines)
        return line, line.split()

    def first(rng):
        line, parts = line_words(rng)
        return f"First word? {line}", parts[0]

    def last(rng):
        line, parts = line_words(rng)
        return f"Last word? {line}", parts[-1]

    def count(rng):
        line, parts = line_words(rng)
        return f"How many words? {line}", str(len(parts))

    def backwards(rng):
        word = rng.choice(words)
        return f"Spell backwards: {word}", word[::-1]

    def capitals(rng):
        word = rng.choice(words)
        return f"In capitals: {word}", word.upper()

    return [first, last, count, backwards, capitals]


def usable(text: str) -> tuple[list[str], list[str]]:
    """Lines of 3 to 8 words, and words of 3 to 8 letters, of a part of the text."""
    lines = [" ".join(line.split()) for line in text.splitlines() if 3 <= len(line.split()) <= 8]
    words = sorted({w for w in WORD.findall(text) if 3 <= len(w) <= 8})
    return lines, words


def conversations(text: str, count: int, rng: random.Random) -> list[dict]:
    lines, words = usable(text)
    if len(lines) < 10 or len(words) < 10:
        raise UserError("the text is too short for a chat task: it needs lines of 3 to 8 words and words of 3 to "
                        "8 letters (a few kilobytes of prose or verse)")
    makers = tasks(lines, words)
    out = []
    for _ in range(count):
        messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.5 else []
        for _turn in range(2 if rng.random() < 0.25 else 1):
            maker = rng.choice(makers)
            question, answer = maker(rng)
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        out.append({"messages": messages, "task": maker.__name__})  # the last question's kind, for scoring
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="A chat task with exact answers, from your own text.")
    parser.add_argument("text", help="a UTF-8 text file")
    parser.add_argument("out", help="directory for train.jsonl and test.jsonl")
    parser.add_argument("--questions", type=int, default=4000, help="training conversations (default 4000)")
    parser.add_argument("--test-questions", type=int, default=300, help="test conversations (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: make(args))


def make(args) -> int:
    if args.questions < 1 or args.test_questions < 1:
        raise UserError("--questions and --test-questions must be at least 1")
    text = read_text_file(args.text)
    cut = int(len(text) * 0.9)  # the standard split: the test questions are about held-out text
    rng = random.Random(args.seed)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for name, part, count in (("train", text[:cut], args.questions), ("test", text[cut:], args.test_questions)):
        records = conversations(part, count, rng)
        write_text(out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        print(f"{out / (name + '.jsonl')}: {count:,} conversations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
