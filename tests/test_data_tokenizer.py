"""Tokenizers: byte round trip, BPE trained with HF tokenizers (round trip on unseen text, save/load in a run
folder, exact byte lengths per token for bits per byte), streaming decode of split UTF-8."""

from __future__ import annotations

import pytest

from xlstmkit.data.tokenizer import BPETokenizer, ByteTokenizer, encode_to_tensor, load_tokenizer, stream_decode, \
    token_byte_lengths

TRAIN = ["def add(a, b):\n    return a + b\n" * 20, "Größe: naïve café, 東京 and 😀 emoji\n" * 10,
         "class Foo:\n    pass\n" * 15]
UNSEEN = "def größe(x):\n\treturn 東京 + '😀' \x00 \u200b ∑ never seen: zqxj\r\n"


def test_byte_tokenizer_round_trip_and_tensor_path():
    tok = ByteTokenizer()
    ids = tok.encode(UNSEEN)
    assert tok.vocab_size == 256 and max(ids) < 256 and len(ids) == len(UNSEEN.encode())
    assert tok.decode(ids) == UNSEEN
    assert encode_to_tensor(tok, UNSEEN).tolist() == ids


def test_bpe_round_trip_save_load_and_byte_lengths(tmp_path):
    tok = BPETokenizer.train(TRAIN, vocab_size=320)
    assert 256 < tok.vocab_size <= 320
    ids = tok.encode(UNSEEN)
    assert tok.decode(ids) == UNSEEN
    assert len(tok.encode(TRAIN[0])) < len(TRAIN[0].encode()) / 2  # merges learned on the training text
    long_text = "".join(TRAIN) * 3 + UNSEEN
    assert tok.encode_tensor(long_text, chunk_chars=50).tolist() == tok.encode(long_text)  # chunked == whole
    lengths = token_byte_lengths(tok)
    assert int(lengths[ids].sum()) == len(UNSEEN.encode("utf-8"))
    tok.save(tmp_path)
    again = load_tokenizer("bpe", tmp_path)
    assert again.encode(UNSEEN) == ids and again.decode(ids) == UNSEEN


def test_bpe_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 257"):
        BPETokenizer.train(TRAIN, vocab_size=100)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer("bpe", tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError, match="corrupt"):
        load_tokenizer("bpe", tmp_path)
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        load_tokenizer("words")


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_stream_decode_joins_to_decode(kind):
    tok = ByteTokenizer() if kind == "bytes" else BPETokenizer.train(TRAIN, vocab_size=300)
    ids = tok.encode(UNSEEN)
    pieces = list(stream_decode(tok, ids))
    assert "".join(pieces) == UNSEEN
    assert all("\ufffd" not in p for p in pieces)  # split multi-byte characters are held back, not garbled
