"""Generation's token choice: `TokenChooser` (noise drawn per block of steps, the draw in one native call) chooses
exactly the token `sample_next` (the tensor-op definition) chooses from the same logits and noise; the path taken
never changes what a seed generates; the draws follow the softmax of the filtered logits."""

import pytest
import torch

from xlstmkit import xLSTMConfig, xLSTMLM
from xlstmkit.generation import TokenChooser, draw_log_e, sample_next
from xlstmkit.ops import native

needs_native = pytest.mark.skipif(native.library() is None, reason="native library unavailable")


def _chooser_with_noise(log_e: torch.Tensor, **kwargs) -> TokenChooser:
    """A chooser whose next draw uses `log_e` (B, V)."""
    chooser = TokenChooser(**kwargs)
    chooser.block, chooser.key, chooser.used = (log_e,), (log_e.shape, log_e.device), 0
    return chooser


def _awkward_logits(g: torch.Generator, trial: int) -> torch.Tensor:
    B = int(torch.randint(1, 5, (1,), generator=g))
    V = int(torch.randint(1, 300, (1,), generator=g))
    logits = torch.randn(B, V, generator=g) * 3
    if trial % 3 == 0:
        logits = logits.round()  # ties, at the top-k cut too
    if trial % 5 == 0:
        logits[logits < -2] = float("-inf")
    if trial % 7 == 0:  # distinct logits that become one value once divided by the temperature
        logits[:, : V // 2] = 1.0
        logits[:, V // 2:] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    if trial % 53 == 0:
        logits[0, V // 2] = float("nan")
    if trial % 59 == 0:
        logits[:] = float("-inf")
    return logits


@needs_native
@pytest.mark.parametrize("temperature", [0.0, 1e-3, 0.7, 1.0, 3.0])
@pytest.mark.parametrize("top_k", [None, 1, 2, 5, 50, 400])
def test_native_choice_equals_sample_next_on_the_same_noise(temperature, top_k):
    """Ties, -inf, NaN, all -inf, logits that collide after the division, k above the vocabulary: the same token."""
    g = torch.Generator().manual_seed(hash((temperature, top_k)) % 2**31)
    for trial in range(120):
        logits = _awkward_logits(g, trial)
        log_e = draw_log_e(logits.shape, g)
        chosen = _chooser_with_noise(log_e, temperature=temperature, top_k=top_k)(logits)
        expected = sample_next(logits.clone(), temperature=temperature, top_k=top_k, log_e=log_e)
        assert torch.equal(chosen, expected), (trial, logits, chosen, expected)


@needs_native
def test_the_native_path_is_the_one_taken(monkeypatch):
    """With the library, no top_p and float32 logits, the chooser does not go through sample_next."""
    import xlstmkit.generation as generation

    def fail(*args, **kwargs):
        raise AssertionError("sample_next was called")

    monkeypatch.setattr(generation, "sample_next", fail)
    chooser = TokenChooser(temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(0))
    assert chooser(torch.randn(3, 256)).shape == (3,)


def test_a_seed_generates_the_same_tokens_with_and_without_the_native_chooser():
    torch.manual_seed(0)
    model = xLSTMLM(xLSTMConfig(vocab_size=97, embedding_dim=32, num_blocks=2, block_pattern="xLSTM[1:1]",
                                mlstm_num_heads=2, slstm_num_heads=2)).eval()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    kwargs = dict(temperature=0.9, top_k=20, seed=3)
    with native.use_native(True):
        a = model.generate(prompt, 70, **kwargs)  # more than one block of noise (64 steps at this size)
    with native.use_native(False):
        b = model.generate(prompt, 70, **kwargs)
    assert torch.equal(a, b)


def test_a_longer_generation_with_the_same_seed_starts_with_the_same_tokens():
    """The noise block depends on the batch and the vocabulary only, not on max_new_tokens."""
    torch.manual_seed(0)
    model = xLSTMLM(xLSTMConfig(vocab_size=50, embedding_dim=32, num_blocks=2, block_pattern="xLSTM[1:1]",
                                mlstm_num_heads=2, slstm_num_heads=2)).eval()
    prompt = torch.tensor([[7, 8]])
    short = model.generate(prompt, 5, temperature=1.0, seed=11)
    long = model.generate(prompt, 130, temperature=1.0, seed=11)
    assert torch.equal(long[:, : short.shape[1]], short)


def test_top_p_takes_the_tensor_path_on_the_same_noise():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 64, generator=g)
    log_e = draw_log_e(logits.shape, g)
    chosen = _chooser_with_noise(log_e, temperature=0.8, top_k=10, top_p=0.7)(logits)
    assert torch.equal(chosen, sample_next(logits.clone(), temperature=0.8, top_k=10, top_p=0.7, log_e=log_e))


@pytest.mark.parametrize("use", [True, False], ids=["native", "tensor ops"])
def test_chooser_draws_follow_the_softmax_of_the_kept_tokens(use):
    """40,000 rows in one draw: frequencies within 4 standard errors of softmax(logits / T) over the top 3, the
    filtered tokens never."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -5.0])
    rows = 40_000
    with native.use_native(use):
        chooser = TokenChooser(temperature=0.7, top_k=3, generator=torch.Generator().manual_seed(0))
        draws = chooser(logits.expand(rows, -1).contiguous())
    p = torch.softmax(logits[:3] / 0.7, dim=0).double()
    freq = torch.bincount(draws, minlength=5).double() / rows
    assert freq[3:].sum() == 0
    se = (p * (1 - p) / rows).sqrt()
    assert ((freq[:3] - p).abs() < 4 * se).all(), (freq, p)


def test_log_e_is_finite_so_minus_inf_logits_never_become_nan():
    u_zero = torch.zeros(3)  # the uniform draw's 0 gives E = inf, clamped to the largest float
    finfo = torch.finfo(torch.float32)
    assert torch.isfinite(u_zero.log().neg().clamp(finfo.tiny, finfo.max).log()).all()
    log_e = draw_log_e((64, 1000), torch.Generator().manual_seed(0))
    assert torch.isfinite(log_e).all()
    logits = torch.full((64, 1000), float("-inf"))
    logits[:, 3] = 0.0
    assert (sample_next(logits, temperature=1.0, log_e=log_e) == 3).all()


CHOOSE_EXTREMES = """
import json, torch
from xlstmkit.ops import native
lib = native.library()
out = {}
def run(name, logits, log_e, k, t):
    B, V = logits.shape
    res = torch.empty(B, dtype=torch.int64)
    native.call(lib, "choose_tokens", torch.float32, (B, V, k, t), (logits, log_e, torch.empty(k + 1), res))
    out[name] = res.tolist()
nan, inf = float("nan"), float("inf")
run("nan rows", torch.tensor([[nan, 1.0, nan], [0.0, nan, 2.0]]), torch.zeros(2, 3), 2, 0.7)
run("all -inf", torch.full((2, 5), -inf), torch.zeros(2, 5), 3, 1.0)
run("+inf and -inf", torch.tensor([[-inf, inf, inf, 0.0]]), torch.zeros(1, 4), 1, 0.5)
run("one token", torch.tensor([[3.0]]), torch.zeros(1, 1), 0, 1.0)
run("k = V - 1", torch.arange(6.0)[None], torch.zeros(1, 6), 5, 1.0)
run("greedy, no noise", torch.tensor([[1.0, 5.0, 5.0]]), None, 0, 0.0)
run("tiny temperature", torch.tensor([[1e30, -1e30, 3.0]]), torch.zeros(1, 3), 2, 1e-30)
print(json.dumps(out))
"""


@needs_native
def test_choose_tokens_at_extremes_answers_as_torch_and_never_crashes():
    """NaN rows, all -inf, +-inf, a one-token vocabulary, k = V - 1, greedy without noise and logits that overflow
    when divided: run in a subprocess (native code), each answer the index torch's rule gives."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.run([sys.executable, "-c", CHOOSE_EXTREMES], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["nan rows"] == [0, 1]  # the first NaN wins, as in torch's argmax
    assert out["all -inf"] == [0, 0]
    assert out["+inf and -inf"] == [1]  # the first of the tied +inf
    assert out["one token"] == [0]
    assert out["k = V - 1"] == [5]  # with zero noise the largest scaled logit
    assert out["greedy, no noise"] == [1]
    assert out["tiny temperature"] == [0]  # 1e30 / 1e-30 = +inf beats everything
