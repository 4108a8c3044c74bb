"""The Cholesky cache's housekeeping (dat.diskcache, `dat cache`): a size cap, least recently used out
first, never a file being written or in use."""

import os
import random
import time

import pytest

from dat import diskcache
from dat.errors import UserError
from dat.fileio import atomic_write, temp_file


def cache_file(folder, name: str, size: int, used: float):
    path = folder / f"cholesky-{name}.safetensors"
    path.write_bytes(b"\0" * size)
    os.utime(path, (used, used))
    return path


def test_prune_removes_the_least_recently_used_and_keeps_the_newest(tmp_path):
    now = time.time()
    files = [cache_file(tmp_path, f"f{i}", 100, now - 1000 + i) for i in range(4)]  # f3 newest
    other = tmp_path / "notes.txt"  # not a cache file: never counted, never removed
    other.write_bytes(b"\0" * 1000)
    removed = diskcache.prune(tmp_path, 250)
    assert removed == files[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cholesky-f2.safetensors", "cholesky-f3.safetensors",
                                                          "notes.txt"]
    assert diskcache.prune(tmp_path, 250) == []  # already under the cap


@pytest.mark.parametrize("seed", range(5))
def test_prune_respects_the_cap_and_removes_no_more_than_needed(tmp_path, seed):
    rng = random.Random(seed)
    now = time.time()
    sizes = {f"f{i}": rng.randint(1, 500) for i in range(12)}
    used = {name: now - rng.uniform(0, 10_000) for name in sizes}
    for name in sizes:
        cache_file(tmp_path, name, sizes[name], used[name])
    cap = rng.randint(0, sum(sizes.values()))
    removed = {p.name.split("-")[1].split(".")[0] for p in diskcache.prune(tmp_path, cap)}
    kept = set(sizes) - removed
    assert sum(sizes[n] for n in kept) <= cap
    if removed and kept:  # least recently used first: every removed file is older than every kept one
        assert max(used[n] for n in removed) < min(used[n] for n in kept)
    if removed:  # and no more than needed: keeping the youngest removed one would break the cap
        youngest = max(removed, key=used.get)
        assert sum(sizes[n] for n in kept) + sizes[youngest] > cap
    assert {p.name for p in tmp_path.iterdir()} == {f"cholesky-{n}.safetensors" for n in kept}


def test_the_file_in_use_is_kept_even_above_the_cap(tmp_path):
    now = time.time()
    old = cache_file(tmp_path, "old", 100, now - 10)
    big = cache_file(tmp_path, "big", 1000, now - 100)  # older, but the one just read
    assert diskcache.prune(tmp_path, 500, keep=(big,)) == [old]
    assert big.exists()


def test_a_file_being_written_is_never_removed(tmp_path):
    now = time.time()
    cache_file(tmp_path, "done", 100, now - 10)
    target = tmp_path / "cholesky-new.safetensors"
    seen = {}

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"\0" * 5000)
        seen["pruned"] = diskcache.prune(tmp_path, 0)  # while the file is being written
        seen["cleared"] = diskcache.clear(tmp_path)
        seen["tmp_survived"] = os.path.exists(tmp)

    atomic_write(target, write)
    assert seen["tmp_survived"]
    assert [p.name for p in seen["pruned"]] == ["cholesky-done.safetensors"]
    assert seen["cleared"] == []
    assert target.stat().st_size == 5000


def test_clear_removes_cache_files_and_dead_writers_temporaries_only(tmp_path):
    cache_file(tmp_path, "a", 10, time.time())
    live = temp_file(tmp_path, "cholesky-b.safetensors")  # this process: alive, still writing
    dead = tmp_path / ".cholesky-c.safetensors.999999999.abcdefgh.tmp"  # no such process
    dead.write_bytes(b"x")
    removed = {p.name for p in diskcache.clear(tmp_path)}
    assert removed == {"cholesky-a.safetensors", dead.name}
    assert os.path.exists(live)


def test_touch_makes_a_file_the_most_recent(tmp_path):
    now = time.time()
    a = cache_file(tmp_path, "a", 100, now - 100)
    cache_file(tmp_path, "b", 100, now - 50)
    diskcache.touch(a)
    assert [r["name"] for r in diskcache.entries(tmp_path)] == ["cholesky-a.safetensors", "cholesky-b.safetensors"]
    assert diskcache.prune(tmp_path, 150) == [tmp_path / "cholesky-b.safetensors"]


@pytest.mark.parametrize("text,expected", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29),
                                           ("100", 100), ("0", 0), ("2 t", 2 * 2**40)])
def test_sizes_parse(text, expected):
    assert diskcache.parse_size(text) == expected


def test_the_cap_comes_from_the_environment_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.delenv(diskcache.CHOLESKY_CAP_ENV, raising=False)
    assert diskcache.cholesky_cap() == 8 * 2**30
    monkeypatch.setenv(diskcache.CHOLESKY_CAP_ENV, "20G")
    assert diskcache.cholesky_cap() == 20 * 2**30
    monkeypatch.setenv(diskcache.CHOLESKY_CAP_ENV, "lots")
    with pytest.raises(UserError, match="expected a number of bytes.*found 'lots'"):
        diskcache.cholesky_cap()


# -- wired into DAT-Full's cache -----------------------------------------------------------------
def _profile(name):
    from dat.noise.crossbar import PRESETS
    from dat.noise.profile import bind
    from dat.noise.targets import Targets

    device = PRESETS["device-A"].replace(t_seconds=1.0) if name == "device-A at 1 s" else PRESETS[name]
    return bind(device, Targets([("w", (12, 10))], tile=(8, 8)))


def test_cholesky_cache_keeps_the_recently_used_factors_under_the_cap(tmp_path, monkeypatch):
    from dat.noise.profile import cholesky_cache_path, cholesky_factor

    monkeypatch.delenv(diskcache.CHOLESKY_CAP_ENV, raising=False)
    names = ["device-A", "device-B", "device-A at 1 s"]
    paths = {n: cholesky_cache_path(_profile(n), tmp_path) for n in names}
    for n in names[:2]:
        assert cholesky_factor(_profile(n), cache_dir=tmp_path)[2] == "computed"
    size = paths["device-A"].stat().st_size
    for i, n in enumerate(names[:2]):  # distinct, old use times
        os.utime(paths[n], (time.time() - 100 + i, time.time() - 100 + i))
    assert cholesky_factor(_profile("device-A"), cache_dir=tmp_path)[2] == "cache"  # A is now the most recent
    monkeypatch.setenv(diskcache.CHOLESKY_CAP_ENV, str(2 * size + size // 2))  # room for two factors
    assert cholesky_factor(_profile("device-A at 1 s"), cache_dir=tmp_path)[2] == "computed"
    assert paths["device-A"].exists() and paths["device-A at 1 s"].exists()
    assert not paths["device-B"].exists()  # the least recently used went


def test_a_bad_cap_fails_before_the_factorisation(tmp_path, monkeypatch):
    from dat.noise import linalg, profile as profiles

    def no_factoring(*args, **kwargs):
        raise AssertionError("factorised despite a bad cache setting")

    monkeypatch.setattr(linalg, "cholesky", no_factoring)
    monkeypatch.setenv(diskcache.CHOLESKY_CAP_ENV, "-3")
    with pytest.raises(UserError, match=diskcache.CHOLESKY_CAP_ENV):
        profiles.cholesky_factor(_profile("device-A"), cache_dir=tmp_path)


# -- the command ---------------------------------------------------------------------------------
def test_dat_cache_list_prune_and_clear(tmp_path, capsys, monkeypatch):
    from faces.cli import main

    monkeypatch.delenv(diskcache.CHOLESKY_CAP_ENV, raising=False)
    now = time.time()
    cache_file(tmp_path, "old", 3 * 2**20, now - 7200)
    cache_file(tmp_path, "new", 2 * 2**20, now - 60)
    assert main(["cache", "list", "--folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "cholesky-new.safetensors" in out[0] and "2.0 MiB" in out[0]  # most recently used first
    assert "cholesky-old.safetensors" in out[1] and "2.0 h ago" in out[1]
    assert out[2].startswith("2 cached factor(s), 5.0 MiB of a 8.00 GiB cap")
    assert main(["cache", "prune", "--max", "4M", "--folder", str(tmp_path)]) == 0
    assert "removed 1 factor(s); 2.0 MiB left" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["cholesky-new.safetensors"]
    assert main(["cache", "clear", "--folder", str(tmp_path)]) == 0
    assert list(tmp_path.iterdir()) == []
    assert main(["cache", "prune", "--max", "much", "--folder", str(tmp_path)]) == 2
    assert "expected a number of bytes" in capsys.readouterr().err
