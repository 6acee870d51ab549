"""A FundamentaLLM model as a `transformers` causal LM, for the variants that no standard
architecture computes. `fundamentallm export` writes this file beside FundamentaLLM's own
model code (transformer.py, kv_cache.py, which import only torch), so the function is the
one the model was trained with, not a re-implementation of it.

Limits: batches without padding (an attention mask of all ones), and at most
`context_length` positions, as in training.
"""

import types

import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_fundamentallm import MODEL_FIELDS, FundamentaLLMConfig
from .transformer import GPT, RotaryPositions

# The output field that carries the cache: `cache` in newer transformers, `past_key_values` before.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class CacheView:
    """FundamentaLLM's cache interface (length, update, advance) over a transformers Cache."""

    def __init__(self, cache):
        self.cache, self.length = cache, cache.get_seq_length()

    def update(self, layer, k, v):
        return self.cache.update(k, v, layer)

    def advance(self, n):
        pass  # the transformers cache counts the positions it has been given


class FundamentaLLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = FundamentaLLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]
    _tied_weights_keys = {"model.head.weight": "model.embed.weight"}

    def __init__(self, config):
        super().__init__(config)
        fields = {name: getattr(config, name) for name in MODEL_FIELDS}
        # Training-only options: off in a model that is loaded to be used.
        self.model = GPT(types.SimpleNamespace(**fields, dropconnect=0.0, zero_init=False))
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, RotaryPositions):  # derived tables, not stored with the weights
            module.reset_tables()

    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value):
        self.model.embed = value

    def get_output_embeddings(self):
        return self.model.head

    def set_output_embeddings(self, value):
        self.model.head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, use_cache=None, **kwargs):
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("FundamentaLLM models take batches without padding (attention_mask all ones)")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None and use_cache:
            cache = DynamicCache()
        logits = self.model(input_ids, cache=CacheView(cache) if cache is not None else None)  # (B, T, V)
        loss = None
        if labels is not None:  # the transformers convention: labels are the inputs, shifted here
            loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache})

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            input_ids = input_ids[:, cache.get_seq_length():]  # only the tokens not yet seen
        return {"input_ids": input_ids, CACHE_FIELD: cache, "use_cache": kwargs.get("use_cache", True),
                "attention_mask": kwargs.get("attention_mask")}


__all__ = ["FundamentaLLMForCausalLM"]
