"""The `transformers` configuration of a FundamentaLLM model that no standard architecture
computes (for instance ReLU² MLPs). Written by `fundamentallm export` beside the weights;
loaded with `trust_remote_code=True`. Its fields are the `model` section of a FundamentaLLM
config, under their own names (standard names such as `hidden_size` map onto them)."""

from transformers import PretrainedConfig

# Every field the model reads, with FundamentaLLM's defaults.
MODEL_FIELDS = {
    "vocab_size": 256, "model_dim": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": None,
    "context_length": 128, "dropout": 0.0, "norm": "rmsnorm", "position": "rope", "activation": "swiglu",
    "norm_gain": True, "qk_norm": True, "tie_embeddings": False, "rope_theta": 10000.0,
    "mlp_hidden": None, "norm_eps": None,
}


class FundamentaLLMConfig(PretrainedConfig):
    model_type = "fundamentallm"
    attribute_map = {"hidden_size": "model_dim", "num_hidden_layers": "num_layers",
                     "num_attention_heads": "num_heads", "max_position_embeddings": "context_length"}

    def __init__(self, **kwargs):
        for name, default in MODEL_FIELDS.items():
            setattr(self, name, kwargs.pop(name, default))
        kwargs.setdefault("tie_word_embeddings", self.tie_embeddings)
        super().__init__(**kwargs)
