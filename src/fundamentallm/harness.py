"""Benchmark tasks through lm-evaluation-harness (`fundamentallm evaluate CKPT --tasks ...`).

lm-eval asks a language model three things (its `LM` interface): the log-probability of a
continuation after a context (a multiple-choice task compares its choices so), the
log-probability of a whole text (perplexity tasks), and text generated until a stop string.
`HarnessModel` answers them with our model itself, for any checkpoint or exported directory:
nothing is exported and no remote code runs. The context and continuation are split into ids
as lm-eval's own Hugging Face backend splits them (`TemplateLM._encode_pair`), and an empty
context is the end-of-text token, so the figures are those `lm_eval --model hf` gives on the
export.

Tasks are lm-eval's names (their data comes from the Hugging Face Hub, so they need the
network once) or local task YAML files (offline; `tasks/` ships one built from Shakespeare).
Needs the `eval` extra: `pip install 'fundamentallm[eval]'`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fundamentallm.errors import UserError
from fundamentallm.generation import TextGenerator
from fundamentallm.model import GPT
from fundamentallm.sampling import SamplingOptions
from fundamentallm.tokenizers import Tokenizer
from fundamentallm.training.precision import resolve_precision


def harness() -> Any:
    try:  # the [eval] extra, loaded by --tasks only (heavy, and optional)
        import lm_eval
        from lm_eval.api.model import TemplateLM
    except ImportError:
        raise UserError("evaluate --tasks needs lm-evaluation-harness: pip install 'fundamentallm[eval]'") from None
    return lm_eval, TemplateLM


def harness_model(model: GPT, tokenizer: Tokenizer, precision: str = "auto"):
    """Our model behind lm-eval's LM interface."""
    _, TemplateLM = harness()
    if tokenizer.eos_id is None:
        raise UserError("evaluate --tasks: this model's tokenizer has no end-of-text token (it was saved before "
                        "there was one), which lm-eval starts an empty context with; fine-tune it with --init-from, "
                        "which adds it")
    arithmetic = resolve_precision(precision, next(model.parameters()).device)

    class HarnessModel(TemplateLM):
        backend = "causal"

        @property
        def eot_token_id(self) -> int:
            return tokenizer.eos_id

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return tokenizer.encode(string)

        @torch.inference_mode()
        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
            results = []
            for _, context, continuation in requests:
                results.append(continuation_logprob(model, context, continuation, arithmetic.autocast))
            return results

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # the [eval] extra (see harness)

            totals = []
            for (text,) in [request.args for request in requests]:
                windows = map(make_disjoint_window, get_rolling_token_windows(
                    token_list=tokenizer.encode(text), prefix_token=tokenizer.eos_id,
                    max_seq_len=model.cfg.context_length, context_len=1))
                totals.append(sum(lp for lp, _ in self._loglikelihood_tokens([(None, c, t) for c, t in windows])))
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            generator = TextGenerator(model, tokenizer)  # until lm-eval's stop strings or its token budget
            replies = []
            for context, settings in [request.args for request in requests]:
                until = settings.get("until") or []
                options = SamplingOptions(max_tokens=int(settings.get("max_gen_toks", 256)), temperature=0,
                                          stop=[until] if isinstance(until, str) else list(until))
                replies.append(generator.complete(context, options)[0].text)
            return replies

    return HarnessModel()


def continuation_logprob(model: GPT, context: list[int], continuation: list[int], autocast) -> tuple[float, bool]:
    """log P(continuation | context) and whether greedy decoding would write it. Each target
    sees as much of what precedes it as the context window holds (a continuation longer than
    the window is scored a window at a time)."""
    ids, window = context + continuation, model.cfg.context_length
    device = next(model.parameters()).device
    total, greedy = 0.0, True
    for first in range(len(context), len(ids), window):  # the targets first .. last - 1
        last = min(first + window, len(ids))
        x = torch.tensor([ids[max(0, last - window - 1):last - 1]], device=device)  # (1, T)
        with autocast():
            logits = model(x)[0, -(last - first):].float()  # (n, V): the predictions of the targets
        target = torch.tensor(ids[first:last], device=device)
        total += float(F.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum())
        greedy = greedy and bool((logits.argmax(-1) == target).all())
    return total, greedy


def task_list(tasks: list[str]) -> list[str | dict[str, Any]]:
    """lm-eval task names as they are; a local task .yaml file as its config, with the data
    files it names found beside it (lm-eval would look for them in the current directory)."""
    import yaml  # a dependency, needed here only

    found: list[str | dict[str, Any]] = []
    for task in tasks:
        path = Path(task)
        if path.suffix not in (".yaml", ".yml"):
            found.append(task)
            continue
        if not path.is_file():
            raise UserError(f"--tasks {task}: no such task file")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise UserError(f"--tasks {task}: not a task file ({str(exc).splitlines()[0]})") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("task"), str):
            raise UserError(f"--tasks {task}: a task file names its task (task: NAME)")
        files = (spec.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(files, dict):
            spec["dataset_kwargs"]["data_files"] = {
                split: str(path.resolve().parent / name) if isinstance(name, str) else name
                for split, name in files.items()}
        found.append(spec)
    return found


def run_tasks(model: GPT, tokenizer: Tokenizer, tasks: list[str], limit: int | None = None,
              precision: str = "auto") -> dict[str, dict[str, float]]:
    """Each task's figures: {task: {"acc": ..., "acc_stderr": ..., ...}} (lm-eval's metrics)."""
    lm_eval, _ = harness()
    from lm_eval.tasks import TaskManager  # the [eval] extra, present: harness() checked

    chosen = task_list(tasks)
    manager = TaskManager()
    unknown = [task for task in chosen if isinstance(task, str) and task not in manager.all_tasks]
    if unknown:
        raise UserError(f"--tasks: unknown task {unknown[0]!r} (a name lm-eval knows, or a task .yaml file)")
    try:
        results = lm_eval.simple_evaluate(model=harness_model(model, tokenizer, precision), tasks=chosen,
                                          task_manager=manager, limit=limit, log_samples=False)
    except (OSError, ValueError, ConnectionError) as exc:  # the data of a hub task, offline
        raise UserError(f"--tasks: lm-eval could not run ({str(exc).splitlines()[0][:160]})") from None
    figures = {}
    for task, values in results["results"].items():
        figures[task] = {key.split(",")[0]: value for key, value in values.items()
                         if "," in key and isinstance(value, (int, float)) and not math.isnan(value)}
    return figures
