"""Tokenizers with one interface: `encode`, `decode`, `vocab_size`, `token_bytes`, `save`, `load`.

Three kinds:
- `ByteTokenizer`: the UTF-8 bytes of the text, vocabulary 256; needs no training and no file.
- `BPETokenizer`: byte-level BPE trained with Hugging Face `tokenizers` on the training text and saved as
  `tokenizer.json` in the run folder. Byte-level means every token is a sequence of bytes, so any text round-trips
  and the number of bytes each token stands for is known exactly (needed for bits per byte). A Hugging Face model
  folder's byte-level `tokenizer.json` (GPT-2 / GPT-NeoX style, e.g. xLSTM-7B's) is read as one too.
- `HFTokenizer`: any other `tokenizer.json` (e.g. SentencePiece-style pieces); a token's bytes are the UTF-8 of its
  decoded text, so bits per byte are approximate for it.

`save_hf_tokenizer(tokenizer, folder)` writes any of them as the files `transformers.AutoTokenizer.from_pretrained`
reads (`tokenizer.json` + `tokenizer_config.json`), with the same token ids: run folders and exported model folders
carry them. The byte tokenizer becomes a byte-level BPE without merges whose 256 pieces are the bytes, so its ids are
the UTF-8 bytes; it is written as plain JSON, without the `tokenizers` package.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import torch

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_KINDS = ("bytes", "bpe", "hf")
_SAFE_CUT = re.compile(r"\n(?=\S)")


def _byte_level_alphabet() -> dict[int, str]:
    """The reversible byte -> printable character map used by byte-level BPE (GPT-2's convention): printable bytes
    map to themselves, the other bytes to consecutive code points from 256 on."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class Tokenizer(Protocol):
    """What the training loop, evaluation and generation need from a tokenizer."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def save(self, run_dir: str | Path) -> None: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256). Decoding replaces invalid UTF-8 sequences with U+FFFD."""

    kind = "bytes"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_tensor(self, text: str) -> torch.Tensor:
        """The tokens as a 1-D int64 tensor, without a Python list in between (fast for megabytes of text)."""
        data = bytearray(text.encode("utf-8"))
        if not data:
            return torch.empty(0, dtype=torch.long)
        return torch.frombuffer(data, dtype=torch.uint8).to(torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([int(token_id)])

    def save(self, run_dir: str | Path) -> None:
        """Nothing to save: the byte tokenizer is fully described by its kind in config.json (`save_hf_tokenizer`
        writes it for Hugging Face's loaders)."""

    @classmethod
    def load(cls, run_dir: str | Path | None = None) -> ByteTokenizer:
        """The byte tokenizer (nothing to read; for symmetry with `BPETokenizer.load`)."""
        return cls()


class BPETokenizer:
    """Byte-level BPE from Hugging Face `tokenizers`, trained on the training text."""

    kind = "bpe"

    def __init__(self, hf_tokenizer) -> None:  # a tokenizers.Tokenizer
        self._tok = hf_tokenizer
        inverse = {c: b for b, c in _byte_level_alphabet().items()}
        vocab = hf_tokenizer.get_vocab()
        self._bytes: list[bytes] = [b""] * hf_tokenizer.get_vocab_size()
        for piece, idx in vocab.items():
            try:
                self._bytes[idx] = bytes(inverse[c] for c in piece)
            except KeyError:
                raise ValueError(f"token {piece!r} is not byte-level: this tokenizer is not a byte-level BPE") from None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> BPETokenizer:
        """Train a byte-level BPE with `vocab_size` tokens (>= 257: the 256 bytes plus merges) on `texts`."""
        if not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(f"bpe vocab_size must be an integer >= 257 (256 bytes + merges), got {vocab_size!r}")
        try:
            from tokenizers import Tokenizer as HFTokenizer
            from tokenizers import decoders, models, pre_tokenizers, trainers
        except ImportError as exc:  # pragma: no cover - tokenizers is a dependency of the train extra
            raise ImportError("--tokenizer bpe needs Hugging Face `tokenizers`: pip install tokenizers") from exc
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
            special_tokens=[],
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_tensor(self, text: str, chunk_chars: int = 1 << 16) -> torch.Tensor:
        """The tokens of `text` as a 1-D int64 tensor, the same as `encode(text)`: long text is cut into chunks (encoded
        in parallel) only after a line break followed by a non-space character, which the byte-level pre-tokenizer
        always separates, so no merge could have crossed a cut."""
        pieces, pos = [], 0
        while pos < len(text):
            end = pos + chunk_chars
            if end < len(text):
                match = _SAFE_CUT.search(text, end)
                end = match.start() + 1 if match else len(text)
            pieces.append(text[pos:end])
            pos = end
        ids: list[int] = []
        for enc in self._tok.encode_batch(pieces):
            ids.extend(enc.ids)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self._bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[int(token_id)]

    def save(self, run_dir: str | Path) -> None:
        """Write `tokenizer.json` into `run_dir` atomically."""
        from ..train.checkpoint import atomic_write_bytes  # local: keep this module free of train imports at load

        atomic_write_bytes(Path(run_dir) / TOKENIZER_FILE, self._tok.to_str().encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"BPE tokenizer file {path} not found")
        tok = _read_hf_file(path)
        try:
            return cls(tok)
        except ValueError as exc:
            raise ValueError(f"tokenizer file {path}: {exc}") from None


class HFTokenizer:
    """A `tokenizers.Tokenizer` that is not byte-level, behind the same interface."""

    kind = "hf"

    def __init__(self, hf_tokenizer) -> None:
        self._tok = hf_tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids])

    def token_bytes(self, token_id: int) -> bytes:
        return self._tok.decode([int(token_id)]).encode("utf-8")

    def save(self, run_dir: str | Path) -> None:
        from ..train.checkpoint import atomic_write_bytes

        atomic_write_bytes(Path(run_dir) / TOKENIZER_FILE, self._tok.to_str().encode("utf-8"))


def _read_hf_file(path: Path):
    try:
        from tokenizers import Tokenizer as HFTok
    except ImportError:
        raise ImportError("reading tokenizer.json needs Hugging Face `tokenizers`: pip install tokenizers") from None
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} not found")
    try:
        return HFTok.from_file(str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"tokenizer file {path} is corrupt or not a tokenizers JSON file: {first}") from None


def load_hf_tokenizer(folder: str | Path) -> Tokenizer:
    """The `tokenizer.json` of a Hugging Face model folder: a `BPETokenizer` when it is byte-level, else an
    `HFTokenizer`."""
    tok = _read_hf_file(Path(folder) / TOKENIZER_FILE)
    try:
        return BPETokenizer(tok)
    except ValueError:
        return HFTokenizer(tok)


def byte_tokenizer_json() -> dict:
    """The byte tokenizer in the `tokenizers` JSON format: a BPE model whose vocabulary is the 256 byte-level pieces
    (GPT-2's printable stand-in for each byte), piece of byte b at id b, and no merges; ByteLevel pre-tokenizer
    (without the word-splitting regex: with no merges it would change nothing) and decoder. Encoding therefore gives
    the UTF-8 bytes of the text and decoding inverts it, exactly `ByteTokenizer`'s ids."""
    alphabet = _byte_level_alphabet()
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {alphabet[b]: b for b in range(256)}, "merges": []},
    }


def _special_token_texts(tokenizer: Tokenizer, ids: dict[str, int | None]) -> dict[str, str]:
    """{"eos_token": text, ...} for the given ids that are special (added) tokens of the tokenizer. Ids of ordinary
    pieces are left out: declaring one special would make transformers match its text inside any input (a byte
    piece such as "Ā" would then stop meaning the bytes of that character)."""
    hf = getattr(tokenizer, "_tok", None)
    if hf is None:  # the byte tokenizer has no special tokens
        return {}
    added = {i: t.content for i, t in hf.get_added_tokens_decoder().items()}
    return {name: added[i] for name, i in ids.items() if isinstance(i, int) and i in added}


def save_hf_tokenizer(tokenizer: Tokenizer, folder: str | Path, *, bos_token_id: int | None = None,
                      eos_token_id: int | None = None, pad_token_id: int | None = None,
                      extra_config: dict | None = None) -> dict:
    """Write `tokenizer.json` and `tokenizer_config.json` into `folder` (atomically), the files
    `transformers.AutoTokenizer.from_pretrained(folder)` loads as a fast tokenizer giving the same ids as
    `tokenizer`. Token ids given for bos/eos/pad are declared when they are special tokens of the tokenizer;
    `extra_config` adds entries to tokenizer_config.json. Returns that config."""
    import json

    from ..train.checkpoint import atomic_write_bytes  # local: keep this module free of train imports at load

    folder = Path(folder)
    if isinstance(tokenizer, ByteTokenizer):
        text = json.dumps(byte_tokenizer_json(), ensure_ascii=False)
    elif isinstance(tokenizer, (BPETokenizer, HFTokenizer)):
        text = tokenizer._tok.to_str()
    else:
        raise TypeError(f"cannot write a {type(tokenizer).__name__} as a Hugging Face tokenizer: expected a "
                        f"ByteTokenizer, BPETokenizer or HFTokenizer")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              **_special_token_texts(tokenizer, {"bos_token": bos_token_id, "eos_token": eos_token_id,
                                                 "pad_token": pad_token_id}), **(extra_config or {})}
    atomic_write_bytes(folder / TOKENIZER_FILE, text.encode("utf-8"))
    atomic_write_bytes(folder / TOKENIZER_CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode("utf-8"))
    return config


def load_tokenizer(kind: str, run_dir: str | Path | None = None) -> Tokenizer:
    """The tokenizer of a run: `bytes`, or `bpe` / `hf` read from `run_dir/tokenizer.json`."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind in ("bpe", "hf"):
        if run_dir is None:
            raise ValueError(f"a {kind} tokenizer is loaded from a run folder: pass run_dir")
        if kind == "bpe":
            return BPETokenizer.load(Path(run_dir) / TOKENIZER_FILE)
        return HFTokenizer(_read_hf_file(Path(run_dir) / TOKENIZER_FILE))
    raise ValueError(f"tokenizer must be one of {TOKENIZER_KINDS}, got {kind!r}")


def encode_to_tensor(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """The token ids of `text` as a 1-D int64 tensor, using the tokenizer's fast path when it has one."""
    fast = getattr(tokenizer, "encode_tensor", None)
    if fast is not None:
        return fast(text)
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def token_byte_lengths(tokenizer: Tokenizer) -> torch.Tensor:
    """(vocab,) int64: how many bytes of text each token stands for (for bits per byte)."""
    return torch.tensor([len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)], dtype=torch.long)


def stream_decode(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Decode token ids one at a time into text pieces, holding back incomplete UTF-8 sequences (for streaming).
    Ids outside the tokenizer's vocabulary (the padding rows of a model's larger embedding table) stand for no
    text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    vocab = tokenizer.vocab_size
    for i in ids:
        if not 0 <= int(i) < vocab:  # a padding row of a model whose table is larger than the tokenizer (no text)
            continue
        piece = decoder.decode(tokenizer.token_bytes(int(i)))
        if piece:
            yield piece
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def tokenizer_info(tokenizer: Tokenizer) -> dict:
    """What config.json records about a tokenizer."""
    return {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size}


def sample_text(model, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, *, temperature: float = 0.8,
                top_k: int | None = None, top_p: float | None = None, seed: int | None = 0, echo: bool = True,
                out=None, stop_tokens: list[int] | None = None) -> str:
    """Generate from `prompt` with `model.stream` (recurrent state, constant memory), decoding token by token and
    writing the text to `out` (stdout) as it is produced when `echo`; returns prompt + generated text. An empty
    prompt starts from a new line (or the model's BOS token when it has one)."""
    import sys

    out = out or sys.stdout
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        bos = getattr(getattr(model, "config", None), "bos_token_id", None)
        ids = [bos] if isinstance(bos, int) else (tokenizer.encode("\n") or [0])
    input_ids = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)  # (1, S)
    if echo:
        out.write(prompt)
        out.flush()
    stops = set(stop_tokens or ())

    def tokens():
        for token in model.stream(input_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=seed):
            if int(token[0]) in stops:
                return
            yield int(token[0])

    pieces = []
    for piece in stream_decode(tokenizer, tokens()):
        pieces.append(piece)
        if echo:
            out.write(piece)
            out.flush()
    if echo:
        out.write("\n")
        out.flush()
    return prompt + "".join(pieces)

