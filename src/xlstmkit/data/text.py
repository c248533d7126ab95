"""User text for `--data`: a text file, a folder of text files, a JSONL file with a text field, or a Hugging Face
dataset by name (read from the local `datasets` cache only; no download).

Documents are split into training and validation by a stable hash of their key (file path or record number). A single
text file is one document, so it is split by position instead: the last `val_fraction` of it (cut at a line break)
is the validation text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .corpus import Corpus, read_text_file, split_keyed_docs

# files in a folder that are read as text (everything else, e.g. images or archives, is skipped)
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".c", ".h", ".cpp", ".js", ".ts", ".java", ".go", ".rs", ".tex",
                 ".html", ".css", ".csv", ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".sh", ""}


def load_text_file(path: Path, val_fraction: float) -> Corpus:
    """One text file: the first (1 - val_fraction) for training, the rest (from a line start) for validation."""
    text = read_text_file(path)
    if not text.strip():
        raise ValueError(f"--data {path}: the file is empty")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    cut = int(len(text) * (1.0 - val_fraction))
    nl = text.rfind("\n", 0, cut)
    if nl > len(text) * 0.5 * (1.0 - val_fraction):  # cut at a line break unless that moves the cut too far
        cut = nl + 1
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise ValueError(f"--data {path}: too short to split into training and validation text")
    return Corpus(name=path.name, train_docs=[train], val_docs=[val],
                  description=f"{path}: {len(text.encode('utf-8')) / 1e6:.2f} MB of text")


def load_text_folder(path: Path, val_fraction: float) -> Corpus:
    """Every text file under a folder (recursively, hidden folders skipped), split by file."""
    keyed: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if name.startswith(".") or f.suffix.lower() not in TEXT_SUFFIXES:
                continue
            keyed.append((f.relative_to(path).as_posix(), read_text_file(f)))
    if not keyed:
        raise ValueError(f"--data {path}: no text files found in this folder (looked for {sorted(TEXT_SUFFIXES)})")
    if len(keyed) == 1:
        return load_text_file(path / keyed[0][0], val_fraction)
    return split_keyed_docs(keyed, val_fraction, name=path.name, description=f"{path}: {len(keyed)} text files")


def load_jsonl(path: Path, val_fraction: float, text_field: str = "text") -> Corpus:
    """A JSON-lines file, one object per line with a string under `text_field`; split by record."""
    keyed: list[tuple[str, str]] = []
    for lineno, line in enumerate(read_text_file(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--data {path}: line {lineno} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f"--data {path}: line {lineno} has no string field {text_field!r} "
                             "(set another one with --set text_field=NAME)")
        keyed.append((f"{lineno}", record[text_field]))
    if not keyed:
        raise ValueError(f"--data {path}: no records")
    if len(keyed) == 1:
        raise ValueError(f"--data {path}: a single record cannot be split into training and validation text")
    return split_keyed_docs(keyed, val_fraction, name=path.name, description=f"{path}: {len(keyed)} records")


def load_hf_dataset(name: str, val_fraction: float, text_field: str = "text") -> Corpus:
    """A Hugging Face dataset from the local `datasets` cache (offline: nothing is downloaded).

    `name` may carry a config after a colon, e.g. "wikitext:wikitext-2-raw-v1". A "validation" (or "test") split is
    used when the dataset has one; otherwise the "train" split is divided by record.
    """
    # offline before `datasets` is imported (it reads these at import time): only the local cache is used
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise ValueError(f"--data {name!r} is neither a file nor a folder, and Hugging Face `datasets` is not "
                         "installed to read it as a dataset name (pip install datasets)") from None
    ds_name, _, config = name.partition(":")
    try:
        dsd = datasets.load_dataset(ds_name, config or None)
    except Exception as exc:
        raise ValueError(f"--data {name!r}: not a file or folder, and not a dataset in the local Hugging Face cache "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None

    def texts(split) -> list[str]:
        if text_field not in split.column_names:
            raise ValueError(f"--data {name!r}: no column {text_field!r} (columns: {split.column_names})")
        return [t for t in split[text_field] if isinstance(t, str) and t.strip()]

    if "train" not in dsd:
        raise ValueError(f"--data {name!r}: the dataset has no 'train' split (splits: {list(dsd)})")
    for val_split in ("validation", "valid", "test"):
        if val_split in dsd:
            return Corpus(name=name, train_docs=texts(dsd["train"]), val_docs=texts(dsd[val_split]),
                          description=f"Hugging Face dataset {name} (train / {val_split})")
    docs = texts(dsd["train"])
    return split_keyed_docs([(str(i), t) for i, t in enumerate(docs)], val_fraction, name=name,
                            description=f"Hugging Face dataset {name} (train, split by record)")


def load_corpus(data: str | None, *, val_fraction: float = 0.05, max_files: int | None = None,
                text_field: str = "text") -> Corpus:
    """The corpus for `--data`: None (or "stdlib") is the built-in standard-library corpus; a path is a text file,
    a `.jsonl` file or a folder; anything else is tried as a Hugging Face dataset name in the local cache."""
    if data is None or data == "stdlib":
        from .corpus import load_stdlib_corpus

        return load_stdlib_corpus(val_fraction=val_fraction, max_files=max_files)
    path = Path(data).expanduser()
    if path.is_dir():
        return load_text_folder(path, val_fraction)
    if path.is_file():
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return load_jsonl(path, val_fraction, text_field)
        return load_text_file(path, val_fraction)
    if os.sep in data or data.startswith("."):
        raise ValueError(f"--data {data}: no such file or folder")
    return load_hf_dataset(data, val_fraction, text_field)


def encode_documents(tokenizer, docs: list[str], separator: str | None = None):
    """(tokens, doc_starts): the documents joined by `separator` (default: the corpus's, so the text is
    `Corpus.train_text` / `val_text`) as one 1-D int64 token stream, and the offset where each document's tokens
    begin (for document-aware packing, `WindowSampler(doc_starts=...)`).

    Byte tokens are the joined text's own (offsets from the documents' UTF-8 lengths); other tokenizers encode each
    document (with its separator) on its own, so no token spans two documents."""
    import torch

    from .corpus import DOC_SEPARATOR
    from .tokenizer import encode_to_tensor

    sep = DOC_SEPARATOR if separator is None else separator
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError("no documents to encode")
    pieces = [d + sep for d in docs[:-1]] + [docs[-1]]
    if getattr(tokenizer, "kind", None) == "bytes":
        tokens = encode_to_tensor(tokenizer, "".join(pieces))
        lengths = torch.tensor([len(p.encode("utf-8")) for p in pieces], dtype=torch.long)
    else:
        parts = [encode_to_tensor(tokenizer, p) for p in pieces]
        tokens = torch.cat(parts)
        lengths = torch.tensor([t.numel() for t in parts], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    starts = torch.unique_consecutive(starts[starts < tokens.numel()])  # a piece of no tokens starts nothing
    return tokens, starts
