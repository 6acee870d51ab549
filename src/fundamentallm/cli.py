"""The `fundamentallm` command. The only module that reads the command line.

`COMMANDS` is the one table of subcommands. `train`'s flags are generated from the config
tree (config/schema.py), so each setting is declared once and a flag cannot drift from
the field it sets.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Callable

from fundamentallm import __version__
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

CFG_PREFIX = "cfg:"
SAMPLING_PREFIX = "sampling:"


# ---------------------------------------------------------------- train
def add_train_args(p: argparse.ArgumentParser) -> None:
    from fundamentallm.config.loading import fields

    p.add_argument("data", nargs="*", help="training text files or directories of .txt files")
    p.add_argument("--config", help="YAML run config (flags override it), e.g. configs/small.yaml")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH|auto",
                   help="continue from OUTPUT_DIR/resume_checkpoint.pt, or from PATH; auto: continue "
                        "if that file exists, else start afresh (for jobs that may be restarted)")
    p.add_argument("--resume-from", dest="resume", metavar="PATH", help="same as --resume PATH")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output directory that holds an earlier run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quiet", "-q", action="store_true", help="print only warnings and errors")
    mode.add_argument("--json", action="store_true", help="print JSON lines (start, metrics, end)")
    add_field_flags(p, fields(), CFG_PREFIX)


def add_field_flags(p: argparse.ArgumentParser, infos, prefix: str) -> None:
    """One flag per `option(...)` field; parsed values land in `prefix + key`, unset ones
    are absent (so a file or a saved setting is not overridden by a default)."""
    for info in infos:
        if info.flag is None:
            continue
        names = [info.flag, *info.meta["aliases"]]
        common = {"dest": prefix + info.key, "default": argparse.SUPPRESS, "help": info.meta["help"]}
        if info.kind is bool:
            p.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif info.kind is list:  # repeatable
            p.add_argument(*names, action="append", metavar="TEXT", **common)
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
    payload = init = path = None
    if args.resume == "auto":
        args.resume = True if (Path(cfg.checkpoint.output_dir) / RESUME_NAME).exists() else None
    if args.resume:
        path = Path(cfg.checkpoint.output_dir) / RESUME_NAME if args.resume is True else Path(args.resume)
        payload = load_checkpoint(path)
        cfg = resolve_config(args, payload["config"])
    elif cfg.training.init_from:  # the model shape and tokenizer come from the checkpoint
        init = load_checkpoint(cfg.training.init_from)
        saved = init["config"]
        data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
        cfg = resolve_config(args, {"model": saved.get("model"),
                                    "data": {k: data[k] for k in ("tokenizer", "vocab_size") if k in data}})
    if not cfg.data.train:
        raise UserError("train: give a training text file (fundamentallm train FILE)")
    if args.dry_run:
        validate(cfg)
        print(dump_yaml(cfg), end="")
        return 0
    console = TrainingConsole("json" if args.json else "quiet" if args.quiet else "rich")
    summary = train(cfg, console, resume=payload, resume_path=str(path),
                    overwrite=args.overwrite, init=init)
    if summary["stop_reason"] == "interrupted":  # train() has said how to continue
        return 128 + signal.Signals[summary.get("signal", "SIGINT")]  # the shell's convention: 130, 143
    return 0


# ---------------------------------------------------------------- evaluate
def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt file written by train (e.g. OUTPUT_DIR/final.pt)")
    p.add_argument("data_file", nargs="?", metavar="DATA",
                   help="text to score: a file, a directory or a JSONL file (or --data)")
    p.add_argument("--data", help="text to score; every token is scored once")
    p.add_argument("--text-field", help="JSONL: the field holding the text (default: the training run's)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from fundamentallm.checkpoint import load_model
    from fundamentallm.data.text import read_text
    from fundamentallm.evaluation import evaluate
    from fundamentallm.training.precision import resolve_device

    data = args.data or args.data_file
    if not data:
        raise UserError("evaluate: give the text to score with --data FILE")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be greater than 0 (got {args.batch_size})")
    model, tokenizer, cfg = load_model(args.checkpoint, resolve_device(args.device))
    d = cfg.data  # documents are read and joined as the training run read them
    text = read_text(data, d.separator, d.glob, args.text_field or d.text_field)
    score = evaluate(model, tokenizer, text, args.batch_size)
    if args.json:
        print(json.dumps(score.to_dict()))
        return 0
    print(f"loss {score.loss:.4f} nats/token  perplexity {score.perplexity:.3f}  "
          f"bits/char {score.bits_per_char:.4f}  bits/byte {score.bits_per_byte:.4f}  "
          f"tokens {score.tokens:,} ({tokenizer.kind})")
    if score.unknown:
        print(f"note: {score.unknown:,} characters never seen in training were not scored")
    return 0


# ---------------------------------------------------------------- generate
def add_generate_args(p: argparse.ArgumentParser) -> None:
    from fundamentallm.config.loading import class_fields
    from fundamentallm.sampling import SamplingOptions

    p.add_argument("checkpoint", help="a .pt file written by train (e.g. OUTPUT_DIR/final.pt)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    prompt.add_argument("--prompt-file", help="continue the text of this file")
    p.add_argument("--output", help="write the output to this file instead of stdout")
    p.add_argument("--json", action="store_true",
                   help="print JSON: each sample's text, token count, mean log-probability and tokens/s")
    p.add_argument("--interactive", action="store_true", help="a prompt loop that keeps the settings")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    add_field_flags(p, class_fields(SamplingOptions), SAMPLING_PREFIX)


def sampling_options(args: argparse.Namespace):
    from fundamentallm.sampling import SamplingOptions

    from fundamentallm.data.text import unescape

    chosen = {k[len(SAMPLING_PREFIX) + 1:]: v for k, v in vars(args).items() if k.startswith(SAMPLING_PREFIX)}
    for name in ("stop", "ban"):  # typed on a command line, \n means a newline
        if name in chosen:
            chosen[name] = [unescape(text) for text in chosen[name]]
    return SamplingOptions().updated(chosen)


def load_sampler(checkpoint: str, device: str):
    from fundamentallm.checkpoint import load_model
    from fundamentallm.generation import Sampler
    from fundamentallm.training.precision import resolve_device

    model, tokenizer, _ = load_model(checkpoint, resolve_device(device))
    return Sampler(model, tokenizer)


def cmd_generate(args: argparse.Namespace) -> int:
    import json

    from fundamentallm.atomic import write_text
    from fundamentallm.data.text import read_text_file

    options = sampling_options(args)
    sampler = load_sampler(args.checkpoint, args.device)
    if args.interactive:
        from fundamentallm.interactive import Repl

        return Repl(sampler, options).run()
    prompt = read_text_file(args.prompt_file) if args.prompt_file else args.prompt
    prompt = "\n" if prompt is None else prompt
    _, unknown = sampler.encode_prompt(prompt)
    if unknown:
        print(f"note: {unknown} prompt character(s) never seen in training were replaced by <unk>",
              file=sys.stderr)
    live = not (args.json or args.output) and options.num_samples == 1 and options.beam_width == 1
    if live:  # stream to the terminal as tokens arrive
        sys.stdout.write(prompt)
    for event in sampler.stream(prompt, options):
        if live and not isinstance(event, list):
            sys.stdout.write(event[1])
            sys.stdout.flush()
    completions = event
    if args.json:
        text = json.dumps({"prompt": prompt, "samples": [c.to_dict() for c in completions]}, ensure_ascii=False)
    elif len(completions) == 1:
        text = prompt + completions[0].text
    else:
        text = "\n".join(f"--- sample {i} ---\n{prompt}{c.text}" for i, c in enumerate(completions, 1))
    if args.output:
        write_text(Path(args.output), text + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(("" if live else text) + "\n")
    return 0


# ---------------------------------------------------------------- interactive, serve
def add_interactive_args(p: argparse.ArgumentParser) -> None:
    from fundamentallm.config.loading import class_fields
    from fundamentallm.sampling import SamplingOptions

    p.add_argument("checkpoint", help="a .pt file written by train (e.g. OUTPUT_DIR/final.pt)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    add_field_flags(p, class_fields(SamplingOptions), SAMPLING_PREFIX)


def cmd_interactive(args: argparse.Namespace) -> int:
    from fundamentallm.interactive import Repl

    return Repl(load_sampler(args.checkpoint, args.device), sampling_options(args)).run()


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt file written by train (e.g. OUTPUT_DIR/final.pt)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--max-tokens-limit", type=int, default=1000,
                   help="the largest max_tokens a request may ask for")


def cmd_serve(args: argparse.Namespace) -> int:
    from fundamentallm.server import serve

    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be between 0 and 65535 (got {args.port})")
    if args.max_tokens_limit < 1:
        raise UserError(f"--max-tokens-limit must be at least 1 (got {args.max_tokens_limit})")
    return serve(load_sampler(args.checkpoint, args.device), args.checkpoint, args.host, args.port,
                 args.max_tokens_limit)


# ---------------------------------------------------------------- tokenizer
def add_tokenizer_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=ArgumentParser)
    t = sub.add_parser("train", help="train a tokenizer on text and save it as JSON")
    t.add_argument("data", nargs="+", help="text files, directories or JSONL files")
    t.add_argument("--type", default="bpe", choices=("bpe", "char", "byte"), help="tokenizer type (bpe)")
    t.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default 2048)")
    t.add_argument("--text-field", default="text", help="JSONL: the field holding the text")
    t.add_argument("--output", "-o", required=True, help="where to write the tokenizer (.json)")
    for name, help_text in (("encode", "text to token ids"), ("decode", "token ids to text"),
                            ("info", "vocabulary size and, with --data, characters per token")):
        a = sub.add_parser(name, help=help_text, description=help_text)
        a.add_argument("source", help="a tokenizer .json (tokenizer train) or a checkpoint .pt")
        if name == "encode":
            a.add_argument("text", nargs="?", help="the text (or --file)")
            a.add_argument("--file", help="encode this file's text")
            a.add_argument("--show-tokens", action="store_true", help="print each token's text too")
        elif name == "decode":
            a.add_argument("ids", nargs="+", type=int, help="token ids")
        else:
            a.add_argument("--data", help="a text file to measure characters and bytes per token on")


def load_any_tokenizer(source: str):
    from fundamentallm.checkpoint import load_checkpoint
    from fundamentallm.tokenizers import load_tokenizer_file, tokenizer_from_dict

    if source.endswith(".pt"):
        return tokenizer_from_dict(load_checkpoint(source)["tokenizer"])
    return load_tokenizer_file(source)


def cmd_tokenizer(args: argparse.Namespace) -> int:
    import json

    from fundamentallm.data.text import read_text, read_text_file
    from fundamentallm.tokenizers import build_tokenizer, save_tokenizer

    if args.action == "train":
        if args.vocab_size is not None and args.type != "bpe":
            raise UserError("--vocab-size applies to --type bpe only")
        tokenizer = build_tokenizer(args.type, read_text(args.data, text_field=args.text_field), args.vocab_size)
        save_tokenizer(tokenizer, args.output)
        print(f"{tokenizer.describe()} -> {args.output}")
        return 0
    tokenizer = load_any_tokenizer(args.source)
    if args.action == "encode":
        if (args.text is None) == (args.file is None):
            raise UserError("tokenizer encode: give the text or --file FILE (one of them)")
        ids = tokenizer.encode(args.text if args.text is not None else read_text_file(args.file))
        print(" ".join(map(str, ids)))
        if args.show_tokens:
            for i in ids:
                print(f"{i:>6}  {json.dumps(tokenizer.decode([i]), ensure_ascii=False)}")
    elif args.action == "decode":
        if any(not 0 <= i < tokenizer.vocab_size for i in args.ids):
            raise UserError(f"token ids must be between 0 and {tokenizer.vocab_size - 1}")
        print(tokenizer.decode(args.ids))
    else:
        print(f"type {tokenizer.kind}, vocabulary {tokenizer.vocab_size:,} tokens")
        if args.data:
            text = read_text_file(args.data)
            n = len(tokenizer.encode(text))
            print(f"{args.data}: {len(text):,} characters, {n:,} tokens: "
                  f"{len(text) / n:.2f} characters/token, {len(text.encode()) / n:.2f} bytes/token")
    return 0


# ---------------------------------------------------------------- data
def add_data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=ArgumentParser)
    s = sub.add_parser("split", help="split a corpus into train.txt / val.txt (/ test.txt)",
                       description="split a corpus into train.txt / val.txt (/ test.txt)")
    s.add_argument("path", help="a text file (or, --by documents, a directory or JSONL file)")
    s.add_argument("--val", type=float, default=0.1, help="validation share (0.1)")
    s.add_argument("--test", type=float, default=0.0, help="test share (0: no test.txt)")
    s.add_argument("--by", default="lines", choices=("lines", "chars", "documents"),
                   help="unit that is moved whole (lines)")
    s.add_argument("--shuffle", action="store_true", help="draw each unit's part at random (seeded)")
    s.add_argument("--seed", type=int, default=0, help="seed for --shuffle")
    s.add_argument("--text-field", default="text", help="JSONL: the field holding the text")
    s.add_argument("--output-dir", "-o", help="where to write (default: beside the input)")
    s.add_argument("--overwrite", action="store_true", help="replace existing train/val/test files")


def cmd_data(args: argparse.Namespace) -> int:
    from fundamentallm.data.split import split_corpus

    path = Path(args.path)
    out = Path(args.output_dir) if args.output_dir else (path if path.is_dir() else path.parent)
    parts = split_corpus(path, out, args.val, args.test, args.by, args.shuffle, args.seed,
                         args.overwrite, args.text_field)
    for part in parts:
        print(f"{part.path}: {part.units:,} {args.by}, {part.characters:,} characters")
    return 0


# ---------------------------------------------------------------- the command table
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a model on text", add_train_args, cmd_train),
    "evaluate": ("score a checkpoint on a text file", add_evaluate_args, cmd_evaluate),
    "generate": ("sample text from a checkpoint", add_generate_args, cmd_generate),
    "interactive": ("a prompt loop over a checkpoint that keeps its settings", add_interactive_args,
                    cmd_interactive),
    "serve": ("an HTTP API and web page for a checkpoint", add_serve_args, cmd_serve),
    "tokenizer": ("train, inspect or apply a tokenizer", add_tokenizer_args, cmd_tokenizer),
    "data": ("prepare data: split a corpus into train/validation/test", add_data_args, cmd_data),
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
