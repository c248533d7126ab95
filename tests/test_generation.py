"""Generation: which tokens the sampling filters keep (against a direct computation on hand-built distributions:
ties, top_p = 1, tiny top_p, temperature, top-k then top-p), that draws come only from the kept tokens, how stop
tokens end rows and pad them (on a scripted model whose every token is known), and padded prompts of different
lengths (each row continues as its prompt alone)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.generation import GenerationMixin, sample_next, sampling_logits
from xlstmkit.models.xlstm_large import xLSTMLarge, xLSTMLargeConfig

from conftest import perturb_xlstm_large_


def kept(logits: list[float], **filters) -> set[int]:
    out = sampling_logits(torch.tensor([logits]), **filters)[0]
    return {j for j in range(len(logits)) if out[j] > -math.inf}


def direct_top_k(logits: list[float], k: int) -> set[int]:
    """The k highest logits, and every token tied with the k-th."""
    kth = sorted(logits, reverse=True)[k - 1]
    return {j for j, x in enumerate(logits) if x >= kth}


def direct_top_p(probs: list[float], top_p: float) -> set[int]:
    """Walk the tokens from the most probable; stop once the kept mass reaches top_p; keep the ties of the last one."""
    order = sorted(range(len(probs)), key=lambda j: -probs[j])
    mass, last = 0.0, None
    for j in order:
        last = probs[j]
        mass += probs[j]
        if mass >= top_p:
            break
    return {j for j, p in enumerate(probs) if p >= last}


def softmax(logits: list[float], temperature: float = 1.0) -> list[float]:
    top = max(logits)
    e = [math.exp((x - top) / temperature) for x in logits]
    return [x / sum(e) for x in e]


LOGITS = [3.0, 1.0, 2.0, 2.0, 0.0, 2.0, -1.0]  # three tokens tied at 2


@pytest.mark.parametrize("k", range(1, 8))
def test_top_k_keeps_the_k_highest_and_their_ties(k):
    assert kept(LOGITS, top_k=k) == direct_top_k(LOGITS, k)
    assert kept(LOGITS, top_k=k, temperature=0.3) == direct_top_k(LOGITS, k)  # temperature keeps the order


# probabilities 1/2, 1/4, 1/8, 1/8 as log-probabilities: the cumulative masses 0.5, 0.75, 0.875, 1
HALVES = [math.log(p) for p in (0.5, 0.25, 0.125, 0.125)]


@pytest.mark.parametrize("top_p, expected", [
    (1e-9, {0}),  # tiny top_p: the most probable token only
    (0.3, {0}),
    (0.6, {0, 1}),
    (0.8, {0, 1, 2, 3}),  # the mass reaches 0.8 at token 2; token 3 is tied with it and kept too
    (0.99, {0, 1, 2, 3}),
    (1.0, {0, 1, 2, 3}),  # top_p = 1 keeps everything
])
def test_top_p_keeps_the_smallest_set_reaching_top_p_and_its_ties(top_p, expected):
    assert kept(HALVES, top_p=top_p) == expected == direct_top_p(softmax(HALVES), top_p)


def test_top_p_acts_on_the_distribution_at_the_temperature():
    # at temperature 0.5 the probabilities become 0.727, 0.182, 0.045, 0.045: 0.8 is reached with two tokens
    assert kept(HALVES, top_p=0.8, temperature=0.5) == {0, 1} == direct_top_p(softmax(HALVES, 0.5), 0.8)
    assert kept(HALVES, top_p=0.8, temperature=1.0) == {0, 1, 2, 3}


def test_top_p_acts_on_the_distribution_left_by_top_k():
    logits = [math.log(p) for p in (0.4, 0.3, 0.2, 0.1)]
    assert kept(logits, top_p=0.5) == {0, 1}  # 0.4 < 0.5: a second token is needed
    assert kept(logits, top_k=2, top_p=0.5) == {0}  # renormalised over two tokens the first has 4/7 >= 0.5


@pytest.mark.parametrize("seed", range(6))
def test_filters_match_the_direct_computation_on_random_distributions_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randint(-4, 4, (12,), generator=g).double() * 0.7).tolist()  # few distinct values: many ties
    temperature = [0.5, 1.0, 2.0][seed % 3]
    probs = softmax(logits, temperature)
    cum = sorted(probs, reverse=True)
    cum = [sum(cum[:i + 1]) for i in range(len(cum))]
    for top_p in (0.05, 0.3, 0.5, 0.7, 0.9):
        if min(abs(c - top_p) for c in cum) < 1e-4:
            continue  # a boundary float32 cannot decide; the hand-built cases cover exact boundaries
        assert kept(logits, top_p=top_p, temperature=temperature) == direct_top_p(probs, top_p), top_p
    for k in (1, 3, 6):
        assert kept(logits, top_k=k, temperature=temperature) == direct_top_k(logits, k)


def test_draws_come_only_from_the_kept_tokens_and_reach_all_of_them():
    logits = torch.tensor([HALVES] * 400)
    g = torch.Generator().manual_seed(0)
    draws = set(sample_next(logits, temperature=1.0, top_p=0.6, generator=g).tolist())
    assert draws == {0, 1}
    draws = set(sample_next(torch.tensor([LOGITS] * 400), temperature=1.0, top_k=2, generator=g).tolist())
    assert draws == direct_top_k(LOGITS, 2)
    assert sample_next(torch.tensor([LOGITS]), temperature=0.0, top_k=5).item() == 0  # greedy ignores filters


# --- stop tokens and padding, on a model whose every token is scripted ----------------------------------------------


class ScriptedLM(GenerationMixin, nn.Module):
    """Greedy generation emits script[b, t] at step t in row b: the state is the step counter."""

    def __init__(self, script: list[list[int]], vocab_size: int = 10) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size)
        self.script = torch.tensor(script)

    def _logits(self, t: torch.Tensor) -> torch.Tensor:
        tokens = self.script[torch.arange(self.script.shape[0]), t.clamp_max(self.script.shape[1] - 1)]
        return nn.functional.one_hot(tokens, self.config.vocab_size).float()

    def forward(self, input_ids, state=None, return_state=False, attention_mask=None):
        t = torch.zeros(input_ids.shape[0], dtype=torch.long) if state is None else state
        logits = self._logits(t)[:, None].expand(-1, input_ids.shape[1], -1)
        return (logits, t) if return_state else logits

    def decode_step(self, tokens, state):
        return self._logits(state + 1), state + 1


SCRIPT = [[4, 5, 9, 6, 7, 8], [1, 2, 3, 4, 5, 6], [7, 9, 1, 9, 2, 3]]
PROMPT = torch.zeros(3, 2, dtype=torch.long)


def test_without_stop_tokens_generation_emits_the_script():
    out = ScriptedLM(SCRIPT).generate(PROMPT, 6)
    assert out[:, 2:].tolist() == SCRIPT and torch.equal(out[:, :2], PROMPT)


def test_stop_token_ends_each_row_and_pads_after_it():
    out = ScriptedLM(SCRIPT).generate(PROMPT, 6, stop_tokens=[9], pad_token=0)
    assert out[:, 2:].tolist() == [[4, 5, 9, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 9, 0, 0, 0, 0]]


def test_pad_defaults_to_the_first_stop_token_and_generation_ends_when_every_row_stopped():
    out = ScriptedLM(SCRIPT).generate(PROMPT, 6, stop_tokens=[9, 4])
    # row 0 stops at 4 (step 0), row 1 at 4 (step 3), row 2 at 9 (step 1): all stopped after 4 tokens
    assert out[:, 2:].tolist() == [[4, 9, 9, 9], [1, 2, 3, 4], [7, 9, 9, 9]]


def test_bad_stop_and_pad_tokens_are_rejected():
    model = ScriptedLM(SCRIPT)
    with pytest.raises(ValueError, match="stop_tokens"):
        model.generate(PROMPT, 3, stop_tokens=[10])
    with pytest.raises(ValueError, match="pad_token"):
        model.generate(PROMPT, 3, stop_tokens=[9], pad_token=-1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(PROMPT, 3, temperature=float("nan"))


# --- padded prompts of different lengths -----------------------------------------------------------------------------

V = 29


def paper_lm() -> xLSTMLM:
    torch.manual_seed(0)
    cfg = xLSTMConfig(vocab_size=V, embedding_dim=16, num_blocks=2, block_pattern="xLSTM[1:1]", mlstm_num_heads=2,
                      slstm_num_heads=2, chunk_size=4)
    model = xLSTMLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.double()


def large_lm() -> xLSTMLarge:
    torch.manual_seed(1)
    # eos_token_id=None: a tiny random model may emit the default end token (2) and stop one row early
    model = xLSTMLarge(xLSTMLargeConfig(vocab_size=V, embedding_dim=16, num_heads=2, num_blocks=2, chunk_size=4,
                                        ffn_round_up_to_multiple_of=16, eos_token_id=None))
    perturb_xlstm_large_(model)
    return model.double()


@pytest.mark.parametrize("make", [paper_lm, large_lm], ids=["xLSTMLM", "xLSTMLarge"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_prompts_continue_as_each_prompt_alone(make, side):
    model = make()
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(1, V, (n,), generator=g) for n in (6, 1, 3)]
    S = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), S, dtype=torch.long)
    mask = torch.zeros(len(prompts), S, dtype=torch.long)
    for b, p in enumerate(prompts):
        cols = slice(S - len(p), S) if side == "left" else slice(0, len(p))
        ids[b, cols], mask[b, cols] = p, 1
    out = model.generate(ids, 8, attention_mask=mask)
    assert torch.equal(out[:, :S], ids)
    for b, p in enumerate(prompts):
        alone = model.generate(p[None], 8)
        assert torch.equal(out[b, S:], alone[0, len(p):]), f"row {b} (prompt length {len(p)})"


def test_a_prompt_row_without_real_tokens_is_rejected():
    model = paper_lm()
    with pytest.raises(ValueError, match="without any real token"):
        model.generate(torch.ones(2, 3, dtype=torch.long), 2, attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))


def test_sampled_tokens_follow_the_softmax_of_the_filtered_logits():
    """sample_next draws (Gumbel-max) with the probabilities softmax(logits / T) over the kept tokens: frequencies
    of 40,000 draws (one batch of rows) within 4 standard errors of the exact probabilities, filtered tokens never."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -5.0])
    rows = 40_000
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits.expand(rows, -1).clone(), temperature=0.7, top_k=3, generator=g)
    p = torch.softmax(logits[:3] / 0.7, dim=0).double()
    freq = torch.bincount(draws, minlength=5).double() / rows
    assert freq[3:].sum() == 0
    se = (p * (1 - p) / rows).sqrt()
    assert ((freq[:3] - p).abs() < 4 * se).all(), (freq, p)
