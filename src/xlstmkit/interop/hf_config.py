"""`xLSTMKitConfig`: the transformers config of xlstmkit's language models (model_type "xlstmkit").

It wraps an xlstmkit model config rather than repeating its fields: `family` names the architecture ("xlstm": the
paper's `xLSTMLM`; "xlstm_large": the 7B architecture `xLSTMLarge`, the families of `xlstmkit.train.build`) and
`xlstmkit_config` holds that architecture's config as a dict (`xLSTMConfig.to_dict()` / `xLSTMLargeConfig.to_dict()`),
validated by xlstmkit's own config class, the single place the architecture is checked. The fields transformers and
its tools read (`vocab_size`, `hidden_size`, `num_hidden_layers`, `tie_word_embeddings`, the special token ids) are
derived from it, so they cannot disagree with the weights.

Only `transformers.configuration_utils` is imported here, so registering this class with `AutoConfig` costs
milliseconds (see `autoregister`).
"""

from __future__ import annotations

try:
    from transformers.configuration_utils import PretrainedConfig
except ModuleNotFoundError as err:  # the same one line as xlstmkit.extras.require gives
    if (err.name or "").split(".")[0] != "transformers":
        raise
    raise ImportError("xlstmkit's transformers models need 'transformers', which is not installed: "
                      "pip install 'xlstmkit[hf]'") from None

from .pretrained import FAMILIES, MODEL_TYPE, family_config


class xLSTMKitConfig(PretrainedConfig):
    """transformers config for `xLSTMKitForCausalLM`: an xlstmkit model config (`family`, `xlstmkit_config`) plus
    the generation settings transformers keeps in a model config.

        config = xLSTMKitConfig.from_xlstmkit(xLSTMConfig(vocab_size=256, num_blocks=4))   # or
        config = xLSTMKitConfig(family="xlstm", xlstmkit_config={"vocab_size": 256, "num_blocks": 4})
    """

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference = ["past_key_values"]

    family: str = "xlstm"
    xlstmkit_config: dict | None = None
    # derived from xlstmkit_config in __post_init__ (values given here are overwritten)
    vocab_size: int | None = None
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        cfg = family_config(self.family, self.xlstmkit_config)
        self.xlstmkit_config = cfg.to_dict()
        self.vocab_size = cfg.vocab_size
        self.hidden_size = cfg.embedding_dim
        self.num_hidden_layers = cfg.num_blocks
        self.tie_word_embeddings = bool(getattr(cfg, "tie_weights", False))
        if self.family == "xlstm_large":  # the 7B config carries its special tokens itself
            self.bos_token_id, self.eos_token_id, self.pad_token_id = (cfg.bos_token_id, cfg.eos_token_id,
                                                                       cfg.pad_token_id)
        super().__post_init__(**kwargs)

    @classmethod
    def from_xlstmkit(cls, config, **kwargs) -> xLSTMKitConfig:
        """The transformers config of an `xLSTMConfig` or `xLSTMLargeConfig` (kwargs: e.g. eos_token_id=...)."""
        from ..config import xLSTMConfig

        family = "xlstm" if isinstance(config, xLSTMConfig) else "xlstm_large"
        family_config(family, config.to_dict())  # a TypeError/ValueError for anything else
        return cls(family=family, xlstmkit_config=config.to_dict(), **kwargs)

    def to_xlstmkit(self):
        """The xlstmkit config object (`xLSTMConfig` or `xLSTMLargeConfig`)."""
        return family_config(self.family, self.xlstmkit_config)


__all__ = ["xLSTMKitConfig", "MODEL_TYPE", "FAMILIES", "family_config"]
