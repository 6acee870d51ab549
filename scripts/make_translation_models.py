#!/usr/bin/env python
"""Build a pair of tiny translation models on your own text, to try back-translation offline.

Usage: scripts/make_translation_models.py OUT_DIR --text FILE [--source-lang en] [--pivot fr]
       [--steps 150] [--vocab-size 200] [--model-dim 32] [--seed 0]

`fundamentallm data augment --back-translate` runs MarianMT models (Helsinki-NLP/opus-mt-*),
which a machine without a network cannot download. This script makes two small stand-ins
with the same architecture and files, in OUT_DIR/tiny-{src}-{pivot} and
OUT_DIR/tiny-{pivot}-{src}: a SentencePiece vocabulary trained on FILE, a MarianConfig with
one encoder and one decoder layer, and a few steps of training to copy lines of FILE (so
that their outputs end with an end-of-sequence token and depend on the input). Their
"translations" are noisy copies, not French: they exercise the whole pipeline, its batching,
cache and length bounds, in seconds. The tests and benchmarks/backtranslation.py use them.

    python scripts/make_translation_models.py /tmp/tiny --text data/shakespeare_sample.txt
    fundamentallm data augment data/shakespeare_sample.txt /tmp/bt.txt --back-translate \\
        --pivot fr --model-to /tmp/tiny/tiny-en-fr --model-back /tmp/tiny/tiny-fr-en --fraction 0.1
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

SPECIAL = ("</s>", "<unk>", "<pad>")  # Marian's order: eos 0, unk 1, pad 2


def build_model(directory: Path, lines: list[str], source_lang: str, target_lang: str, steps: int,
                vocab_size: int, model_dim: int, seed: int) -> None:
    """One tiny MarianMT model and its tokenizer, saved with save_pretrained in `directory`."""
    import sentencepiece
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # (its bar per saved file)

    directory.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=proto, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
        num_threads=1)
    for name in ("source.spm", "target.spm"):  # one vocabulary for both sides, as opus-mt models share one
        (directory / name).write_bytes(proto.getvalue())
    pieces = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = {token: i for i, token in enumerate(SPECIAL)}
    for i in range(pieces.get_piece_size()):
        vocab.setdefault(pieces.id_to_piece(i), len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = MarianTokenizer(str(directory / "source.spm"), str(directory / "target.spm"),
                                str(directory / "vocab.json"), source_lang=source_lang, target_lang=target_lang)
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(vocab), d_model=model_dim, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=2 * model_dim, decoder_ffn_dim=2 * model_dim,
        max_position_embeddings=128, pad_token_id=2, eos_token_id=0, decoder_start_token_id=2,
        forced_eos_token_id=0)
    model = MarianMTModel(config)
    # A random model never ends its output; a few steps of copying teach it to (and to follow its input).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = [lines[i] for i in torch.randint(len(lines), (32,), generator=generator).tolist()]
        encoded = tokenizer(batch, text_target=batch, return_tensors="pt", padding=True)
        encoded["labels"][encoded["labels"] == config.pad_token_id] = -100  # no loss on padding
        loss = model(**encoded).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Build two tiny MarianMT translation models on a text file.")
    parser.add_argument("output_dir", help="where to write tiny-SRC-PIVOT/ and tiny-PIVOT-SRC/")
    parser.add_argument("--text", required=True, help="a text file to train the vocabularies and models on")
    parser.add_argument("--source-lang", default="en", help="the language of the text (default en)")
    parser.add_argument("--pivot", default="fr", help="the pivot language named in the directories (default fr)")
    parser.add_argument("--steps", type=int, default=150, help="copy-training steps per model (default 150)")
    parser.add_argument("--vocab-size", type=int, default=200, help="SentencePiece vocabulary size (default 200)")
    parser.add_argument("--model-dim", type=int, default=32, help="the models' width (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the vocabulary and the weights (default 0)")
    args = parser.parse_args(argv)

    def build() -> int:
        from fundamentallm.data.text import read_text_file

        try:
            import sentencepiece  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            raise UserError(f"this script needs {exc.name}: pip install fundamentallm[augment]") from None
        if args.steps < 0 or args.vocab_size < 10 or args.model_dim < 2 or args.model_dim % 2:
            raise UserError("--steps must be >= 0, --vocab-size >= 10 and --model-dim even")
        lines = [line for line in read_text_file(args.text).splitlines() if line.strip()]
        if not lines:
            raise UserError(f"{args.text}: no text to train on")
        out = Path(args.output_dir)
        pairs = ((args.source_lang, args.pivot, args.seed), (args.pivot, args.source_lang, args.seed + 1))
        for source, target, seed in pairs:
            try:
                build_model(out / f"tiny-{source}-{target}", lines, source, target, args.steps,
                            args.vocab_size, args.model_dim, seed)
            except RuntimeError as exc:  # SentencePiece: a vocabulary larger than the text allows
                raise UserError(f"--vocab-size {args.vocab_size}: {str(exc).splitlines()[-1]}") from None
            print(out / f"tiny-{source}-{target}")
        return 0

    return run_reporting_errors(build)


if __name__ == "__main__":
    sys.exit(main())
