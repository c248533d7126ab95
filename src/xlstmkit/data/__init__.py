"""Data for language modelling: corpora (the built-in standard-library corpus, user text), tokenizers and batches.

This package file stays light (no torch, no tokenizers import): import the submodule you need, e.g.
`from xlstmkit.data.corpus import load_corpus` or `from xlstmkit.data.tokenizer import ByteTokenizer`.
"""
