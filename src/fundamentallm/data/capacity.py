"""How large a model a corpus supports before it mostly memorises it: one rule, used by the
budget sizing (training/sizing.py) and by analyze_data.py's advice.

Repeating data costs little up to about four epochs; beyond that each repeat is worth less
and the model turns to memorising (Muennighoff et al. 2023, "Scaling Data-Constrained
Language Models"). A model of N parameters at its best size for a budget trains on about
R·N tokens, R being the tokens per parameter the sizing aims at, so a corpus of T tokens
feeds at most the model with R·N <= 4·T: N <= 4·T / R, about 1.1 parameters per token.

R is far below Chinchilla's ~20 (Hoffmann et al. 2022) because the budgets here are short
(minutes, not days): fitted on Shakespeare, the best shape after 105 s saw 5.3-7.3 tokens per
parameter and the next one up, worse, 1.3; after 600 s the best (192 x 6) saw 3.8
(benchmarks/README.md, section 7).
"""

from __future__ import annotations

# Tokens each parameter sees at the best shape for a (short) budget.
TOKENS_PER_PARAMETER = 3.5
# Passes over a corpus that are worth about as much as fresh data.
USEFUL_EPOCHS = 4


def supported_parameters(tokens: int) -> int:
    """The largest model `tokens` training tokens support."""
    return int(USEFUL_EPOCHS * tokens / TOKENS_PER_PARAMETER)
