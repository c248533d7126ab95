"""Training: configuration, optimiser and schedule, checkpoints, the loop, evaluation and distributed set-up.

This package file stays light: import the submodule you need, e.g. `from xlstmkit.train.loop import train`.
"""
