"""The native library's cache cannot hurt the process (docs/native.md; issue 10, item 3).

Each case runs the loader (src/xlstmkit/ops/native/loader.py, standard library only, loaded by path so that these
processes start in a fraction of a second) in a subprocess with its own XLSTMKIT_CACHE and TMPDIR under tmp_path:
a first use builds the library, a verified cached library loads where no compiler is installed, a truncated, empty,
changed, mis-recorded, replaced-by-a-link or writable-by-others library is rebuilt with a one-line warning (or,
without a compiler, refused with the reason; never a crash), and a cache folder that another user could change
(group/world-writable, or under a world-writable folder that is not sticky) is not used. One case runs the whole
package without a compiler: one warning line, and the PyTorch ops give the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from xlstmkit.ops.native import loader

LOADER = Path(loader.__file__)
HAS_CC = loader.find_compiler() is not None
SCRIPT = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("xk_loader", {str(LOADER)!r})
m = importlib.util.module_from_spec(spec)
sys.modules["xk_loader"] = m
spec.loader.exec_module(m)
try:
    lib = m.load(warn=lambda msg: print("WARNING", msg))
    print(json.dumps({{"loaded": True, "built": lib.built, "path": str(lib.path)}}))
except Exception as exc:
    print(json.dumps({{"loaded": False, "error": f"{{type(exc).__name__}}: {{exc}}"}}))
"""


def load_in_subprocess(cache: Path, tmp: Path, *, compiler: bool = True) -> tuple[dict, list[str]]:
    """Run the loader in a fresh process; returns its JSON report and its warning lines. Asserts a normal exit."""
    env = {**os.environ, "XLSTMKIT_CACHE": str(cache), "TMPDIR": str(tmp)}
    if not compiler:
        empty = tmp.parent / "empty-path"
        empty.mkdir(exist_ok=True)
        env.update(PATH=str(empty), CC=str(empty / "no-such-cc"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"loader process died ({proc.returncode}): {proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]), [line for line in lines[:-1] if line.startswith("WARNING")]


def folders(tmp_path: Path) -> tuple[Path, Path]:
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    return cache, tmp


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A cache folder in which a first use built the library (the template the cases copy)."""
    if not HAS_CC:
        pytest.skip("no C compiler to build a library with")
    cache, tmp = folders(tmp_path_factory.mktemp("built"))
    report, warnings = load_in_subprocess(cache, tmp)
    assert report["loaded"] and report["built"] and not warnings, report
    return cache


def copy_cache(built: Path, to: Path) -> Path:
    to.mkdir(mode=0o700, parents=True)
    for p in built.iterdir():
        if p.is_file():
            shutil.copy2(p, to / p.name)
    return to


def library_file(cache: Path) -> Path:
    (lib,) = [p for p in cache.iterdir() if p.name.startswith("recurrences-") and p.suffix in (".so", ".dll")]
    return lib


def test_a_verified_cached_library_loads_without_a_compiler(built, tmp_path):
    """No compiler on PATH (a container built with gcc, run without it): the cached library is verified and
    loaded, not rebuilt, and nothing is written."""
    cache, tmp = folders(tmp_path)
    copy_cache(built, cache)
    before = sorted(p.name for p in cache.iterdir())
    report, warnings = load_in_subprocess(cache, tmp, compiler=False)
    assert report["loaded"] and report["built"] is False and not warnings, report
    assert Path(report["path"]).parent == cache.resolve()
    assert sorted(p.name for p in cache.iterdir()) == before


def test_no_compiler_and_no_cache_is_refused_with_the_reason(tmp_path):
    cache, tmp = folders(tmp_path)
    report, _ = load_in_subprocess(cache, tmp, compiler=False)
    assert not report["loaded"] and "no C compiler found" in report["error"]


def _truncate(lib: Path) -> None:
    os.truncate(lib, lib.stat().st_size // 2)


def _empty(lib: Path) -> None:
    os.truncate(lib, 0)


def _tamper(lib: Path) -> None:
    data = bytearray(lib.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    lib.write_bytes(bytes(data))


def _bad_record(lib: Path) -> None:
    (record,) = lib.parent.glob("recurrences-*.json")
    record.write_text("{not json")


def _writable_by_others(lib: Path) -> None:
    lib.chmod(0o666)


def _symlink(lib: Path) -> None:
    elsewhere = lib.parent.parent / "elsewhere.so"
    shutil.copy2(lib, elsewhere)
    lib.unlink()
    lib.symlink_to(elsewhere)


DAMAGE = {"truncated": (_truncate, "bytes"), "empty": (_empty, "bytes"), "tampered": (_tamper, "SHA-256"),
          "bad_record": (_bad_record, "not a valid record"), "writable_by_others": (_writable_by_others, "written by"),
          "symlink": (_symlink, "not a regular file")}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_library_without_a_compiler_is_refused_not_loaded(built, tmp_path, damage):
    """Without a compiler to rebuild it, a library that fails its check is not loaded (a truncated one would kill
    the process with SIGBUS): the loader reports why, and the process exits normally."""
    cache, tmp = folders(tmp_path)
    copy_cache(built, cache)
    harm, reason = DAMAGE[damage]
    harm(library_file(cache))
    report, _ = load_in_subprocess(cache, tmp, compiler=False)
    assert not report["loaded"], report
    assert reason in report["error"] and "no C compiler" in report["error"], report["error"]


@pytest.mark.parametrize("damage", ["truncated", pytest.param("tampered", marks=pytest.mark.slow),
                                    pytest.param("empty", marks=pytest.mark.slow),
                                    pytest.param("bad_record", marks=pytest.mark.slow),
                                    pytest.param("writable_by_others", marks=pytest.mark.slow),
                                    pytest.param("symlink", marks=pytest.mark.slow)])
def test_a_damaged_library_is_rebuilt_with_one_warning(built, tmp_path, damage):
    cache, tmp = folders(tmp_path)
    copy_cache(built, cache)
    harm, reason = DAMAGE[damage]
    harm(library_file(cache))
    report, warnings = load_in_subprocess(cache, tmp)
    assert report["loaded"] and report["built"], report
    assert len(warnings) == 1 and "failed its check" in warnings[0] and reason in warnings[0], warnings
    # the rebuilt library verifies: the next process loads it without a compiler
    report, warnings = load_in_subprocess(cache, tmp, compiler=False)
    assert report["loaded"] and report["built"] is False and not warnings, report


def _private_temp(tmp: Path, built: Path) -> Path:
    """The fallback folder ($TMPDIR/xlstmkit-<uid>), holding a valid library (so that no build is needed)."""
    return copy_cache(built, tmp / f"xlstmkit-{os.getuid()}")


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o720], ids=["group_writable", "world_writable", "group_w_only"])
def test_a_cache_folder_others_can_write_is_not_used(built, tmp_path, mode):
    """Code is loaded only from folders no other user can change: a group- or world-writable cache folder is
    passed over for the private temporary folder, even holding a valid library."""
    cache, tmp = folders(tmp_path)
    copy_cache(built, cache)
    cache.chmod(mode)
    private = _private_temp(tmp, built)
    report, _ = load_in_subprocess(cache, tmp, compiler=False)
    assert report["loaded"] and Path(report["path"]).parent == private.resolve(), report


def test_a_cache_folder_that_cannot_be_created_is_passed_over(built, tmp_path):
    """A file stands where the cache folder would be (or the home is read-only): the private temporary folder is
    used."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    private = _private_temp(tmp, built)
    report, _ = load_in_subprocess(blocker / "cache", tmp, compiler=False)
    assert report["loaded"] and Path(report["path"]).parent == private.resolve(), report


@pytest.mark.parametrize("sticky", [False, True], ids=["not_sticky", "sticky"])
def test_a_world_writable_parent_must_be_sticky(built, tmp_path, sticky):
    """A private cache folder inside a world-writable folder: anyone could rename it and put their own in its
    place, unless that folder is sticky (as /tmp). Not sticky: the cache is passed over; sticky: it is used."""
    parent = tmp_path / "shared"
    parent.mkdir()
    cache = copy_cache(built, parent / "cache")
    parent.chmod(0o1777 if sticky else 0o777)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    private = _private_temp(tmp, built)
    report, _ = load_in_subprocess(cache, tmp, compiler=False)
    expected = cache if sticky else private
    assert report["loaded"] and Path(report["path"]).parent == expected.resolve(), report


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to give a folder away")
def test_a_cache_folder_of_another_user_is_not_used(built, tmp_path):
    cache, tmp = folders(tmp_path)
    copy_cache(built, cache)
    os.chown(cache, 65534, 65534)
    report, _ = load_in_subprocess(cache, tmp, compiler=False)
    assert not report["loaded"] and "belongs to another user" in report["error"], report


def test_no_usable_folder_and_no_compiler_gives_every_reason(tmp_path):
    """Both folders unusable: the refusal names each problem (the cache folder, the temporary folder)."""
    cache, tmp = folders(tmp_path)
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    (tmp / f"xlstmkit-{os.getuid()}").mkdir(mode=0o777)
    (tmp / f"xlstmkit-{os.getuid()}").chmod(0o777)
    report, _ = load_in_subprocess(cache, tmp, compiler=False)
    assert not report["loaded"]
    assert report["error"].count("can be written by other users") == 2, report["error"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o777  # left as it was


PACKAGE_SCRIPT = """
import os, warnings, torch
warnings.simplefilter("always")
from xlstmkit.ops import slstm_sequence, native
g = torch.randn(1, 9, 2, 4, 4); R = torch.randn(2, 4, 16) * 0.3
with warnings.catch_warnings(record=True) as w:
    off = native.library() is None
    a = slstm_sequence(g, R)
print("switch:", off, len(w), os.path.exists(os.environ["XLSTMKIT_CACHE"]))
os.environ["XLSTMKIT_NATIVE"] = "1"
with warnings.catch_warnings(record=True) as w:
    a = slstm_sequence(g, R); b = slstm_sequence(g, R)
with native.use_native(False):
    ref = slstm_sequence(g, R)
print("fallback:", len(w), torch.equal(a, ref), native.library() is None, native.status()["loaded"])
print(w[0].message if w else "")
"""


@pytest.fixture(scope="module")
def package_without_compiler(tmp_path_factory):
    """One process running the whole package with XLSTMKIT_NATIVE=0, then with it unset, and no compiler."""
    cache, tmp = folders(tmp_path_factory.mktemp("package"))
    env = {**os.environ, "CC": str(tmp / "no-such-cc"), "PATH": str(tmp), "XLSTMKIT_CACHE": str(cache),
           "TMPDIR": str(tmp), "XLSTMKIT_NATIVE": "0"}
    proc = subprocess.run([sys.executable, "-c", PACKAGE_SCRIPT], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_the_switch_turns_native_code_off_silently_without_building(package_without_compiler):
    assert package_without_compiler[0] == "switch: True 0 False"


def test_without_a_compiler_the_package_warns_once_and_computes_the_same(package_without_compiler):
    """No compiler and no cache: one RuntimeWarning line naming the problem and the switch, and the PyTorch ops
    give the same outputs as with the native code turned off."""
    assert package_without_compiler[1] == "fallback: 1 True True False"
    message = package_without_compiler[2]
    assert "no C compiler" in message and "XLSTMKIT_NATIVE=0" in message
