"""The `fundamentallm` command. The only module that reads the command line.

`COMMANDS` is the one table of subcommands. `train`'s flags are generated from the config
tree (config/schema.py), so each setting is declared once and a flag cannot drift from
the field it sets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from fundamentallm import __version__
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

CFG_PREFIX = "cfg:"


# ---------------------------------------------------------------- train
def add_train_args(p: argparse.ArgumentParser) -> None:
    from fundamentallm.config.loading import fields

    p.add_argument("data", nargs="*", help="training text files or directories of .txt files")
    p.add_argument("--config", help="YAML run config (flags override it), e.g. configs/small.yaml")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from OUTPUT_DIR/resume_checkpoint.pt, or from PATH")
    p.add_argument("--resume-from", dest="resume", metavar="PATH", help="same as --resume PATH")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output directory that holds an earlier run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quiet", "-q", action="store_true", help="print only warnings and errors")
    mode.add_argument("--json", action="store_true", help="print JSON lines (start, metrics, end)")
    for info in fields():
        if info.flag is None:
            continue
        names = [info.flag, *info.meta["aliases"]]
        common = {"dest": CFG_PREFIX + info.key, "default": argparse.SUPPRESS, "help": info.meta["help"]}
        if info.kind is bool:
            p.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        else:
            p.add_argument(*names, type=info.kind, choices=info.meta["choices"],
                           metavar=info.name.upper() if not info.meta["choices"] else None, **common)


def resolve_config(args: argparse.Namespace, saved: dict | None = None):
    """Defaults ← saved checkpoint config (when resuming) ← --config file ← flags."""
    from fundamentallm.config import Config, apply_mapping, config_from_dict, load_yaml
    from fundamentallm.config.loading import apply_flags

    cfg = config_from_dict(saved, "checkpoint config") if saved else Config()
    if args.config:
        path = Path(args.config)
        if not path.exists() and (Path("configs") / f"{args.config}.yaml").exists():
            path = Path("configs") / f"{args.config}.yaml"  # --config small
        apply_mapping(cfg, load_yaml(path), str(path))
    flags = {k[len(CFG_PREFIX):]: v for k, v in vars(args).items() if k.startswith(CFG_PREFIX)}
    apply_flags(cfg, flags)
    if args.data:
        cfg.data.train = list(args.data)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from fundamentallm.checkpoint import load_checkpoint
    from fundamentallm.config import dump_yaml, validate
    from fundamentallm.console import TrainingConsole
    from fundamentallm.training.loop import RESUME_NAME, train

    cfg = resolve_config(args)
    payload = None
    if args.resume:
        path = Path(cfg.checkpoint.output_dir) / RESUME_NAME if args.resume is True else Path(args.resume)
        payload = load_checkpoint(path)
        cfg = resolve_config(args, payload["config"])
    if not cfg.data.train:
        raise UserError("train: give a training text file (fundamentallm train FILE)")
    if args.dry_run:
        validate(cfg)
        print(dump_yaml(cfg), end="")
        return 0
    console = TrainingConsole("json" if args.json else "quiet" if args.quiet else "rich")
    summary = train(cfg, console, resume=payload, resume_path=str(args.resume),
                    overwrite=args.overwrite)
    if summary["stop_reason"] == "interrupted":
        console.message(f"interrupted: state saved; continue with --resume "
                        f"(output dir {cfg.checkpoint.output_dir})")
        return 130
    return 0


# ---------------------------------------------------------------- evaluate
def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt file written by train (e.g. OUTPUT_DIR/final.pt)")
    p.add_argument("data_file", nargs="?", metavar="DATA", help="text file to score (or --data)")
    p.add_argument("--data", help="text file to score; every token is scored once")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from fundamentallm.checkpoint import load_model
    from fundamentallm.data.dataset import encode
    from fundamentallm.data.text import read_text_file
    from fundamentallm.evaluation import evaluate
    from fundamentallm.training.precision import resolve_device

    data = args.data or args.data_file
    if not data:
        raise UserError("evaluate: give the text to score with --data FILE")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be greater than 0 (got {args.batch_size})")
    model, tokenizer, _ = load_model(args.checkpoint, resolve_device(args.device))
    score = evaluate(model, encode(tokenizer, read_text_file(data)), args.batch_size, tokenizer.unk_id)
    if args.json:
        print(json.dumps(score.to_dict()))
        return 0
    print(f"loss {score.loss:.4f} nats/token  perplexity {score.perplexity:.3f}  "
          f"bits/char {score.bits_per_char:.4f}  tokens {score.tokens:,}")
    if score.unknown:
        print(f"note: {score.unknown:,} characters never seen in training were not scored")
    return 0


# ---------------------------------------------------------------- generate
def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt file written by train (e.g. OUTPUT_DIR/final.pt)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-tokens", "--max-length", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))


def cmd_generate(args: argparse.Namespace) -> int:
    from fundamentallm.checkpoint import load_model
    from fundamentallm.generation import SamplingOptions, generate
    from fundamentallm.training.precision import resolve_device

    options = SamplingOptions(args.max_tokens, args.temperature, args.top_k, args.top_p,
                              args.seed, args.num_samples)
    options.check()
    model, tokenizer, _ = load_model(args.checkpoint, resolve_device(args.device))
    prompt = tokenizer.encode(args.prompt)
    unknown = prompt.count(tokenizer.unk_id) if tokenizer.unk_id is not None else 0
    if unknown:
        print(f"note: {unknown} prompt character(s) never seen in training were replaced by <unk>",
              file=sys.stderr)
    banned = [tokenizer.unk_id] if tokenizer.unk_id is not None else []
    stream = options.num_samples == 1
    samples: list[list[int]] = [[] for _ in range(options.num_samples)]
    if stream:
        sys.stdout.write(args.prompt)
    for tokens in generate(model, prompt, options, banned):
        for sample, token in zip(samples, tokens.tolist()):
            sample.append(token)
        if stream:
            sys.stdout.write(tokenizer.decode(samples[0][-1:]))
            sys.stdout.flush()
    if stream:
        sys.stdout.write("\n")
    else:
        for i, sample in enumerate(samples, 1):
            sys.stdout.write(f"--- sample {i} ---\n{args.prompt}{tokenizer.decode(sample)}\n")
    return 0


# ---------------------------------------------------------------- the command table
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a model on text", add_train_args, cmd_train),
    "evaluate": ("score a checkpoint on a text file", add_evaluate_args, cmd_evaluate),
    "generate": ("sample text from a checkpoint", add_generate_args, cmd_generate),
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="fundamentallm",
                            description="Train a transformer language model on your own text.")
    parser.add_argument("--version", action="version", version=f"fundamentallm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=ArgumentParser)
    for name, (help_text, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return, don't exit
        return exc.code if isinstance(exc.code, int) else 0
    return run_reporting_errors(lambda: COMMANDS[args.command][2](args))


def run() -> None:
    sys.exit(main(sys.argv[1:]))
