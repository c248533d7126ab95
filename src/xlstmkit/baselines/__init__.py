"""Baselines the application commands compare xLSTM models against, each behind a small uniform interface.

- :mod:`.classification`: MiniRocket (aeon), Transformer encoder, bidirectional LSTM/GRU (``fit(data)``,
  ``predict(data, split)``);
- :mod:`.forecasting`: statsforecast SeasonalNaive/AutoETS/AutoARIMA/AutoTheta and neuralforecast
  xLSTM/NHITS/PatchTST (``run(name, train_df, horizon, freq, season_length, quantiles)``);
- :mod:`.anomaly`: aeon's STOMP and MERLIN (``score(series)``).

Import the submodule you need; this file imports nothing heavy.
"""
