"""xlstmkit's language models as transformers models: `xLSTMKitForCausalLM` (with `xLSTMKitConfig`, `xLSTMKitCache`).

    import xlstmkit                                   # registers model_type "xlstmkit" with AutoConfig/AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(d)   # a folder from xLSTMLM.save_pretrained / xlstmkit export
    out = model(input_ids, attention_mask=mask, labels=input_ids)      # out.loss, out.logits, out.past_key_values
    model.generate(input_ids, max_new_tokens=20, num_beams=4)          # transformers' generate: greedy, sampling, beams
    hf = xLSTMKitForCausalLM.from_xlstmkit(xlstm_lm)  # wrap a model in memory (shares its parameters)
    hf.model                                           # the xlstmkit model inside (xLSTMLM or xLSTMLarge)

The wrapper holds the xlstmkit model as `self.model` and adds what transformers' machinery expects around it; the
computation is the xlstmkit model's own `forward` / `decode_step`, so logits are those of the xlstmkit model.

forward(input_ids, attention_mask=None, past_key_values=None, labels=None, use_cache=None, return_dict=None):
- `past_key_values` is an `xLSTMKitCache`: the recurrent state after the tokens seen so far (a fixed-size tuple over
  blocks, whatever the length) and how many columns those were. The call continues from it and updates it in place
  (as transformers' caches are updated), and returns it as `past_key_values` when `use_cache` (default: the
  config's `use_cache` in eval mode, off in training mode, where nothing would read it).
- `attention_mask` (B, S) or, during generation, (B, columns so far): its last S columns mark the real tokens of
  this call; padded positions change no state (`xLSTMLM.forward(attention_mask=)`), so left-padded batches continue
  each row as its prompt alone would. Ids at padded positions may be anything (e.g. a pad id outside the model's
  vocabulary): they are replaced by 0 before the embedding and never reach a state.
- `labels` (B, S): `loss` is the mean cross-entropy of predicting labels[:, t+1] from position t, ignoring -100
  (transformers' causal-LM loss, which also honours Trainer's `num_items_in_batch`).
- one-token calls without padding (generation's decoding steps) go through the model's `decode_step`, longer ones
  through its sequence `forward`: the same paths as xlstmkit's own `generate`, so greedy tokens agree exactly.

Generation: the model is stateful (`_is_stateful`: no assisted decoding, which needs rolling a state back) and
creates no transformers `Cache`; beam search reorders the state by beam index through `xLSTMKitCache.reorder_cache`.

LoRA and other adapters (peft) replace `nn.Linear` modules by wrappers. xlstmkit's fused fast paths read some linear
layers' weights directly (e.g. the folded gate maps of the mLSTM layer, the concatenated projections of the 7B
layer); they would skip an adapter. So before each call the wrapper checks whether a layer that fuses has had a child
replaced, and runs such layers (and the whole one-token step) on the plain equations, which call every module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from . import pretrained
from .hf_config import MODEL_TYPE, xLSTMKitConfig  # first: a one-line ImportError when transformers is missing

from transformers.generation import GenerationMixin  # noqa: E402, I001
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402
from transformers.modeling_utils import PreTrainedModel  # noqa: E402


def map_state(fn: Callable[[Tensor], Tensor], state: Any) -> Any:
    """Apply fn to every tensor of a (nested) recurrent state of tuples / named tuples, keeping its structure."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(map_state(fn, s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, s) for s in state)
    return state  # None (a block without that part)


class xLSTMKitCache:
    """The recurrent state carried between calls during generation: `state` (the xlstmkit model's state, a tuple
    over blocks) and `seen_tokens` (how many input columns it has consumed, padding included, which is what
    transformers compares with the attention mask to find the new tokens). Its size does not depend on the length.

    Not a `transformers.Cache`: there are no keys and values to grow, crop or quantise. It provides what generate
    uses: `get_seq_length`, in-place `reorder_cache(beam_idx)` for beam search, and `is_compileable` /
    `is_croppable` (False: the state cannot be rolled back to an earlier length)."""

    is_compileable = False
    is_croppable = False

    def __init__(self, state: Any = None, seen_tokens: int = 0) -> None:
        self.state = state
        self.seen_tokens = seen_tokens

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.seen_tokens

    def update(self, state: Any, new_tokens: int) -> None:
        self.state = state
        self.seen_tokens += new_tokens

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Keep, for every row, the state of row beam_idx[row] (beam search's survivors, duplicates allowed)."""
        self.state = map_state(lambda t: t.index_select(0, beam_idx.to(t.device)), self.state)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.state = map_state(lambda t: t.repeat_interleave(repeats, dim=0), self.state)

    def batch_select_indices(self, indices: Tensor) -> None:
        self.state = map_state(lambda t: t[indices.to(t.device)], self.state)

    def reset(self) -> None:
        self.state, self.seen_tokens = None, 0

    def __repr__(self) -> str:
        return f"xLSTMKitCache(seen_tokens={self.seen_tokens}, blocks={0 if self.state is None else len(self.state)})"


def _fused_slots(model: nn.Module) -> list[tuple[nn.Module, bool, tuple[tuple[str, type], ...]]]:
    """Every module with a `fused` switch, its setting, and the (name, type) of its direct children: a child whose
    type later differs has been replaced (by an adapter), and the module must then run its plain equations."""
    return [(m, bool(m.fused), tuple((n, type(c)) for n, c in m.named_children()))
            for m in model.modules() if isinstance(getattr(m, "fused", None), bool)]


class xLSTMKitForCausalLM(PreTrainedModel, GenerationMixin):
    """A causal LM for transformers around an xlstmkit `xLSTMLM` (family "xlstm") or `xLSTMLarge` ("xlstm_large")."""

    config_class = xLSTMKitConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _is_stateful = True
    _no_split_modules = ["MLSTMBlock", "SLSTMBlock", "xLSTMLargeBlock"]
    _tied_weights_keys = {"model.head.weight": "model.embedding.weight"}  # used only when tie_word_embeddings
    supports_gradient_checkpointing = True  # honoured by xLSTMLarge (its `gradient_checkpointing` switch)

    def __init__(self, config: xLSTMKitConfig, model: nn.Module | None = None) -> None:
        super().__init__(config)
        if model is None:
            from ..train.build import build_model

            model = build_model({"family": config.family, **config.xlstmkit_config})
        self.model = model
        self._slots = _fused_slots(model)
        self.post_init()

    @classmethod
    def from_xlstmkit(cls, model: nn.Module, **config_kwargs) -> xLSTMKitForCausalLM:
        """Wrap an `xLSTMLM` / `xLSTMLarge` (its parameters are shared, not copied). config_kwargs: e.g.
        eos_token_id=... for the paper's LM, whose own config has no special tokens."""
        pretrained.family_of(model)
        config = xLSTMKitConfig.from_xlstmkit(model.config, **config_kwargs)
        param = next(model.parameters())
        config.dtype = param.dtype
        return cls(config, model=model).to(param.device)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, strict: a checkpoint that does not fill every parameter (missing,
        unexpected or misshapen tensors) is a ValueError instead of a model with untrained parts."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                              **kwargs)
        problems = {k: sorted(v)[:3] for k, v in info.items()
                    if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if problems:
            raise ValueError(f"{pretrained_model_name_or_path}: the weights do not fit the config: {problems}")
        pretrained.retie(model.model)
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' `save_pretrained`, plus the two import-only modules `auto_map` names (see
        `xlstmkit.interop.pretrained`), so the folder also loads where xlstmkit is not imported."""
        self.config.auto_map = dict(pretrained.AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        pretrained.write_remote_code(save_directory)

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing: the xlstmkit modules initialise themselves in their constructors (the paper's and the 7B
        schemes, docs/blocks.md), and `from_pretrained` refuses checkpoints that leave a parameter unfilled."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the state is not keys and values: generate must not create a DynamicCache for us

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embedding = value
        self._set_vocab_size(value.num_embeddings)

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.head if hasattr(self.model, "head") else self.model.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        setattr(self.model, "head" if hasattr(self.model, "head") else "lm_head", value)

    def _set_vocab_size(self, n: int) -> None:
        self.model.config = self.model.config.replace(vocab_size=n)
        self.config.xlstmkit_config = self.model.config.to_dict()
        self.config.vocab_size = n

    def _plain_layers(self) -> bool:
        """Switch fused layers whose children were replaced (adapters) to their plain equations, and back when the
        children are the original types again; True when any layer is adapted."""
        adapted = False
        for module, fused, children in self._slots:
            changed = any(type(getattr(module, name, None)) is not kind for name, kind in children)
            module.fused = fused and not changed
            adapted = adapted or changed
        return adapted

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        past_key_values: xLSTMKitCache | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        inputs_embeds: Tensor | None = None,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        if inputs_embeds is not None:
            raise ValueError("xLSTMKitForCausalLM takes input_ids, not inputs_embeds")
        if output_hidden_states or output_attentions:
            raise ValueError("xLSTMKitForCausalLM returns no hidden states or attentions (an xLSTM has no attention)")
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a (batch, seq_len) tensor of token ids, got "
                             f"{tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__}")
        if past_key_values is not None and not isinstance(past_key_values, xLSTMKitCache):
            raise TypeError(f"past_key_values must be an xLSTMKitCache (from a previous output), got "
                            f"{type(past_key_values).__name__}")
        use_cache = (self.config.use_cache and not self.training) if use_cache is None else use_cache
        return_dict = self.config.return_dict if return_dict is None else return_dict
        S = input_ids.shape[1]
        mask = self._this_call_mask(attention_mask, input_ids)
        if mask is not None:
            input_ids = input_ids.masked_fill(~mask, 0)
        adapted = self._plain_layers()
        state = None if past_key_values is None else past_key_values.state
        if S == 1 and mask is None and not adapted:
            logits, state = self.model.decode_step(input_ids[:, 0], state)
            logits = logits[:, None]
        else:
            logits, state = self.model(input_ids, state=state, return_state=True, attention_mask=mask)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=logits.shape[-1], **kwargs)
        cache = None
        if use_cache:
            cache = past_key_values if past_key_values is not None else xLSTMKitCache()
            cache.update(state, S)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache)
        return out if return_dict else out.to_tuple()

    @staticmethod
    def _this_call_mask(attention_mask: Tensor | None, input_ids: Tensor) -> Tensor | None:
        """The (B, S) bool mask of this call's tokens from a mask over this call's columns or over every column so
        far (generation passes the whole history); None when every token is real."""
        if attention_mask is None:
            return None
        if not isinstance(attention_mask, Tensor) or attention_mask.dim() != 2 \
                or attention_mask.shape[0] != input_ids.shape[0] or attention_mask.shape[1] < input_ids.shape[1]:
            raise ValueError(f"attention_mask must have shape (batch, >= seq_len) = ({input_ids.shape[0]}, >= "
                             f"{input_ids.shape[1]}), got "
                             f"{tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else attention_mask}")
        mask = attention_mask[:, -input_ids.shape[1]:].to(input_ids.device) != 0
        return None if bool(mask.all()) else mask


def register() -> None:
    """Register with AutoConfig and AutoModelForCausalLM now (`import xlstmkit` arranges this lazily: see
    `xlstmkit.interop.autoregister`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register(MODEL_TYPE, xLSTMKitConfig, exist_ok=True)
    AutoModelForCausalLM.register(xLSTMKitConfig, xLSTMKitForCausalLM, exist_ok=True)


__all__ = ["xLSTMKitConfig", "xLSTMKitForCausalLM", "xLSTMKitCache", "map_state", "register"]
