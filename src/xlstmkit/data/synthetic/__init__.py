"""The xLSTM paper's synthetic tasks: formal languages (section 4.1) and multi-query associative recall (4.2).

`TASKS` maps a task name to a factory taking keyword options (only MQAR has any); `get_task(name, **options)` builds
one. The MQAR presets `mqar_64_4`, `mqar_128_8`, `mqar_256_16` are the paper's (context, pairs) settings.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .base import PAD, SyntheticTask, TaskBatch, as_generator, collate
from .formal import FORMAL_TASKS, FormalTask
from .mqar import MQAR
from .scoring import LengthScores, answer_token_hits, scaled_accuracy


def _mqar(context_length: int, num_kv_pairs: int, **options) -> MQAR:
    options.setdefault("context_length", context_length)
    options.setdefault("num_kv_pairs", num_kv_pairs)
    return MQAR(**options)


TASKS: dict[str, Callable[..., SyntheticTask]] = {name: cls for name, cls in FORMAL_TASKS.items()}
TASKS["mqar"] = MQAR
for _ctx, _kv in ((64, 4), (128, 8), (256, 16)):
    TASKS[f"mqar_{_ctx}_{_kv}"] = partial(_mqar, _ctx, _kv)


def get_task(name: str, **options) -> SyntheticTask:
    """The task called `name` (see `TASKS`); options go to its constructor (MQAR only)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    if options and not name.startswith("mqar"):
        raise ValueError(f"task {name!r} takes no options, got {sorted(options)}")
    return TASKS[name](**options)


__all__ = [
    "PAD",
    "TASKS",
    "MQAR",
    "FormalTask",
    "LengthScores",
    "SyntheticTask",
    "TaskBatch",
    "answer_token_hits",
    "as_generator",
    "collate",
    "get_task",
    "scaled_accuracy",
]
