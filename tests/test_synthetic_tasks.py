"""Synthetic tasks: every generator's labels against an independent brute-force solver, determinism, masks, scoring,
and the baseline models' interface."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from xlstmkit.data.synthetic import MQAR, PAD, TASKS, LengthScores, answer_token_hits, get_task, scaled_accuracy
from xlstmkit.data.synthetic.formal import FORMAL_TASKS, SEP

# ---------------------------------------------------------------------------------------------------------------
# Brute-force solvers: they work on token *names* and compute each answer a different way from the generator.


def _idx(symbol: str) -> int:
    return int(symbol[1:])


def brute_parity(x):
    return ["even" if x.count("b") % 2 == 0 else "odd"]


def brute_even_pairs(x):
    changes = sum(1 for u, v in zip(x, x[1:]) if u + v in ("ab", "ba"))
    return ["even" if changes % 2 == 0 else "odd"]


def brute_cycle_nav(x):
    ring = [True, False, False, False, False]  # the marker walks around a ring of 5 cells
    for move in x:
        shift = {"STAY": 0, "+1": 1, "-1": -1}[move]
        ring = ring[-shift:] + ring[:-shift] if shift else ring
    return [f"P{ring.index(True)}"]


def brute_mod_arith(x):
    return [str(eval(" ".join(x)) % 5)]  # Python's own precedence rules on the expression text


def brute_solve_equation(x):
    *expression, is_, rhs = x
    assert is_ == "is"
    text = " ".join(expression)
    solutions = [d for d in range(5) if eval(text.replace("x", str(d))) % 5 == int(rhs)]
    assert len(solutions) == 1  # + and - only: exactly one solution
    return [str(solutions[0])]


def brute_majority(x):
    counts = Counter(x)
    best = max(counts.values())
    return [min((s for s, c in counts.items() if c == best), key=_idx)]


def brute_majority_count(x):
    return [f"s{max(Counter(x).values()) % 62}"]


def brute_bucket_sort(x):
    return sorted(x, key=_idx)


def brute_odds_first(x):
    return [s for i, s in enumerate(x) if i % 2 == 0] + [s for i, s in enumerate(x) if i % 2 == 1]


def brute_missing_duplicate(x):
    half = len(x) // 2
    left, right = x[:half], x[half:]
    for a, b in zip(left, right):
        if a == "_":
            return [b]
        if b == "_":
            return [a]
    raise AssertionError("no hole")


def brute_set(x):
    seen: list[str] = []
    for s in x:
        if s not in seen:
            seen.append(s)
    return seen + ["eos"]


def brute_stack(x):
    stack = ""
    for action in x:
        stack = stack[1:] if action == "pop" else action + stack  # top of the stack at the front of the string
    return list(stack) + ["eos"]


BRUTE = {
    "parity": brute_parity,
    "even_pairs": brute_even_pairs,
    "cycle_nav": brute_cycle_nav,
    "mod_arith": brute_mod_arith,
    "mod_arith_brackets": brute_mod_arith,
    "majority": brute_majority,
    "majority_count": brute_majority_count,
    "repetition": lambda x: list(x),
    "reverse_string": lambda x: list(reversed(x)),
    "bucket_sort": brute_bucket_sort,
    "odds_first": brute_odds_first,
    "missing_duplicate": brute_missing_duplicate,
    "solve_equation": brute_solve_equation,
    "set": brute_set,
    "stack_manipulation": brute_stack,
}

PAPER_TASKS = ("parity", "even_pairs", "cycle_nav", "mod_arith", "mod_arith_brackets", "majority", "majority_count",
               "repetition", "reverse_string", "bucket_sort", "set", "stack_manipulation")


def test_every_required_task_is_registered_with_a_solver():
    assert set(PAPER_TASKS) <= set(TASKS)
    assert set(BRUTE) == set(FORMAL_TASKS)
    assert {"mqar", "mqar_64_4", "mqar_128_8", "mqar_256_16"} <= set(TASKS)


def _rows(task, batch):
    """(input names, answer names, task length) per row, read back from a batch."""
    for b in range(batch.input_ids.shape[0]):
        ids = batch.input_ids[b].tolist()
        sep = ids.index(SEP)
        answer = batch.targets[b][batch.mask[b]].tolist()
        yield task.decode(ids[:sep]), task.decode(answer), int(batch.lengths[b])


@pytest.mark.parametrize("name", sorted(FORMAL_TASKS))
def test_labels_match_brute_force_solver(name):
    task = get_task(name)
    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(1, 61, size=150)] + [1, 2, 3]
    batch = task.batch(lengths, rng)
    for x, answer, length in _rows(task, batch):
        assert answer == BRUTE[name](x), (name, x)
        # the input has the requested length, rounded up to the next one the task allows
        rounded = {"mod_arith": length | 1, "mod_arith_brackets": length | 1,
                   "missing_duplicate": length + (length % 2), "solve_equation": (length | 1) + 2}.get(name, length)
        assert len(x) == rounded
        assert "<pad>" not in x and "=" not in x


@pytest.mark.parametrize("name", sorted(FORMAL_TASKS))
def test_answer_classes_define_s_rand(name):
    task = get_task(name)
    assert task.s_rand == pytest.approx(1.0 / len(task.answer_ids))
    batch = task.sample_batch(256, (1, 30), 3)
    answers = set(batch.targets[batch.mask].tolist())
    assert answers <= set(task.answer_ids.tolist())
    assert task.vocab_size == len(task.tokens) and int(batch.input_ids.max()) < task.vocab_size


def test_answer_class_counts_follow_the_paper_table():
    # s_rand per the paper's table (section 2.1); ours equals it where our answer classes are the same
    paper = {"parity": 1 / 2, "even_pairs": 1 / 2, "cycle_nav": 1 / 5, "mod_arith": 1 / 5,
             "mod_arith_brackets": 1 / 5, "repetition": 1 / 10, "reverse_string": 1 / 10, "bucket_sort": 1 / 10,
             "odds_first": 1 / 10, "set": 1 / 126, "solve_equation": 1 / 5}
    for name, s_rand in paper.items():
        assert get_task(name).s_rand == pytest.approx(s_rand), name
    assert get_task("mod_arith").vocab_size == 10 and get_task("mod_arith_brackets").vocab_size == 12


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_batch_and_stream(name):
    task = get_task(name, vocab_size=128) if name.startswith("mqar") else get_task(name)
    lo, hi = task.default_train_lengths
    first = [task.sample_batch(8, (lo, hi), rng) for rng in [np.random.default_rng(5)] for _ in range(3)]
    rng = np.random.default_rng(5)
    second = [task.sample_batch(8, (lo, hi), rng) for _ in range(3)]
    for a, b in zip(first, second):
        for ta, tb in zip((a.input_ids, a.targets, a.mask, a.lengths), (b.input_ids, b.targets, b.mask, b.lengths)):
            assert torch.equal(ta, tb)
    other = task.sample_batch(8, (lo, hi), 6)
    assert not torch.equal(other.input_ids[:, : first[0].input_ids.shape[1]], first[0].input_ids[:, : other.input_ids.shape[1]])
    assert torch.equal(task.batch([hi, lo], 11).input_ids, task.batch([hi, lo], 11).input_ids)


@pytest.mark.parametrize("name", sorted(FORMAL_TASKS))
def test_masks_cover_exactly_the_answer(name):
    task = get_task(name)
    batch = task.batch([1, 5, 17, 40], 0)
    assert batch.input_ids.dtype == torch.long and batch.mask.dtype == torch.bool
    for b in range(4):
        ids, tgt, mask = batch.input_ids[b].tolist(), batch.targets[b].tolist(), batch.mask[b].tolist()
        sep = ids.index(SEP)
        n_answer = len(task.solve(np.array(ids[:sep])))
        # scored positions: from '=' up to the position before the last answer token, contiguous
        assert [i for i, m in enumerate(mask) if m] == list(range(sep, sep + n_answer))
        # next-token pairs, padding only after the sequence and never scored
        assert ids[1 : sep + n_answer] == tgt[: sep + n_answer - 1]
        assert all(t == PAD for t in ids[sep + n_answer :]) and all(t == PAD for t in tgt[sep + n_answer :])


def test_mqar_queries_recall_the_stored_pairs():
    task = MQAR(vocab_size=256, num_kv_pairs=8, context_length=128)
    batch = task.sample_batch(64, (128, 128), 0)
    assert batch.input_ids.shape == (64, 128)
    first_value = 128
    gaps = []
    for b in range(64):
        ids, tgt, mask = batch.input_ids[b], batch.targets[b], batch.mask[b]
        table = {}
        for i in range(8):  # brute force: read the stored pairs token by token
            key, value = int(ids[2 * i]), int(ids[2 * i + 1])
            assert 1 <= key < first_value <= value < 256
            table[key] = value
        assert len(table) == 8  # distinct keys
        positions = mask.nonzero().flatten().tolist()
        assert len(positions) == 8 and min(positions) >= 16
        asked = [int(ids[p]) for p in positions]
        assert sorted(asked) == sorted(table)  # every key asked exactly once
        for p in positions:
            assert int(tgt[p]) == table[int(ids[p])]
        gaps.extend(p - 16 for p in positions)
    # power-law placement: queries crowd near the stored pairs
    assert np.median(gaps) < 56


def test_mqar_rejects_impossible_settings():
    with pytest.raises(ValueError, match="num_kv_pairs"):
        MQAR(num_kv_pairs=0)
    with pytest.raises(ValueError, match="length"):
        MQAR(num_kv_pairs=16, context_length=32)
    with pytest.raises(ValueError, match="vocab_size"):
        MQAR(vocab_size=8, num_kv_pairs=4, context_length=64)


def test_bad_input_is_rejected_with_clear_errors():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("parityy")
    with pytest.raises(ValueError, match="takes no options"):
        get_task("parity", vocab_size=3)
    with pytest.raises(ValueError, match="length"):
        get_task("parity").batch([0])
    with pytest.raises(TypeError, match="length"):
        get_task("parity").batch([2.5])
    with pytest.raises(ValueError, match="s_rand"):
        scaled_accuracy(0.5, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def _one_hot(targets: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(targets, vocab).float()


@pytest.mark.parametrize("name", ["parity", "reverse_string", "set", "majority"])
def test_perfect_predictor_scores_one_and_random_predictor_about_zero(name):
    task = get_task(name)
    lengths = [n for n in range(40, 257, 24) for _ in range(24)]
    batch = task.batch(lengths, 1)
    perfect = LengthScores(task.s_rand)
    perfect.add(batch.lengths, *answer_token_hits(_one_hot(batch.targets, task.vocab_size), batch.targets, batch.mask))
    summary = perfect.summary()
    assert summary["scaled_accuracy"] == pytest.approx(1.0)
    assert set(summary["per_length"]) == set(range(40, 257, 24))
    # uniform guesses among the answer classes
    gen = torch.Generator().manual_seed(0)
    guess = torch.as_tensor(task.answer_ids)[torch.randint(len(task.answer_ids), batch.targets.shape, generator=gen)]
    random = LengthScores(task.s_rand)
    random.add(batch.lengths, *answer_token_hits(_one_hot(guess, task.vocab_size), batch.targets, batch.mask))
    n_tokens = int(batch.mask.sum())
    tolerance = 4 * math.sqrt(task.s_rand * (1 - task.s_rand) / n_tokens) / (1 - task.s_rand) * 3
    assert abs(random.summary()["scaled_accuracy"]) < max(tolerance, 0.05)


def test_scores_count_answer_tokens_per_length():
    logits = torch.zeros(2, 4, 3)
    logits[0, :, 1] = 1.0  # row 0 always predicts 1, row 1 always 0
    targets = torch.tensor([[1, 1, 2, 0], [0, 2, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, False]])
    correct, total = answer_token_hits(logits, targets, mask)
    assert correct.tolist() == [2, 1] and total.tolist() == [3, 2]
    scores = LengthScores(0.5)
    scores.add(torch.tensor([7, 9]), correct, total)
    per = scores.per_length()
    assert per[7]["accuracy"] == pytest.approx(2 / 3) and per[9]["accuracy"] == pytest.approx(0.5)
    assert per[9]["scaled_accuracy"] == pytest.approx(0.0)
    # overall = mean over lengths, each length weighted equally
    assert scores.summary()["scaled_accuracy"] == pytest.approx(((2 / 3 + 0.5) / 2 - 0.5) / 0.5)
    with pytest.raises(ValueError, match="logits"):
        answer_token_hits(logits[0], targets, mask)


# ---------------------------------------------------------------------------------------------------------------
# Models behind the common interface


def _models():
    names = ["lstm", "xlstm[0:1]", "xlstm[1:0]", "xlstm[1:1]"]
    try:
        import transformers  # noqa: F401

        names += ["llama", "mamba"]
    except ImportError:
        pass
    return names


@pytest.mark.parametrize("name", _models())
def test_models_map_ids_to_logits_and_ignore_right_padding(name):
    from xlstmkit.train.synthetic import build_model

    torch.manual_seed(0)
    model = build_model(name, vocab_size=11, dim=32).eval()
    ids = torch.randint(1, 11, (2, 9))
    padded = torch.cat([ids, torch.full((2, 5), PAD)], dim=1)
    with torch.no_grad():
        out, out_padded = model(ids), model(padded)
    assert out.shape == (2, 9, 11) and out.dtype == torch.float32
    torch.testing.assert_close(out_padded[:, :9], out, rtol=1e-4, atol=1e-5)


def test_parameter_budgets_are_matched():
    from xlstmkit.train.synthetic import REFERENCE_MODEL, matched_dim, parameter_count

    budget = parameter_count(REFERENCE_MODEL, 12, 64)
    for name in _models():
        dim = matched_dim(name, 12, budget)
        assert abs(parameter_count(name, 12, dim) - budget) / budget < 0.15, name


def test_lstm_baseline_rejects_bad_sizes():
    from xlstmkit.models.baselines import LSTMLM

    with pytest.raises(ValueError, match="dim"):
        LSTMLM(10, 0)


class _ParityOracle(torch.nn.Module):
    """Solves parity exactly: at every position, predicts the parity of the b's read so far."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def forward(self, input_ids):
        odd = (input_ids == self.task.ids["b"]).long().cumsum(dim=1) % 2  # (B, S)
        answer = torch.where(odd == 1, self.task.ids["odd"], self.task.ids["even"])
        return torch.nn.functional.one_hot(answer, self.task.vocab_size).float()  # (B, S, V)


def test_evaluate_scores_an_exact_solver_one_and_a_constant_about_zero():
    from xlstmkit.train.synthetic import evaluate

    task = get_task("parity")
    oracle = evaluate(_ParityOracle(task), task, [40, 100, 256], 24, eval_seed=0, tokens_per_batch=2000)
    assert oracle["scaled_accuracy"] == pytest.approx(1.0)
    assert sorted(oracle["per_length"]) == [40, 100, 256]
    assert all(v["tokens"] == 24 for v in oracle["per_length"].values())  # one answer token per sequence

    class Even(torch.nn.Module):
        def forward(self, input_ids):
            return torch.nn.functional.one_hot(torch.full_like(input_ids, task.ids["even"]), task.vocab_size).float()

    constant = evaluate(Even(), task, [40, 100, 256], 200, eval_seed=0)
    assert abs(constant["scaled_accuracy"]) < 0.15


def test_mamba_baseline_takes_the_parallel_scan_and_computes_what_the_loop_computes():
    """With mambapy installed the Mamba baseline runs mamba.py's parallel scan (pure PyTorch), the same function as
    transformers' sequential loop: logits and gradients within float32 rounding on a 200-step sequence."""
    pytest.importorskip("transformers")
    pscan_module = pytest.importorskip("mambapy.pscan")
    from xlstmkit.models import baselines

    torch.manual_seed(0)
    model = baselines.mamba(vocab_size=16, dim=32, num_layers=2)
    mixers = [layer.mixer for layer in model.model.backbone.layers]
    assert all(m.use_mambapy for m in mixers)
    calls = []
    original = pscan_module.pscan

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    ids = torch.randint(0, 16, (3, 200))
    results = []
    for parallel in (True, False):
        for m in mixers:
            m.use_mambapy = parallel
        model.zero_grad()
        pscan_module.pscan = counting
        try:
            out = model(ids)
        finally:
            pscan_module.pscan = original
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert len(calls) == len(mixers)  # the parallel pass, once per layer; the loop never
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    for g_parallel, g_loop in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g_parallel, g_loop, rtol=1e-3, atol=1e-5)
