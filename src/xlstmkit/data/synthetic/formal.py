"""Formal-language tasks of the xLSTM paper (section 4.1 / App. B.1.1, after Delétang et al., ICLR 2023).

Layout of one instance (token names; ids are positions in the task's `tokens` list, id 0 is `<pad>`):

    x_1 x_2 ... x_L  =  a_1 ... a_m

`x` is the task input of task length L, `=` is the query token (id 1, shared by all tasks) and `a` the answer. The
model reads the sequence left to right and is trained to predict the next token; only the answer tokens are scored
(the prediction made at `=` is a_1, at a_1 it is a_2, ...), so a multi-token answer is produced under teacher forcing,
as a causal language model is trained. The paper measures "accuracy only on task-relevant tokens": here the unit is
one answer token, see `scoring.py`.

`s_rand` is the accuracy of a uniform guess over the task's answer classes. The paper writes it in terms of its own
vocabulary sizes (e.g. 1/(|V|-5) for modular arithmetic = 1/5); our vocabularies use the same answer classes, so
`s_rand` agrees with the paper's table except where noted in a task's docstring.

Tasks whose inputs only exist for some lengths (an arithmetic expression has an odd number of tokens, a duplicated
string an even one) round the requested length up to the next valid one; the sample is still reported under the
requested length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import SyntheticTask

SPECIALS = ("<pad>", "=")
SEP = 1
MOD = 5  # modulus of the arithmetic tasks and the length of the cycle in cycle navigation


class FormalTask(SyntheticTask):
    """A formal-language task: random input x of length L, deterministic answer a = solve(x)."""

    level = ""  # Chomsky-hierarchy level as in the paper's table

    def __init__(self, symbols: Sequence[str], answer_symbols: Sequence[str]) -> None:
        """`symbols`: the task's tokens after the specials; `answer_symbols`: those an answer token can be."""
        self.tokens: tuple[str, ...] = (*SPECIALS, *symbols)
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"duplicate token names in {self.tokens}")
        self.ids = {name: i for i, name in enumerate(self.tokens)}
        self.vocab_size = len(self.tokens)
        self.answer_ids = self.ids_of(answer_symbols)  # the answer classes
        self.s_rand = 1.0 / len(self.answer_ids)

    def ids_of(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.ids[n] for n in names], dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Token names of a sequence of ids (for display and for tests)."""
        return [self.tokens[int(i)] for i in ids]

    def instance(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, answer ids) of one random instance."""
        x = self.random_input(length, rng)
        return x, self.solve(x)

    def random_input(self, length: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def solve(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sequence(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, a = self.instance(length, rng)
        tokens = np.concatenate([x, np.array([SEP], dtype=np.int64), a])
        answer = np.zeros(len(tokens), dtype=bool)
        answer[len(x) + 1 :] = True
        return tokens, answer


class _UniformStringTask(FormalTask):
    """Input: L symbols drawn uniformly from the task's alphabet."""

    alphabet: tuple[str, ...] = ()

    def random_input(self, length: int, rng: np.random.Generator) -> np.ndarray:
        return self.ids_of(self.alphabet)[rng.integers(0, len(self.alphabet), size=length)]


class Parity(_UniformStringTask):
    """Parity (regular): x in {a, b}^L; answer `even` or `odd`, the parity of the number of b's. s_rand = 1/2."""

    name = "parity"
    level = "R"
    alphabet = ("a", "b")

    def __init__(self) -> None:
        super().__init__((*self.alphabet, "even", "odd"), ("even", "odd"))

    def solve(self, x: np.ndarray) -> np.ndarray:
        bits = (x == self.ids["b"]).astype(np.int64)
        return self.ids_of(["odd" if np.bitwise_xor.reduce(bits) else "even"])


class EvenPairs(_UniformStringTask):
    """Even pairs (regular): x in {a, b}^L; answer `even` iff the number of `ab` plus `ba` substrings is even.

    (That number is even exactly when the first and last symbols agree, which is how the generator computes it.)
    s_rand = 1/2.
    """

    name = "even_pairs"
    level = "R"
    alphabet = ("a", "b")

    def __init__(self) -> None:
        super().__init__((*self.alphabet, "even", "odd"), ("even", "odd"))

    def solve(self, x: np.ndarray) -> np.ndarray:
        return self.ids_of(["even" if x[0] == x[-1] else "odd"])


class CycleNavigation(_UniformStringTask):
    """Cycle navigation (regular): L moves in {STAY, +1, -1} on a cycle of 5 positions starting at P0; answer: the
    final position P0..P4. s_rand = 1/5 (paper: 1/(|V|-4) with |V| = 9)."""

    name = "cycle_nav"
    level = "R"
    alphabet = ("STAY", "+1", "-1")

    def __init__(self) -> None:
        positions = tuple(f"P{p}" for p in range(MOD))
        super().__init__((*self.alphabet, *positions), positions)

    def solve(self, x: np.ndarray) -> np.ndarray:
        step = {self.ids["STAY"]: 0, self.ids["+1"]: 1, self.ids["-1"]: -1}
        position = sum(step[int(t)] for t in x) % MOD
        return self.ids_of([f"P{position}"])


DIGITS = tuple(str(d) for d in range(MOD))
OPS = ("+", "-", "*")


def _apply(op: str, left: int, right: int) -> int:
    if op == "+":
        return (left + right) % MOD
    if op == "-":
        return (left - right) % MOD
    return (left * right) % MOD


class ModularArithmetic(FormalTask):
    """Modular arithmetic without brackets (regular): an expression `d op d op ... d` with digits 0..4 and operators
    + - *, evaluated modulo 5 with the usual precedence (* before + and -, left to right otherwise); answer: one digit.

    L is the number of expression tokens, rounded up to the next odd number. s_rand = 1/5 (paper: 1/(|V|-5), |V| = 10,
    and our vocabulary is exactly the paper's: <pad> = 0..4 + - *).
    """

    name = "mod_arith"
    level = "R"

    def __init__(self) -> None:
        super().__init__((*DIGITS, *OPS), DIGITS)

    def random_input(self, length: int, rng: np.random.Generator) -> np.ndarray:
        n_numbers = length // 2 + 1
        names: list[str] = []
        digits = rng.integers(0, MOD, size=n_numbers)
        ops = rng.integers(0, len(OPS), size=n_numbers - 1)
        for i in range(n_numbers):
            if i:
                names.append(OPS[ops[i - 1]])
            names.append(DIGITS[digits[i]])
        return self.ids_of(names)

    def solve(self, x: np.ndarray) -> np.ndarray:
        # A two-register machine: `total` of finished terms, `term` the product being built, `sign` of that term.
        names = self.decode(x)
        total, term, sign = 0, int(names[0]), 1
        for op, digit in zip(names[1::2], names[2::2]):
            if op == "*":
                term = term * int(digit) % MOD
            else:
                total = (total + sign * term) % MOD
                term, sign = int(digit), (1 if op == "+" else -1)
        return self.ids_of([str((total + sign * term) % MOD)])


class ModularArithmeticBrackets(FormalTask):
    """Modular arithmetic with brackets (deterministic context-free): a random expression of the grammar
    E -> d | ( E ) | ( E op E ), digits 0..4, op in + - *, evaluated modulo 5; answer: one digit.

    Every binary operation is bracketed, so the value does not depend on precedence rules. L is the number of tokens,
    rounded up to the next odd number (the grammar has only odd lengths). s_rand = 1/5 (paper: 1/(|V|-7), |V| = 12;
    our vocabulary is the paper's: <pad> = 0..4 + - * ( )).
    """

    name = "mod_arith_brackets"
    level = "DCF"
    wrap_probability = 0.15  # chance that a sub-expression is a redundant ( E ) when a binary split is possible
    ops: tuple[str, ...] = OPS

    def __init__(self) -> None:
        super().__init__((*DIGITS, *OPS, "(", ")"), DIGITS)

    def _expression(self, n: int, rng: np.random.Generator, out: list[str]) -> int:
        """Append an expression of exactly n tokens (n odd) to `out`; return its value."""
        if n == 1:
            d = int(rng.integers(0, MOD))
            out.append(DIGITS[d])
            return d
        out.append("(")
        if n == 3 or rng.random() < self.wrap_probability:
            value = self._expression(n - 2, rng, out)
        else:
            left_len = 2 * int(rng.integers(0, (n - 3) // 2)) + 1  # odd, 1 .. n-4
            left = self._expression(left_len, rng, out)
            op = self.ops[int(rng.integers(0, len(self.ops)))]
            out.append(op)
            right = self._expression(n - 3 - left_len, rng, out)
            value = _apply(op, left, right)
        out.append(")")
        return value

    def instance(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = length if length % 2 else length + 1
        names: list[str] = []
        value = self._expression(n, rng, names)
        return self.ids_of(names), self.ids_of([str(value)])

    def random_input(self, length: int, rng: np.random.Generator) -> np.ndarray:
        return self.instance(length, rng)[0]

    def solve(self, x: np.ndarray) -> np.ndarray:
        # Evaluate the token string with an explicit operand stack (the generator evaluates its parse tree instead).
        values: list[int] = []
        pending: list[str] = []
        for name in self.decode(x):
            if name in DIGITS:
                values.append(int(name))
            elif name in OPS or name == "(":
                pending.append(name)
            else:  # ")": either "( E )" or "( E op E )"
                if pending[-1] != "(":
                    right, left = values.pop(), values.pop()
                    values.append(_apply(pending.pop(), left, right))
                pending.pop()
        return self.ids_of([str(values[-1])])


class SolveEquation(ModularArithmeticBrackets):
    """Solve equation (deterministic context-free): an expression of the grammar E -> d | ( E ) | ( E op E ) with
    op in + - (no product, so the solution is unique), in which one digit has been replaced by the unknown `x`,
    followed by `is` and the expression's value modulo 5; answer: the digit x must be.

    L is the number of expression tokens, rounded up to the next odd number (the input has L + 2 tokens with `is`
    and the value). s_rand = 1/5 (paper: 1/(|V|-9), |V| = 14; our vocabulary has no `*`, so |V| = 13).
    """

    name = "solve_equation"
    ops = ("+", "-")

    def __init__(self) -> None:
        FormalTask.__init__(self, (*DIGITS, "+", "-", "(", ")", "x", "is"), DIGITS)

    def instance(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = length if length % 2 else length + 1
        names: list[str] = []
        value = self._expression(n, rng, names)
        digit_positions = [i for i, name in enumerate(names) if name in DIGITS]
        hole = digit_positions[int(rng.integers(0, len(digit_positions)))]
        answer = names[hole]
        names[hole] = "x"
        return self.ids_of([*names, "is", str(value)]), self.ids_of([answer])

    def solve(self, x: np.ndarray) -> np.ndarray:
        # x enters the value with sign +1 or -1 (only + and - occur), so value(x) = value(0) + sign * x
        names = self.decode(x)
        expression, target = np.array(self.ids_of(names[:-2])), int(names[-1])
        base = int(self._evaluate(expression, 0))
        sign = (int(self._evaluate(expression, 1)) - base) % MOD  # 1 or 4 (= -1)
        solution = (target - base) * (1 if sign == 1 else -1) % MOD
        return self.ids_of([str(solution)])

    def _evaluate(self, expression: np.ndarray, value_of_x: int) -> int:
        ids = expression.copy()
        ids[ids == self.ids["x"]] = self.ids[str(value_of_x)]
        return int(self.decode(ModularArithmeticBrackets.solve(self, ids))[0])


class _CounterTask(_UniformStringTask):
    alphabet = tuple(f"s{i}" for i in range(62))

    def __init__(self) -> None:
        super().__init__(self.alphabet, self.alphabet)

    def _counts(self, x: np.ndarray) -> np.ndarray:
        return np.bincount(x - self.ids[self.alphabet[0]], minlength=len(self.alphabet))


class Majority(_CounterTask):
    """Majority (counter): x over 62 symbols; answer: the most frequent symbol (ties: the lowest-numbered one).

    |V| = 64 as in the paper; s_rand = 1/62 (paper: 1/(|V|-1) = 1/63, it has one special token fewer).
    """

    name = "majority"
    level = "counter"

    def solve(self, x: np.ndarray) -> np.ndarray:
        return self.ids_of([self.alphabet[int(np.argmax(self._counts(x)))]])


class MajorityCount(_CounterTask):
    """Majority count (counter): x over 62 symbols; answer: how often the most frequent symbol occurs, written as
    the symbol s_k with k = count mod 62 (counts above 61 are practically impossible for L <= 256 but stay defined).

    |V| = 64 as in the paper; s_rand = 1/62 (paper: 1/63).
    """

    name = "majority_count"
    level = "counter"

    def solve(self, x: np.ndarray) -> np.ndarray:
        count = int(self._counts(x).max())
        return self.ids_of([self.alphabet[count % len(self.alphabet)]])


class _TenSymbolTask(_UniformStringTask):
    alphabet = tuple(f"s{i}" for i in range(10))

    def __init__(self, extra: Sequence[str] = ()) -> None:
        super().__init__((*self.alphabet, *extra), self.alphabet)


class Repetition(_TenSymbolTask):
    """Repetition: x over 10 symbols; answer: x again (L tokens). |V| = 12, s_rand = 1/10 as in the paper."""

    name = "repetition"
    level = "CS"

    def solve(self, x: np.ndarray) -> np.ndarray:
        return x.copy()


class ReverseString(_TenSymbolTask):
    """Reverse string (DCF): x over 10 symbols; answer: x reversed. |V| = 12, s_rand = 1/10 as in the paper."""

    name = "reverse_string"
    level = "DCF"

    def solve(self, x: np.ndarray) -> np.ndarray:
        return x[::-1].copy()


class BucketSort(_TenSymbolTask):
    """Bucket sort (CS): x over 10 ordered symbols s0 < ... < s9; answer: x sorted ascending. s_rand = 1/10 (paper:
    1/(|V|-1), |V| = 11; we spend one more token on the query `=`)."""

    name = "bucket_sort"
    level = "CS"

    def solve(self, x: np.ndarray) -> np.ndarray:
        return np.sort(x)


class OddsFirst(_TenSymbolTask):
    """Odds first (CS): x over 10 symbols; answer: the symbols at odd positions (1st, 3rd, ...) then those at even
    positions (2nd, 4th, ...). s_rand = 1/10 as in the paper."""

    name = "odds_first"
    level = "CS"

    def solve(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x[0::2], x[1::2]])


class MissingDuplicate(_TenSymbolTask):
    """Missing duplicate (CS): a string w over 10 symbols written twice, w w, with one random position replaced by the
    marker `_`; answer: the symbol that was replaced. L = |w w|, rounded up to an even number. s_rand = 1/10 (paper:
    1/(|V|-2) with |V| = 11, one special token fewer)."""

    name = "missing_duplicate"
    level = "CS"
    min_length = 1

    def __init__(self) -> None:
        super().__init__(("_",))

    def instance(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        half = (length + 1) // 2
        w = self.ids_of(self.alphabet)[rng.integers(0, len(self.alphabet), size=half)]
        x = np.concatenate([w, w])
        hole = int(rng.integers(0, len(x)))
        answer = x[hole : hole + 1].copy()
        x[hole] = self.ids["_"]
        return x, answer

    def random_input(self, length: int, rng: np.random.Generator) -> np.ndarray:
        return self.instance(length, rng)[0]

    def solve(self, x: np.ndarray) -> np.ndarray:
        half = len(x) // 2
        hole = int(np.flatnonzero(x == self.ids["_"])[0])
        twin = hole + half if hole < half else hole - half
        return x[twin : twin + 1].copy()


class SetTask(_UniformStringTask):
    """Set: x over 125 symbols; answer: the distinct symbols of x in order of first occurrence, then `eos`.

    |V| = 128 and s_rand = 1/126 (125 symbols + eos) as in the paper's 1/(|V|-2).
    """

    name = "set"
    level = "CS"
    alphabet = tuple(f"s{i}" for i in range(125))

    def __init__(self) -> None:
        super().__init__((*self.alphabet, "eos"), (*self.alphabet, "eos"))

    def solve(self, x: np.ndarray) -> np.ndarray:
        _, first = np.unique(x, return_index=True)
        return np.concatenate([x[np.sort(first)], self.ids_of(["eos"])])


class StackManipulation(_UniformStringTask):
    """Stack manipulation (DCF): L actions, each uniformly one of `pop` or a push of one of 4 symbols a b c d, applied
    to an initially empty stack (pop on an empty stack does nothing); answer: the final stack from top to bottom, then
    `eos`. A push action and the stack symbol it pushes are the same token. s_rand = 1/5 (4 symbols + eos; the paper
    has 1/floor((|V|-3)/2) = 1/4, without an end token)."""

    name = "stack_manipulation"
    level = "DCF"
    alphabet = ("pop", "a", "b", "c", "d")

    def __init__(self) -> None:
        super().__init__((*self.alphabet, "eos"), ("a", "b", "c", "d", "eos"))

    def solve(self, x: np.ndarray) -> np.ndarray:
        pop = self.ids["pop"]
        stack: list[int] = []
        for t in x:
            if t == pop:
                if stack:
                    stack.pop()
            else:
                stack.append(int(t))
        return np.array([*reversed(stack), self.ids["eos"]], dtype=np.int64)


FORMAL_TASKS: dict[str, type[FormalTask]] = {
    cls.name: cls
    for cls in (
        Parity,
        EvenPairs,
        CycleNavigation,
        ModularArithmetic,
        ModularArithmeticBrackets,
        Majority,
        MajorityCount,
        Repetition,
        ReverseString,
        BucketSort,
        OddsFirst,
        MissingDuplicate,
        SolveEquation,
        SetTask,
        StackManipulation,
    )
}
