"""The built-in corpus: the Python standard library's own `.py` sources, found on the running interpreter.

Every Python installation ships it, so `xlstmkit train` needs no download. Test suites, `site-packages` and a few
generated or data-like modules are excluded; the split into training and validation is by file and depends only on
each file's path relative to the standard-library root (a hash), so it is the same on every run and machine.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

# directories (relative to the stdlib root, first component) that are not "the standard library's source" proper
_EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3",
                  "config-3", "ensurepip"}


@dataclass(frozen=True)
class Corpus:
    """A text corpus split into training and validation documents (one document per file or record)."""

    name: str
    train_docs: list[str] = field(repr=False)
    val_docs: list[str] = field(repr=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.train_docs or not any(self.train_docs):
            raise ValueError(f"corpus {self.name!r} has no training text")
        if not self.val_docs or not any(self.val_docs):
            raise ValueError(f"corpus {self.name!r} has no validation text")

    @property
    def train_text(self) -> str:
        return DOC_SEPARATOR.join(self.train_docs)

    @property
    def val_text(self) -> str:
        return DOC_SEPARATOR.join(self.val_docs)


DOC_SEPARATOR = "\n\n"


def stdlib_root() -> Path:
    """The standard library's source folder of the running interpreter (a clear error if it is not there)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir() or not (root / "os.py").is_file():
        raise FileNotFoundError(
            f"the Python standard library's source was not found at {root} (this interpreter ships without its .py "
            "files, e.g. a frozen or embedded build); pass your own text with --data PATH"
        )
    return root


def _is_excluded(rel: Path) -> bool:
    return any(part in _EXCLUDED_DIRS or part.startswith("config-") or part.startswith("test_")
               for part in rel.parts[:-1]) or rel.name.startswith("test_")


def stdlib_files(max_files: int | None = None) -> list[Path]:
    """The standard library's `.py` files (tests and site-packages excluded), sorted by relative path.

    `max_files` keeps a deterministic subset of that many files (for quick runs and tests).
    """
    root = stdlib_root()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not _is_excluded(rel_dir / d / "x"))
        for name in sorted(filenames):
            rel = rel_dir / name
            if name.endswith(".py") and not _is_excluded(rel):
                files.append(rel)
    files.sort(key=lambda p: p.as_posix())
    if max_files is not None:
        if not isinstance(max_files, int) or max_files < 2:
            raise ValueError(f"max_files must be an integer >= 2 (one training and one validation file), "
                             f"got {max_files!r}")
        # a deterministic, spread-out subset: order by hash, keep the first max_files
        files = sorted(files, key=lambda p: _path_hash(p.as_posix()))[:max_files]
        files.sort(key=lambda p: p.as_posix())
    return [root / f for f in files]


def _path_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def is_validation(key: str, val_fraction: float) -> bool:
    """Whether a document with this stable key (e.g. relative path) belongs to the validation split."""
    return (_path_hash(key) % 10_000) < int(round(val_fraction * 10_000))


# at most this fraction of a file's bytes may be invalid UTF-8 (replaced by U+FFFD); more means it is not UTF-8 text
MAX_INVALID_FRACTION = 0.01


def read_text_file(path: Path) -> str:
    """A file's text as UTF-8, with Windows line endings normalised.

    Binary data is refused rather than silently turned into U+FFFD characters (which a model would then learn): a
    file with a NUL byte, or with more than 1 % of its bytes invalid as UTF-8 (e.g. Latin-1 text), is a one-line
    ValueError naming the file and the fix; a few stray invalid bytes are replaced.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"--data {path}: cannot read it ({exc.strerror})") from None
    if b"\x00" in data:
        raise ValueError(f"--data {path}: not a text file (it contains NUL bytes, so it is binary data): give UTF-8 "
                         f"text files")
    text = data.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd") - data.count("\ufffd".encode("utf-8"))
    if invalid > max(4, MAX_INVALID_FRACTION * len(data)):
        raise ValueError(f"--data {path}: not UTF-8 text ({invalid} of {len(data)} bytes are not valid UTF-8): "
                         f"convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    return text.replace("\r\n", "\n")


def split_keyed_docs(keyed: list[tuple[str, str]], val_fraction: float, name: str, description: str) -> Corpus:
    """Split (key, text) documents by a hash of the key; guarantees at least one document on each side."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    keyed = [(k, t) for k, t in keyed if t.strip()]
    if len(keyed) < 2:
        raise ValueError(f"{name}: need at least 2 non-empty documents to split by document, found {len(keyed)}")
    val = [t for k, t in keyed if is_validation(k, val_fraction)]
    train = [t for k, t in keyed if not is_validation(k, val_fraction)]
    if not val or not train:  # tiny corpora: move the document with the smallest hash across
        ordered = sorted(keyed, key=lambda kt: _path_hash(kt[0]))
        val = [ordered[0][1]]
        train = [t for _, t in ordered[1:]]
    return Corpus(name=name, train_docs=train, val_docs=val, description=description)


def load_stdlib_corpus(val_fraction: float = 0.05, max_files: int | None = None) -> Corpus:
    """The built-in corpus: the standard library's `.py` files, split into train/validation by file."""
    root = stdlib_root()
    files = stdlib_files(max_files)
    keyed = [(f.relative_to(root).as_posix(), read_text_file(f)) for f in files]
    n_bytes = sum(len(t.encode("utf-8")) for _, t in keyed)
    return split_keyed_docs(
        keyed, val_fraction, name="stdlib",
        description=f"Python {root.name} standard library at {root}: {len(keyed)} files, {n_bytes / 1e6:.1f} MB",
    )
