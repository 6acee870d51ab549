"""The `fundamentallm` command. The only module that reads the command line.

`COMMANDS` is the one table of subcommands. Every argument is generated from typed
options: `train`'s from its TrainOptions and the config tree (config/schema.py), the
other commands' from their classes in cli/options.py, and the sampling flags from
SamplingOptions. So each setting is declared once and a flag cannot drift from the field
it sets. A handler receives its checked options, does one library call and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from fundamentallm import __version__
from fundamentallm.atomic import write_text
from fundamentallm.cli.options import (
    DataAugmentOptions,
    DataSplitOptions,
    EvaluateOptions,
    ExportOptions,
    GenerateOptions,
    ImportOptions,
    InteractiveOptions,
    ServeOptions,
    SweepOptions,
    TokenizerDecodeOptions,
    TokenizerEncodeOptions,
    TokenizerInfoOptions,
    TokenizerTrainOptions,
    TrainOptions,
)
from fundamentallm.config import ConfigSources, dump_yaml
from fundamentallm.config.loading import FieldInfo, class_fields, fields, options_from
from fundamentallm.console import TrainingConsole, unit_progress
from fundamentallm.corpus.split import split_corpus
from fundamentallm.data.text import read_text, read_text_file, unescape
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors
from fundamentallm.tokenizers import build_tokenizer, load_tokenizer_file, save_tokenizer, tokenizer_from_dict
from fundamentallm.training.launcher import launch, strip_nproc

# A command imports the parts that load torch (checkpoint, training, generation, the server, ...)
# inside its handler, when it runs: `fundamentallm --help` and a mistyped flag answer in ~0.1 s
# instead of the ~2 s torch takes to import. Everything below this line is torch-free.

OPTIONS_PREFIX = "options:"  # the command's own options
CFG_PREFIX = "cfg:"  # train: the config tree, keyed "section.name"
SAMPLING_PREFIX = "sampling:"  # generate, interactive: SamplingOptions


# ---------------------------------------------------------------- arguments from typed options
def add_fields(p: argparse.ArgumentParser, infos: Iterable[FieldInfo], prefix: str) -> None:
    """One argument per `option(...)` field; parsed values land in `prefix + key`. Unset
    flags are absent, so a file or a saved setting is not overridden by a default."""
    groups: dict[str, Any] = {}
    for info in infos:
        if info.flag is None:
            continue
        meta = info.meta
        target = p
        if meta["exclusive"]:
            if meta["exclusive"] not in groups:  # (setdefault would make an empty group each time)
                groups[meta["exclusive"]] = p.add_mutually_exclusive_group()
            target = groups[meta["exclusive"]]
        dest = prefix + (info.key if info.section else info.name)
        common: dict[str, Any] = {"default": argparse.SUPPRESS, "help": meta["help"]}
        if meta["positional"]:
            nargs = ("+" if meta["required"] else "*") if info.kind is list else ("?" if info.optional else None)
            target.add_argument(dest, nargs=nargs, type=info.item if info.kind is list else info.kind,
                                metavar=meta["metavar"] or info.name.upper(), **common)
            continue
        names = [info.flag, *meta["aliases"]]
        common.update(dest=dest, required=meta["required"])
        if info.kind is bool:
            target.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif info.kind is list:  # repeatable
            target.add_argument(*names, action="append", metavar="TEXT", **common)
        else:
            extra = {"nargs": "?", "const": meta["const"]} if meta["const"] is not None else {}
            metavar = meta["metavar"] or (info.name.upper() if not meta["choices"] else None)
            target.add_argument(*names, type=meta["parse"] or info.kind, choices=meta["choices"], metavar=metavar,
                                **extra, **common)
        for flag, (value, help) in meta["fixed_flags"].items():
            target.add_argument(flag, action="store_const", const=value, dest=dest,
                                default=argparse.SUPPRESS, help=help)


def parsed(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix)}


def sampling_options(args: argparse.Namespace):
    from fundamentallm.sampling import SamplingOptions

    chosen = parsed(args, SAMPLING_PREFIX)
    for name in ("stop", "ban"):  # typed on a command line, \n means a newline
        if name in chosen:
            chosen[name] = [unescape(text) for text in chosen[name]]
    return SamplingOptions().updated(chosen)


def sampling_fields() -> Iterable[FieldInfo]:
    from fundamentallm.sampling import SamplingOptions

    return class_fields(SamplingOptions)


# ---------------------------------------------------------------- train
def cmd_train(o: TrainOptions, args: argparse.Namespace) -> int:
    from fundamentallm.training.loop import train
    from fundamentallm.training.start import plan_start

    sources = ConfigSources(o.config, parsed(args, CFG_PREFIX), o.data)
    if o.nproc > 1 and not o.dry_run:
        if "WORLD_SIZE" in os.environ:
            raise UserError("--nproc starts its own processes: not under torchrun, which started them already")
        plan_start(sources, o.resume)  # flag and file errors once, here, before any process starts
        return launch(o.nproc, strip_nproc(args.argv))
    if o.dry_run:
        cfg, _ = plan_start(sources, o.resume)
        print(dump_yaml(cfg), end="")
        return 0
    console = TrainingConsole("json" if o.json else "quiet" if o.quiet else "rich")
    summary = train(sources, console, resume=o.resume, overwrite=o.overwrite, new_data=o.new_data)
    if summary["stop_reason"] == "interrupted":  # train() has said how to continue
        return 128 + signal.Signals[summary.get("signal", "SIGINT")]  # the shell's convention: 130, 143
    return 0


# ---------------------------------------------------------------- sweep
SWEEP_OWN = ("checkpoint.output_dir",)  # the sweep's -o is its directory; each trial's is below it


def sweep_train_fields() -> Iterable[FieldInfo]:
    return (info for info in fields() if info.key not in SWEEP_OWN)


def cmd_sweep(o: SweepOptions, args: argparse.Namespace) -> int:
    from fundamentallm.sweep import SweepSettings, report_only, sweep

    if o.report:
        return report_only(o.report, o.storage, o.study_name, o.json)
    if not o.space or not o.output_dir:
        raise UserError("sweep: give --space SPACE.yaml and --output-dir DIR (or --report DIR)")
    trials = o.trials if o.trials is not None or o.sampler == "grid" else 20
    settings = SweepSettings(
        directory=o.output_dir, space_file=o.space,
        sources=ConfigSources(o.config, parsed(args, CFG_PREFIX), o.data), sampler=o.sampler, pruner=o.pruner,
        objective=o.objective, trials=trials, deadline=time.time() + o.timeout if o.timeout else None,
        storage=o.storage, study_name=o.study_name, sampler_seed=o.sampler_seed)
    return sweep(settings, o.workers, o.quiet)


# ---------------------------------------------------------------- evaluate
def cmd_evaluate(o: EvaluateOptions, args: argparse.Namespace) -> int:
    from fundamentallm.checkpoint import load_model
    from fundamentallm.evaluation import evaluate_data, evaluate_split
    from fundamentallm.training.precision import resolve_device

    data = o.data or o.data_file
    if o.tasks:
        if data:
            raise UserError("evaluate: score a text (--data) or run benchmark tasks (--tasks), one of them")
        return evaluate_tasks(o)
    if o.limit is not None:
        raise UserError("--limit applies to --tasks (a text is scored whole)")
    if data and o.split:
        raise UserError("evaluate: score a text (--data) or the run's validation split (--split validation), "
                        "one of them")
    if not data and not o.split:
        raise UserError("evaluate: give the text to score with --data FILE (or --split validation)")
    model, tokenizer, cfg = load_model(o.checkpoint, resolve_device(o.device))
    d = dataclasses.replace(cfg.data, text_field=o.text_field or cfg.data.text_field)
    with unit_progress("scoring", "windows", enabled=not o.json) as progress:  # on a terminal only
        score = (evaluate_split(model, tokenizer, d, o.batch_size, progress, o.precision) if o.split else
                 evaluate_data(model, tokenizer, d, data, o.batch_size, progress, o.precision))
    if o.json:
        print(json.dumps(score.to_dict()))
        return 0
    print(f"loss {score.loss:.4f} nats/token  perplexity {score.perplexity:.3f}  "
          f"bits/char {score.bits_per_char:.4f}  bits/byte {score.bits_per_byte:.4f}  "
          f"tokens {score.tokens:,} ({tokenizer.kind}, {score.precision}, {score.seconds:.1f} s)")
    if score.unknown:
        print(f"note: {score.unknown:,} characters never seen in training were not scored")
    return 0


def evaluate_tasks(o: EvaluateOptions) -> int:
    """`evaluate CKPT --tasks ...`: lm-evaluation-harness tasks on the model (harness.py)."""
    from fundamentallm.checkpoint import load_model
    from fundamentallm.harness import run_tasks
    from fundamentallm.training.precision import resolve_device

    model, tokenizer, _ = load_model(o.checkpoint, resolve_device(o.device))
    figures = run_tasks(model, tokenizer, o.tasks, o.limit, o.precision)
    if o.json:
        print(json.dumps({"tasks": figures}))
        return 0
    for task, values in figures.items():
        shown = [f"{name} {value:.4f}" + (f" ± {values[name + '_stderr']:.4f}" if name + "_stderr" in values else "")
                 for name, value in values.items() if not name.endswith("_stderr")]
        print(f"{task}: {'  '.join(shown)}")
    return 0


# ---------------------------------------------------------------- generate, interactive, serve
def load_generator(checkpoint: str, device: str):
    from fundamentallm.checkpoint import load_model
    from fundamentallm.generation import TextGenerator
    from fundamentallm.training.precision import resolve_device

    model, tokenizer, cfg = load_model(checkpoint, resolve_device(device))
    return TextGenerator(model, tokenizer, chat=cfg.data.format == "chat", ends=cfg.data.doc_boundary == "eos")


def cmd_generate(o: GenerateOptions, args: argparse.Namespace) -> int:
    options = sampling_options(args)
    generator = load_generator(o.checkpoint, o.device)
    if o.interactive:
        from fundamentallm.interactive import Repl

        return Repl(generator, options).run()
    prompt = read_text_file(o.prompt_file) if o.prompt_file else o.prompt
    prompt = "\n" if prompt is None else prompt
    _, unknown = generator.encode_prompt(prompt)
    if unknown:
        print(f"note: {unknown} prompt character(s) never seen in training were replaced by <unk>",
              file=sys.stderr)
    live = not (o.json or o.output) and options.num_samples == 1 and options.beam_width == 1
    if live:  # stream to the terminal as tokens arrive
        sys.stdout.write(prompt)
    for event in generator.stream(prompt, options):
        if live and not isinstance(event, list):
            sys.stdout.write(event[1])
            sys.stdout.flush()
    completions = event
    if o.json:
        text = json.dumps({"prompt": prompt, "samples": [c.to_dict() for c in completions]}, ensure_ascii=False)
    elif len(completions) == 1:
        text = prompt + completions[0].text
    else:
        text = "\n".join(f"--- sample {i} ---\n{prompt}{c.text}" for i, c in enumerate(completions, 1))
    if o.output:
        write_text(Path(o.output), text + "\n")
        print(f"wrote {o.output}", file=sys.stderr)
    else:
        sys.stdout.write(("" if live else text) + "\n")
    return 0


def cmd_interactive(o: InteractiveOptions, args: argparse.Namespace) -> int:
    from fundamentallm.interactive import Repl

    if o.system is not None and not o.chat:
        raise UserError("--system opens a conversation: it needs --chat")
    generator = load_generator(o.checkpoint, o.device)
    if o.chat and generator.template is None:
        raise UserError(f"interactive --chat: {o.checkpoint} was trained on plain text, not fine-tuned on "
                        "conversations (train --format chat --init-from it); without --chat it continues text")
    return Repl(generator, sampling_options(args), chat=o.chat, system=o.system).run()


def cmd_serve(o: ServeOptions, args: argparse.Namespace) -> int:
    from fundamentallm.server import API_KEY_VARIABLE, Limits, check_exposure, serve

    api_key = o.api_key or os.environ.get(API_KEY_VARIABLE) or None
    check_exposure(o.host, api_key)  # before minutes of loading a large model
    limits = Limits(o.max_tokens_limit, o.max_concurrent, o.body_timeout)
    return serve(load_generator(o.checkpoint, o.device), o.checkpoint, o.host, o.port, limits,
                 api_key, o.model_name, log_requests=not o.quiet)


# ---------------------------------------------------------------- export, import
def cmd_export(o: ExportOptions, args: argparse.Namespace) -> int:
    from fundamentallm.interop import export_checkpoint

    report = export_checkpoint(o.checkpoint, o.output, o.dtype, o.overwrite, o.outtype, o.merge_lora)
    print(report.describe())
    print(f"wrote {o.output} ({report.bytes / 1e6:,.1f} MB of {report.weights} weights, {report.seconds:.1f} s)")
    return 0


def cmd_import(o: ImportOptions, args: argparse.Namespace) -> int:
    from fundamentallm.checkpoint import model_from_checkpoint, save_checkpoint
    from fundamentallm.hf import is_model_directory, read_model_directory

    if not is_model_directory(o.directory):
        raise UserError(f"{o.directory}: not a Hugging Face model directory (no config.json)")
    model, tokenizer, cfg = model_from_checkpoint(read_model_directory(o.directory), o.directory)
    save_checkpoint(o.output, cfg, tokenizer, model)
    print(f"wrote {o.output}: {model.num_parameters():,} parameters, tokenizer {tokenizer.describe()}")
    return 0


# ---------------------------------------------------------------- tokenizer
def load_any_tokenizer(source: str):
    from fundamentallm.checkpoint import load_checkpoint
    if source.endswith(".pt"):
        try:
            return tokenizer_from_dict(load_checkpoint(source)["tokenizer"])
        except UserError as exc:
            raise UserError(f"{source}: {exc}" if not str(exc).startswith(source) else str(exc)) from None
    return load_tokenizer_file(source)


def cmd_tokenizer_train(o: TokenizerTrainOptions, args: argparse.Namespace) -> int:
    if o.vocab_size is not None and o.type != "bpe":
        raise UserError("--vocab-size applies to --type bpe only")
    tokenizer = build_tokenizer(o.type, read_text(o.data, text_field=o.text_field), o.vocab_size)
    save_tokenizer(tokenizer, o.output)
    print(f"{tokenizer.describe()} -> {o.output}")
    return 0


def cmd_tokenizer_encode(o: TokenizerEncodeOptions, args: argparse.Namespace) -> int:
    tokenizer = load_any_tokenizer(o.source)
    if (o.text is None) == (o.file is None):
        raise UserError("tokenizer encode: give the text or --file FILE (one of them)")
    ids = tokenizer.encode(o.text if o.text is not None else read_text_file(o.file))
    print(" ".join(map(str, ids)))
    if o.show_tokens:
        for i in ids:
            print(f"{i:>6}  {json.dumps(tokenizer.decode([i]), ensure_ascii=False)}")
    return 0


def cmd_tokenizer_decode(o: TokenizerDecodeOptions, args: argparse.Namespace) -> int:
    tokenizer = load_any_tokenizer(o.source)
    if any(not 0 <= i < tokenizer.vocab_size for i in o.ids):
        raise UserError(f"token ids must be between 0 and {tokenizer.vocab_size - 1}")
    print(tokenizer.decode(o.ids))
    return 0


def cmd_tokenizer_info(o: TokenizerInfoOptions, args: argparse.Namespace) -> int:
    tokenizer = load_any_tokenizer(o.source)
    print(f"type {tokenizer.kind}, vocabulary {tokenizer.vocab_size:,} tokens")
    if o.data:
        text = read_text_file(o.data)
        n = len(tokenizer.encode(text))
        print(f"{o.data}: {len(text):,} characters, {n:,} tokens: "
              f"{len(text) / n:.2f} characters/token, {len(text.encode()) / n:.2f} bytes/token")
    return 0


# ---------------------------------------------------------------- data
def cmd_data_split(o: DataSplitOptions, args: argparse.Namespace) -> int:
    path = Path(o.path)
    out = Path(o.output_dir) if o.output_dir else (path if path.is_dir() else path.parent)
    parts = split_corpus(path, out, val=o.val, test=o.test, by=o.by, shuffle=o.shuffle, seed=o.seed,
                         overwrite=o.overwrite, text_field=o.text_field)
    for part in parts:
        print(f"{part.path}: {part.units:,} {o.by}, {part.characters:,} characters")
    return 0


def cmd_data_augment(o: DataAugmentOptions, args: argparse.Namespace) -> int:
    from fundamentallm.corpus.backtranslation import BackTranslation, Generation, back_translate

    if not o.back_translate:
        raise UserError("data augment: choose the augmentation, --back-translate (random insertion and "
                        "deletion act while training: train --augment P)")
    if o.pivot is None:
        raise UserError("--back-translate needs --pivot, the language to translate through (e.g. --pivot fr)")
    settings = BackTranslation(
        source_lang=o.source_lang, pivot=o.pivot, model_to=o.model_to, model_back=o.model_back,
        fraction=o.fraction, by=o.by, mix=o.mix, batch_size=o.batch_size,
        generation=Generation(num_beams=o.num_beams, sample=o.sample), max_length=o.max_length, device=o.device,
        seed=o.seed, cache=o.cache)
    with unit_progress("back-translating", "units", enabled=not o.json) as advance:
        report = back_translate(o.input, o.output, settings, o.overwrite, advance)
    if o.json:
        print(json.dumps({**vars(report), "units_per_second": report.units_per_second}))
        return 0
    translated = report.distinct - report.from_cache
    print(f"paraphrased {report.chosen:,} of {report.units:,} {o.by} ({o.fraction:.0%}): {report.changed:,} "
          f"changed, {report.unchanged:,} came back as they were, {report.unfinished:,} unfinished (kept)")
    if report.distinct:
        print(f"{translated:,} translated there and back in {report.seconds:.1f} s "
              f"({report.units_per_second:.1f} {o.by}/s, {report.batches:,} batches), {report.from_cache:,} "
              f"from the cache {report.cache}")
    print(f"wrote {o.output} ({report.output_units:,} {o.by}) and {o.output}.pairs.jsonl")
    return 0


# ---------------------------------------------------------------- the command table
@dataclass
class Command:
    help: str
    options: type | None = None  # the dataclass of this command's own options
    run: Callable[[Any, argparse.Namespace], int] | None = None
    more: tuple[tuple[Callable[[], Iterable[FieldInfo]], str], ...] = ()  # further typed option sets
    actions: dict[str, "Command"] = field(default_factory=dict)  # sub-actions instead of `run`


COMMANDS: dict[str, Command] = {
    "train": Command("train a model on text", TrainOptions, cmd_train, more=((fields, CFG_PREFIX),)),
    "sweep": Command("search hyperparameters: many train runs, chosen by Optuna", SweepOptions, cmd_sweep,
                     more=((sweep_train_fields, CFG_PREFIX),)),
    "evaluate": Command("score a checkpoint on a text file", EvaluateOptions, cmd_evaluate),
    "generate": Command("sample text from a checkpoint", GenerateOptions, cmd_generate,
                        more=((sampling_fields, SAMPLING_PREFIX),)),
    "interactive": Command("a prompt loop over a checkpoint that keeps its settings", InteractiveOptions,
                           cmd_interactive, more=((sampling_fields, SAMPLING_PREFIX),)),
    "serve": Command("an HTTP API (with OpenAI-compatible endpoints) and web page for a checkpoint",
                     ServeOptions, cmd_serve),
    "export": Command("write a checkpoint as a Hugging Face transformers model directory", ExportOptions,
                      cmd_export),
    "import": Command("read a Hugging Face model directory into a checkpoint", ImportOptions, cmd_import),
    "tokenizer": Command("train, inspect or apply a tokenizer", actions={
        "train": Command("train a tokenizer on text and save it as JSON", TokenizerTrainOptions,
                         cmd_tokenizer_train),
        "encode": Command("text to token ids", TokenizerEncodeOptions, cmd_tokenizer_encode),
        "decode": Command("token ids to text", TokenizerDecodeOptions, cmd_tokenizer_decode),
        "info": Command("vocabulary size and, with --data, characters per token", TokenizerInfoOptions,
                        cmd_tokenizer_info),
    }),
    "data": Command("prepare data: split a corpus into train/validation/test, or paraphrase it", actions={
        "split": Command("split a corpus into train.txt / val.txt (/ test.txt)", DataSplitOptions,
                         cmd_data_split),
        "augment": Command("write a paraphrased copy of a text file by back-translation (MarianMT models)",
                           DataAugmentOptions, cmd_data_augment),
    }),
}


def add_command(p: argparse.ArgumentParser, command: Command, depth: int = 0) -> None:
    if command.actions:
        sub = p.add_subparsers(dest=f"action{depth}", required=True, metavar="ACTION", parser_class=ArgumentParser)
        for name, action in command.actions.items():
            add_command(sub.add_parser(name, help=action.help, description=action.help), action, depth + 1)
        return
    add_fields(p, class_fields(command.options), OPTIONS_PREFIX)
    for infos, prefix in command.more:
        add_fields(p, infos(), prefix)
    p.set_defaults(handler=command)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="fundamentallm",
                            description="Train a transformer language model on your own text.")
    parser.add_argument("--version", action="version", version=f"fundamentallm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=ArgumentParser)
    for name, command in COMMANDS.items():
        add_command(sub.add_parser(name, help=command.help, description=command.help), command)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return, don't exit
        return exc.code if isinstance(exc.code, int) else 0
    command: Command = args.handler
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a command that starts itself again (--nproc)
    return run_reporting_errors(
        lambda: command.run(options_from(command.options, parsed(args, OPTIONS_PREFIX)), args))


def run() -> None:
    sys.exit(main(sys.argv[1:]))
