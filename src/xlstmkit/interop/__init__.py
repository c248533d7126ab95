"""Conversion from and to other implementations: `interop.official` (the NX-AI `xlstm` package) and `interop.hf`
(Hugging Face xLSTM checkpoints). Import the submodule you need."""
