#!/usr/bin/env python
"""Back-translation throughput: lines per second of `fundamentallm data augment --back-translate`
at several batch sizes, each from an empty cache, and the rerun that the cache serves.

    python benchmarks/backtranslation.py --json                      # tiny models built here
    python benchmarks/backtranslation.py --model-to DIR --model-back DIR --device cuda --json

Without --model-to/--model-back the pair of tiny MarianMT models of
scripts/make_translation_models.py is built on the first 20 KB of the data (nothing can be
downloaded here): their speed says what the pipeline around the models costs (tokenising,
batching, length bounds, cache), not what opus-mt's 74M-parameter models cost; pass
those (downloaded with `hf download Helsinki-NLP/opus-mt-en-fr`) to measure them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

ROOT = Path(__file__).resolve().parents[1]


def augment(data: Path, out: Path, to: str, back: str, cache: Path, args, batch_size: int) -> dict:
    command = [sys.executable, "-m", "fundamentallm", "data", "augment", str(data), str(out), "--back-translate",
               "--pivot", "fr", "--model-to", to, "--model-back", back, "--cache", str(cache), "--overwrite",
               "--fraction", str(args.fraction), "--batch-size", str(batch_size), "--device", args.device, "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"data augment failed: {done.stderr.strip().splitlines()[-1:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    keep = ("units", "chosen", "distinct", "pieces", "changed", "unchanged", "unfinished", "from_cache", "batches",
            "seconds", "units_per_second")
    digest = hashlib.blake2b(out.read_bytes(), digest_size=8).hexdigest()  # the same text at every batch size?
    return {"batch_size": batch_size, **{k: report[k] for k in keep}, "output_digest": digest}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "shakespeare_sample.txt"))
    parser.add_argument("--chars", type=int, default=200_000, help="characters of the data to paraphrase")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--model-to", help="default: a tiny model built here")
    parser.add_argument("--model-back")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    def run() -> int:
        from fundamentallm.data.text import read_text_file

        text = read_text_file(args.data)
        results: dict = {"data": args.data, "chars": min(args.chars, len(text)), "fraction": args.fraction,
                         "device": args.device, "runs": []}
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "in.txt").write_text(text[:args.chars], encoding="utf-8")
            to, back = args.model_to, args.model_back
            if not (to and back):
                (work / "vocab.txt").write_text(text[:20_000], encoding="utf-8")
                built = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_translation_models.py"),
                                        str(work / "models"), "--text", str(work / "vocab.txt")],
                                       capture_output=True, text=True)
                if built.returncode != 0:
                    raise UserError(f"building the tiny models failed: {built.stderr.strip().splitlines()[-1:]}")
                to, back = str(work / "models" / "tiny-en-fr"), str(work / "models" / "tiny-fr-en")
                results["models"] = "tiny MarianMT pair of scripts/make_translation_models.py (d_model 32, 1+1 layers)"
            else:
                results["models"] = [to, back]
            for size in (int(s) for s in args.batch_sizes.split(",")):
                results["runs"].append(augment(work / "in.txt", work / "out.txt", to, back, work / f"cache{size}",
                                               args, size))
                if not args.json:
                    print(results["runs"][-1], file=sys.stderr)
            size = int(args.batch_sizes.split(",")[-1])
            rerun = augment(work / "in.txt", work / "out.txt", to, back, work / f"cache{size}", args, size)
            results["rerun_from_cache"] = {"seconds": rerun["seconds"], "from_cache": rerun["from_cache"],
                                           "batches": rerun["batches"]}
        print(json.dumps(results, indent=None if args.json else 2))
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
