#!/usr/bin/env python
"""A multiple-choice task for lm-evaluation-harness, built offline from a text.

    python scripts/make_choice_task.py data/shakespeare_sample.txt tasks/ [--questions 200] [--seed 0]

writes tasks/shakespeare_next_word.jsonl and tasks/shakespeare_next_word.yaml: each question
is the start of a line of the last 10% of the text (held out by the standard split) and four
choices for its next word, the true one and three drawn from the rest of the text. A model
that has learnt the language picks the true word more often than the 25% of chance.

    fundamentallm evaluate runs/first/final.pt --tasks tasks/shakespeare_next_word.yaml
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from fundamentallm.atomic import write_text
from fundamentallm.data.text import read_text_file
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

NAME = "shakespeare_next_word"
TASK = f"""# A multiple-choice task built by scripts/make_choice_task.py from public-domain Shakespeare:
# the start of a held-out line, and four choices for its next word.
task: {NAME}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {NAME}.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def questions(text: str, count: int, rng: random.Random) -> list[dict]:
    cut = int(len(text) * 0.9)
    vocabulary = sorted({w for w in text[:cut].split() if w.isalpha()})
    lines = [line.split() for line in text[cut:].splitlines() if len(line.split()) >= 4]
    if len(lines) < 10 or len(vocabulary) < 10:
        raise UserError("the text is too short for a choice task: it needs lines of 4 words or more in its last 10%")
    out = []
    for _ in range(count):
        words = rng.choice(lines)
        at = rng.randrange(2, len(words))
        right = words[at]
        wrong = rng.sample([w for w in vocabulary if w != right], 3)
        choices = [" " + w for w in [right, *wrong]]
        rng.shuffle(choices)
        out.append({"context": " ".join(words[:at]), "choices": choices, "answer": choices.index(" " + right)})
    return out


def make(args) -> int:
    if args.questions < 1:
        raise UserError("--questions must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = questions(read_text_file(args.text), args.questions, random.Random(args.seed))
    write_text(out / f"{NAME}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_text(out / f"{NAME}.yaml", TASK)
    print(f"{out / (NAME + '.yaml')}: {len(records)} questions")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="A multiple-choice task for lm-evaluation-harness, from your own text.")
    parser.add_argument("text", help="a UTF-8 text file")
    parser.add_argument("out", help="directory for the task's .yaml and .jsonl")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: make(args))


if __name__ == "__main__":
    sys.exit(main())
