"""User text is text: binary data (NUL bytes) and files that are not UTF-8 are refused in one line naming the file
(they used to train silently on U+FFFD characters); a few stray invalid bytes are tolerated."""

from __future__ import annotations

import pytest

from xlstmkit.cli import main
from xlstmkit.data.text import load_corpus


def test_binary_and_non_utf8_files_are_refused(tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00" * 4096)
    with pytest.raises(ValueError, match="NUL bytes"):
        load_corpus(str(binary))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(("Ça coûte très cher à Noël. " * 200).encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text.*iconv"):
        load_corpus(str(latin1))
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(f"document {i}\n" * 50, encoding="utf-8")
    (folder / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(ValueError, match="image.txt.*NUL"):
        load_corpus(str(folder))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'{"text": "a"}\n\x00\x01\x02\n')
    with pytest.raises(ValueError, match="NUL"):
        load_corpus(str(jsonl))


def test_a_few_stray_bytes_are_replaced_not_refused(tmp_path):
    path = tmp_path / "mostly.txt"
    path.write_bytes(("plain ascii text line\n" * 300).encode() + b"caf\xe9\n")
    corpus = load_corpus(str(path))
    assert "\ufffd" in corpus.train_text + corpus.val_text


@pytest.mark.parametrize("argv,message", [
    (["--data", "BINARY"], "NUL bytes"),
    (["--set", "vocab_size=10"], "vocab_size cannot be set: the tokenizer sets vocab_size"),
    (["--set", "model.vocab_size=10"], "the tokenizer sets vocab_size"),
])
def test_train_refuses_binary_data_and_settings_that_cannot_apply(tmp_path, capsys, argv, message):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 64)
    argv = [a.replace("BINARY", str(blob)) for a in argv]
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "r" / "metrics.csv").exists()
