"""Data loaders in commlab.data: Fashion-MNIST (IDX, checksums, lookup, download), digits, photo
patches and the stdlib text corpus.

The real Debian copy of Fashion-MNIST is used when installed; set ``COMMLAB_REQUIRE_DATA=1`` to make
its absence a failure instead of a skip.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from commlab.data import digits, photo_patches, photos, stdlib_corpus, train_test_indices

fm = importlib.import_module("commlab.data.fashion_mnist")
photos_module = importlib.import_module("commlab.data.photos")
text = importlib.import_module("commlab.data.text")

REAL_DIR = fm.DEBIAN_DIR
SIZES = {"train": 20, "test": 10}


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_files(folder: Path, raw: dict[str, bytes], *, gz: bool = True, stems=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems or raw:
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw[stem]))
        else:
            (folder / stem).write_bytes(raw[stem])
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Every default lookup points at an empty or missing folder, and downloads are off."""
    monkeypatch.setenv("COMMLAB_DATA", str(tmp_path / "commlab-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("COMMLAB_OFFLINE", "1")
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    return tmp_path


@pytest.fixture
def fake(isolated, monkeypatch):
    """A tiny Fashion-MNIST (20 train, 10 test items) made valid by patching the digest table."""
    rng = np.random.default_rng(0)
    arrays, raw = {}, {}
    for split, size in SIZES.items():
        images = rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = (np.arange(size) % 10).astype(np.uint8)
        image_stem, label_stem = fm.FILES[split]
        arrays[split] = images, labels
        raw[image_stem] = idx_bytes(images, 2051)
        raw[label_stem] = idx_bytes(labels, 2049)
    monkeypatch.setattr(fm, "SHA256", {stem: hashlib.sha256(data).hexdigest() for stem, data in raw.items()})
    return arrays, raw


def assert_matches(loaded, arrays):
    images, labels = loaded
    expected_images, expected_labels = arrays
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.shape == (len(expected_labels), 1, 28, 28)
    assert torch.equal(images[:, 0], torch.from_numpy(expected_images.astype(np.float32) / 255))
    assert torch.equal(labels, torch.from_numpy(expected_labels.astype(np.int64)))


# --- Fashion-MNIST: parsing, checksums, lookup (tiny fake files) --------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_fashion_mnist_parses_gz_and_raw(fake, isolated, split, gz):
    arrays, raw = fake
    folder = write_files(isolated / "root", raw, gz=gz)
    loaded = fm.fashion_mnist(split, root=folder)
    assert_matches(loaded, arrays[split])
    assert loaded[0].min() == 0.0 and loaded[0].max() == 1.0


def test_parse_idx_reads_header_shape():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(fm.parse_idx(idx_bytes(array, 2051), 2051), array)


def test_lookup_finds_commlab_data_then_debian_then_cache(fake, isolated, monkeypatch):
    arrays, raw = fake
    cache = isolated / "xdg-cache" / "commlab" / "fashion-mnist"
    write_files(cache, raw)
    assert_matches(fm.fashion_mnist("test"), arrays["test"])  # default cache under XDG_CACHE_HOME

    garbage = {stem: b"not idx" for stem in raw}
    debian = write_files(isolated / "debian", garbage)
    monkeypatch.setattr(fm, "DEBIAN_DIR", debian)
    with pytest.raises(ValueError, match="checksum"):  # Debian comes before the cache
        fm.fashion_mnist("test")

    write_files(isolated / "commlab-data" / "fashion-mnist", raw)
    assert_matches(fm.fashion_mnist("test"), arrays["test"])  # $COMMLAB_DATA comes first


def test_folder_with_one_file_of_the_split_does_not_qualify(fake, isolated):
    arrays, raw = fake
    write_files(isolated / "commlab-data" / "fashion-mnist", raw, stems=["t10k-images-idx3-ubyte"])
    cache = write_files(isolated / "cache", raw)
    assert_matches(fm.fashion_mnist("test", cache_dir=cache), arrays["test"])


def test_checksum_mismatch_names_file_and_both_digests(fake, isolated):
    arrays, raw = fake
    stem = "train-labels-idx1-ubyte"
    tampered = dict(raw)
    tampered[stem] = raw[stem][:-1] + bytes([(raw[stem][-1] + 1) % 10])
    folder = write_files(isolated / "commlab-data" / "fashion-mnist", tampered)
    write_files(isolated / "xdg-cache" / "commlab" / "fashion-mnist", raw)  # a valid copy later on
    with pytest.raises(ValueError) as info:
        fm.fashion_mnist("train")
    message = str(info.value)
    assert str(folder / f"{stem}.gz") in message
    assert fm.SHA256[stem] in message
    assert hashlib.sha256(tampered[stem]).hexdigest() in message


def test_real_digests_reject_a_fake_file(isolated):
    rng = np.random.default_rng(1)
    raw = {
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (3, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": idx_bytes(np.array([1, 2, 3]), 2049),
    }
    folder = write_files(isolated / "root", raw)
    with pytest.raises(ValueError, match=fm.SHA256["t10k-images-idx3-ubyte"]):
        fm.fashion_mnist("test", root=folder)


@pytest.mark.parametrize(
    ("stem", "data", "pattern"),
    [
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((10, 28, 28)), 2049), "magic number is 2049, expected 2051"),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros(10), 2051), "magic number is 2051, expected 2049"),
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((10, 28, 28)), 2051)[:-5], "expected"),
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((10, 28, 27)), 2051), r"expected \(28, 28\)"),
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((9, 28, 28)), 2051), "9 images but"),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.full(10, 10), 2049), "label 10 out of range"),
        ("t10k-images-idx3-ubyte", b"\x00\x00", "magic"),
    ],
)
def test_malformed_idx_raises(fake, isolated, monkeypatch, stem, data, pattern):
    _, raw = fake
    broken = {**raw, stem: data}
    monkeypatch.setitem(fm.SHA256, stem, hashlib.sha256(data).hexdigest())
    folder = write_files(isolated / "root", broken)
    with pytest.raises(ValueError, match=pattern):
        fm.fashion_mnist("test", root=folder)


def test_corrupt_gzip_raises_value_error(fake, isolated):
    _, raw = fake
    folder = write_files(isolated / "root", raw)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b definitely not gzip")
    with pytest.raises(ValueError, match="not a valid gzip file"):
        fm.fashion_mnist("test", root=folder)


def test_offline_and_nothing_found_explains_how_to_fix(isolated):
    with pytest.raises(FileNotFoundError) as info:
        fm.fashion_mnist("train", cache_dir=isolated / "empty-cache")
    message = str(info.value)
    for needle in ("dataset-fashion-mnist", "apt-get install", "COMMLAB_DATA", "COMMLAB_OFFLINE",
                   str(isolated / "no-debian"), str(isolated / "empty-cache"),
                   str(isolated / "commlab-data" / "fashion-mnist")):
        assert needle in message


def test_download_false_forbids_download_even_when_online(isolated, monkeypatch):
    monkeypatch.setenv("COMMLAB_OFFLINE", "0")
    with pytest.raises(FileNotFoundError, match="download=False"):
        fm.fashion_mnist("test", download=False, mirrors=["file:///nonexistent/"])


def test_explicit_root_is_the_only_folder(fake, isolated):
    _, raw = fake
    write_files(isolated / "commlab-data" / "fashion-mnist", raw)
    with pytest.raises(FileNotFoundError, match="root="):
        fm.fashion_mnist("test", root=isolated / "elsewhere", download=True, mirrors=["file:///nonexistent/"])


def test_download_from_mirrors_into_cache(fake, isolated, monkeypatch):
    arrays, raw = fake
    mirror = write_files(isolated / "mirror", raw)
    cache = isolated / "cache"
    monkeypatch.setenv("COMMLAB_OFFLINE", "0")  # download=None follows the environment
    mirrors = [(isolated / "missing-mirror").as_uri() + "/", mirror.as_uri()]
    assert_matches(fm.fashion_mnist("test", cache_dir=cache, mirrors=mirrors), arrays["test"])
    assert sorted(path.name for path in cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    ]
    monkeypatch.setenv("COMMLAB_OFFLINE", "1")
    assert_matches(fm.fashion_mnist("test", cache_dir=cache), arrays["test"])


def test_corrupt_mirror_writes_nothing(fake, isolated):
    _, raw = fake
    labels = raw["t10k-labels-idx1-ubyte"]
    tampered = {**raw, "t10k-labels-idx1-ubyte": labels[:-1] + bytes([(labels[-1] + 1) % 10])}
    mirror = write_files(isolated / "mirror", tampered)
    cache = isolated / "cache"
    with pytest.raises(ValueError, match="checksum"):
        fm.fashion_mnist("test", download=True, cache_dir=cache, mirrors=[mirror.as_uri()])
    assert not cache.exists() or not any(cache.iterdir())


def test_unreachable_mirrors_raise_os_error(isolated):
    with pytest.raises(OSError, match="any mirror") as info:
        fm.fashion_mnist("test", download=True, cache_dir=isolated / "cache",
                         mirrors=[(isolated / "nowhere").as_uri()])
    assert not isinstance(info.value, ValueError)


def test_garbage_mirror_with_real_digests_leaves_cache_empty(isolated):
    mirror = isolated / "garbage-mirror"
    mirror.mkdir()
    for stem in fm.FILES["test"]:
        (mirror / f"{stem}.gz").write_bytes(os.urandom(512))
    cache = isolated / "cache"
    with pytest.raises(ValueError):
        fm.fashion_mnist("test", download=True, cache_dir=cache, mirrors=[mirror.as_uri() + "/"])
    assert not cache.exists() or not any(cache.iterdir())


def test_subset_is_seeded_prefix_of_a_permutation(fake, isolated):
    arrays, raw = fake
    folder = write_files(isolated / "root", raw)
    images, labels = fm.fashion_mnist("train", n=8, seed=3, root=folder)
    assert images.shape == (8, 1, 28, 28) and labels.shape == (8,)
    again = fm.fashion_mnist("train", n=8, seed=3, root=folder)
    assert torch.equal(images, again[0]) and torch.equal(labels, again[1])
    other = fm.fashion_mnist("train", n=8, seed=4, root=folder)
    assert not torch.equal(images, other[0])
    larger = fm.fashion_mnist("train", n=12, seed=3, root=folder)
    assert torch.equal(larger[0][:8], images)
    order = np.random.default_rng(3).permutation(SIZES["train"])[:8]
    assert torch.equal(labels, torch.from_numpy(arrays["train"][1][order].astype(np.int64)))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(split="val"), ValueError),
        (dict(n=0), ValueError),
        (dict(n=21), ValueError),
        (dict(n=2.0), TypeError),
        (dict(seed=-1), ValueError),
        (dict(download="yes"), TypeError),
        (dict(mirrors="file:///x/"), TypeError),
        (dict(mirrors=[]), ValueError),
        (dict(mirrors=[b"file:///x/"]), TypeError),
    ],
)
def test_fashion_mnist_bad_arguments(fake, isolated, kwargs, error):
    _, raw = fake
    folder = write_files(isolated / "root", raw)
    with pytest.raises(error):
        fm.fashion_mnist(**{"split": "train", "root": folder, **kwargs})


# --- Fashion-MNIST: the real Debian copy -------------------------------------------------------


def require_real_data():
    if not REAL_DIR.is_dir():
        if os.environ.get("COMMLAB_REQUIRE_DATA") == "1":
            pytest.fail(f"{REAL_DIR} is missing and COMMLAB_REQUIRE_DATA=1 (apt-get install dataset-fashion-mnist)")
        pytest.skip(f"{REAL_DIR} is missing (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def real_train():
    require_real_data()
    return fm.fashion_mnist("train", root=REAL_DIR)


def test_real_train_split(real_train):
    images, labels = real_train
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert torch.equal(torch.bincount(labels), torch.full((10,), 6000))
    assert len(fm.CLASSES) == 10


def test_real_test_split_and_subsets():
    require_real_data()
    images, labels = fm.fashion_mnist("test", root=REAL_DIR)
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(labels.tolist()) == set(range(10))
    first = fm.fashion_mnist("test", n=500, seed=0, root=REAL_DIR)
    again = fm.fashion_mnist("test", n=500, seed=0, root=REAL_DIR)
    other = fm.fashion_mnist("test", n=500, seed=1, root=REAL_DIR)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_real_download_path_via_file_mirror(isolated):
    require_real_data()
    cache = isolated / "cache"
    downloaded = fm.fashion_mnist("test", download=True, cache_dir=cache, mirrors=[REAL_DIR.as_uri() + "/"])
    assert downloaded[0].shape == (10000, 1, 28, 28)
    assert sorted(path.name for path in cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    ]
    cached = fm.fashion_mnist("test", cache_dir=cache)  # offline, no mirrors: found in the cache
    assert torch.equal(cached[0], downloaded[0]) and torch.equal(cached[1], downloaded[1])


# --- digits ------------------------------------------------------------------------------------


def test_digits_all_and_splits():
    images, labels = digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(labels.tolist()) == set(range(10))
    train_idx, test_idx = train_test_indices(1797, 0.25, seed=0)
    train, test = digits("train"), digits("test")
    assert len(train[1]) == 1348 and len(test[1]) == 449
    assert torch.equal(train[0], images[torch.from_numpy(train_idx)])
    assert torch.equal(test[1], labels[torch.from_numpy(test_idx)])
    assert torch.equal(digits("test", seed=0)[0], test[0])
    assert not torch.equal(digits("test", seed=1)[1], test[1])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [(dict(split="val"), ValueError), (dict(test_fraction=1.0), ValueError), (dict(seed="0"), TypeError)],
)
def test_digits_bad_arguments(kwargs, error):
    with pytest.raises(error):
        digits(**kwargs)


# --- photos ------------------------------------------------------------------------------------


def test_photos_train_and_test_sources_are_disjoint():
    train, test = photos("train"), photos("test")
    assert len(train) == 8 and len(test) == 2
    assert not set(photos_module.SOURCES["train"]) & set(photos_module.SOURCES["test"])
    for image in train + test:
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
        assert 0.0 <= image.min() and image.max() <= 1.0
    for held_out in test:
        assert not any(held_out.shape == image.shape and np.array_equal(held_out, image) for image in train)


def test_photos_are_fresh_copies():
    first = photos("test")
    first[0][:] = 0.0
    assert photos("test")[0].max() > 0.0


@pytest.mark.parametrize("split", ["train", "test"])
def test_photo_patches_shape_range_and_seed(split):
    patches = photo_patches(64, split=split, seed=0)
    assert patches.shape == (64, 3, 32, 32) and patches.dtype == torch.float32
    assert 0.0 <= patches.min() and patches.max() <= 1.0 and patches.std() > 0.01
    assert torch.equal(patches, photo_patches(64, split=split, seed=0))
    assert not torch.equal(patches, photo_patches(64, split=split, seed=1))
    assert photo_patches(3, size=17, split=split).shape == (3, 3, 17, 17)


def test_photo_patches_are_crops_or_mirrored_crops(monkeypatch):
    small = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    tall = (255 - np.arange(6 * 4 * 3)).astype(np.uint8).reshape(6, 4, 3)
    monkeypatch.setattr(photos_module, "_load", lambda split: (small, tall))
    patches = (photo_patches(300, size=3, seed=0) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    crops = {
        (index, flip): [
            (image[y : y + 3, x : x + 3][:, ::-1] if flip else image[y : y + 3, x : x + 3]).tobytes()
            for y in range(image.shape[0] - 2)
            for x in range(image.shape[1] - 2)
        ]
        for index, image in enumerate((small, tall))
        for flip in (False, True)
    }
    seen = set()
    for patch in patches:
        kinds = {kind for kind, options in crops.items() if patch.tobytes() in options}
        assert len(kinds) == 1
        seen |= kinds
    assert seen == set(crops)  # both photos, flipped and not


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(n=0), ValueError),
        (dict(n=4, size=0), ValueError),
        (dict(n=4, size=401), ValueError),
        (dict(n=4, size=301, split="test"), ValueError),
        (dict(n=4, split="val"), ValueError),
        (dict(n=4.0), TypeError),
    ],
)
def test_photo_patches_bad_arguments(kwargs, error):
    with pytest.raises(error):
        photo_patches(**kwargs)


# --- stdlib text corpus ------------------------------------------------------------------------


def test_vocabulary():
    assert len(text.VOCAB) == 97 and text.UNKNOWN == 96 and text.VOCAB[-1] == "\x00"
    assert text.VOCAB[0] == "\n" and text.VOCAB[1:96] == "".join(map(chr, range(32, 127)))


def test_encode_decode_round_trip():
    corpus = stdlib_corpus(max_chars=100)
    assert corpus.vocab_size == 97
    sample = "def f(x):\n    return {'a': x ** 2}  # ~`|\\\n"
    ids = corpus.encode(sample)
    assert ids.dtype == torch.int64 and len(ids) == len(sample)
    assert corpus.decode(ids) == sample
    assert corpus.encode("\tÿ€\r").tolist() == [96, 96, 96, 96]
    assert corpus.decode([96]) == "\x00" and corpus.decode([]) == ""
    with pytest.raises(ValueError):
        corpus.decode([97])
    with pytest.raises(TypeError):
        corpus.decode(np.array([1.0]))
    with pytest.raises(TypeError):
        corpus.encode(b"bytes")


def test_corpus_max_chars_sha_and_determinism():
    small = stdlib_corpus(max_chars=3000)
    assert len(small) == 3000 and small.ids.dtype == torch.uint8 and small.ids.shape == (3000,)
    assert small.sha256 == hashlib.sha256(small.ids.numpy().tobytes()).hexdigest()
    assert small.python_version == platform.python_version()
    again = stdlib_corpus(max_chars=3000)
    assert again.sha256 == small.sha256 and again.files == small.files
    larger = stdlib_corpus(max_chars=200_000)
    assert torch.equal(larger.ids[:3000], small.ids)
    assert larger.files[: len(small.files)] == small.files and len(larger.files) > len(small.files)
    first = (text.stdlib_root() / small.files[0]).read_text(encoding="utf-8", errors="replace")
    assert small.decode(small.ids[:200]) == first[:200]


def test_train_val_split_by_top_level_module():
    train, val, everything = (text.stdlib_files(split) for split in ("train", "val", "all"))
    assert not set(train) & set(val)
    assert sorted(train + val) == list(everything) and list(everything) == sorted(everything)
    train_modules = {text.module_of(path) for path in train}
    val_modules = {text.module_of(path) for path in val}
    assert train_modules and val_modules and not train_modules & val_modules
    for path in everything:
        assert not set(path.split("/")[:-1]) & {"test", "tests", "idle_test", "site-packages"}
    assert stdlib_corpus("val").files == val


def test_split_hash_is_pinned():
    # blake2b(name, digest_size=8) read big-endian, mod 8 == 0 -> "val"; fixed across versions.
    assert [text.split_of(name) for name in ("io", "pathlib", "threading")] == ["val"] * 3
    assert [text.split_of(name) for name in ("email", "json", "asyncio")] == ["train"] * 3


def test_packages_filter():
    corpus = stdlib_corpus("all", packages=("json", "email"))
    assert corpus.files and all(path.split("/")[0] in {"json", "email"} for path in corpus.files)
    assert {path.split("/")[0] for path in corpus.files} == {"json", "email"}
    assert stdlib_corpus("train", packages=["json"]).files == stdlib_corpus("all", packages=["json"]).files
    with pytest.raises(ValueError, match="available"):
        stdlib_corpus(packages=("no_such_module",))
    with pytest.raises(ValueError, match="other split"):
        stdlib_corpus("train", packages=("io",))
    with pytest.raises(TypeError):
        stdlib_corpus(packages="json")
    with pytest.raises(ValueError, match="at least one"):
        stdlib_corpus(packages=())
    generated = text.stdlib_files("all", packages=(name for name in ["json"]))
    assert generated == text.stdlib_files("all", packages=["json"])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [(dict(split="test"), ValueError), (dict(max_chars=0), ValueError), (dict(max_chars=1.5), TypeError)],
)
def test_stdlib_corpus_bad_arguments(kwargs, error):
    with pytest.raises(error):
        stdlib_corpus(**kwargs)


def test_windows_are_the_characters_and_the_next_one():
    corpus = stdlib_corpus(max_chars=5000)
    x, y = corpus.windows(torch.tensor([[0, 7], [100, 4983]]), context=16)
    assert x.shape == (2, 2, 16) and y.shape == (2, 2) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[1, 0], corpus.ids[100:116].long()) and int(y[1, 0]) == int(corpus.ids[116])
    assert torch.equal(x[1, 1], corpus.ids[4983:4999].long()) and int(y[1, 1]) == int(corpus.ids[4999])
    text_of = corpus.decode(torch.cat([x[0, 1], y[0, 1:2]]))
    assert text_of == corpus.decode(corpus.ids[7:24])
    with pytest.raises(ValueError, match="starts must be in"):
        corpus.windows(torch.tensor([4984]), context=16)
    with pytest.raises(ValueError, match="starts must be in"):
        corpus.windows(torch.tensor([-1]), context=16)
    with pytest.raises(TypeError):
        corpus.windows(torch.tensor([1.0]), context=16)
    with pytest.raises(ValueError, match="at least"):
        stdlib_corpus(max_chars=10).windows(torch.tensor([0]), context=10)


def test_sample_windows_seeded_uniform_and_checked():
    corpus = stdlib_corpus(max_chars=2000)
    x, y = corpus.sample_windows((3, 400), 8, torch.Generator().manual_seed(1))
    again = corpus.sample_windows((3, 400), 8, torch.Generator().manual_seed(1))
    other = corpus.sample_windows((3, 400), 8, torch.Generator().manual_seed(2))
    assert x.shape == (3, 400, 8) and y.shape == (3, 400)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1]) and not torch.equal(x, other[0])
    # every drawn window is a real window of the corpus followed by its next character
    windows = corpus.ids.long().unfold(0, 9, 1)  # [len - 8, 9]
    drawn = torch.cat([x, y.unsqueeze(-1)], dim=-1).reshape(-1, 9)
    assert (drawn.unsqueeze(1) == windows.unsqueeze(0)).all(-1).any(1).all()
    # the last possible window can be drawn: tiny corpus, many draws cover every start
    tiny = stdlib_corpus(max_chars=12)
    xs, ys = tiny.sample_windows(2000, 8, torch.Generator().manual_seed(0))
    starts = {tuple(row) for row in xs.tolist()}
    assert len(starts) == len(tiny) - 8 and tuple(tiny.ids[3:11].tolist()) in starts
    assert corpus.sample_windows(5, 4, torch.Generator())[0].shape == (5, 4)
    with pytest.raises(TypeError, match="generator"):
        corpus.sample_windows(5, 4, None)
    with pytest.raises(ValueError):
        corpus.sample_windows((0, 5), 4, torch.Generator())
    with pytest.raises(ValueError, match="at least"):
        tiny.sample_windows(5, 12, torch.Generator())


# --- package hygiene ---------------------------------------------------------------------------


def test_import_is_light():
    code = "import sys, commlab.data; print(sorted(m for m in ('sklearn', 'skimage') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_loaders_leave_global_rngs_alone():
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    photo_patches(4, seed=0)
    digits("train")
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
