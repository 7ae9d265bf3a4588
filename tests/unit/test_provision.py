"""``commlab data fetch``: the route order for Fashion-MNIST and espeak-ng, with fake folders, apt,
download and PATH.

Nothing here touches the network or the machine's packages: apt and the download are fakes that
record their calls and, when they "work", put a tiny valid Fashion-MNIST where the real one would go.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib

import numpy as np
import pytest

from commlab import cli
from commlab.data import provision

fm = importlib.import_module("commlab.data.fashion_mnist")


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Raw bytes of a 3-item Fashion-MNIST, made valid by patching the digest table; every real
    location points into tmp_path."""
    raw = {}
    for split in fm.FILES:
        image_stem, label_stem = fm.FILES[split]
        raw[image_stem] = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (3, 28, 28)) \
            + np.zeros(3 * 28 * 28, np.uint8).tobytes()
        raw[label_stem] = (2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([0, 1, 2])
    monkeypatch.setattr(fm, "SHA256", {stem: hashlib.sha256(data).hexdigest() for stem, data in raw.items()})
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.delenv("COMMLAB_OFFLINE", raising=False)
    return raw


def put(raw, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, data in raw.items():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(data))


class FakeApt:
    def __init__(self, raw, *, unavailable=None, works=True):
        self.raw, self.reason, self.works, self.calls = raw, unavailable, works, []

    def present(self):
        return True

    def unavailable(self):
        return self.reason

    def install(self, package):
        self.calls.append(package)
        if not self.works:
            raise OSError("`apt-get install -y -q dataset-fashion-mnist` exited with 100: E: Unable to locate package")
        put(self.raw, fm.DEBIAN_DIR)


def fake_download(raw, calls, *, works=True):
    def download(split, cache):
        calls.append(split)
        if not works:
            raise OSError("could not download Fashion-MNIST from any mirror (no network)")
        put({stem: raw[stem] for stem in fm.FILES[split]}, cache)
    return download


def test_a_copy_already_found_is_used_and_nothing_else_is_tried(tiny, tmp_path):
    put(tiny, tmp_path / "found")
    apt, downloads = FakeApt(tiny), []
    done = provision.fashion_mnist(folders=[tmp_path / "empty", tmp_path / "found"], cache_dir=tmp_path / "cache",
                                   apt=apt, download=fake_download(tiny, downloads), log=lambda _: None)
    assert (done.route, done.location) == ("found", str(tmp_path / "found"))
    assert apt.calls == [] and downloads == []


def test_apt_comes_before_the_download(tiny, tmp_path):
    apt, downloads = FakeApt(tiny), []
    done = provision.fashion_mnist(folders=[tmp_path / "empty"], cache_dir=tmp_path / "cache", apt=apt,
                                   download=fake_download(tiny, downloads), log=lambda _: None)
    assert (done.route, done.location) == ("apt", str(fm.DEBIAN_DIR))
    assert apt.calls == ["dataset-fashion-mnist"] and downloads == []


@pytest.mark.parametrize("apt_state", ["unavailable", "fails"])
def test_the_download_is_tried_when_apt_cannot_help(tiny, tmp_path, apt_state):
    apt = FakeApt(tiny, unavailable="not running as root") if apt_state == "unavailable" else FakeApt(tiny, works=False)
    downloads = []
    done = provision.fashion_mnist(folders=[tmp_path / "empty"], cache_dir=tmp_path / "cache", apt=apt,
                                   download=fake_download(tiny, downloads), log=lambda _: None)
    assert (done.route, done.location) == ("download", str(tmp_path / "cache"))
    assert downloads == ["train", "test"]
    assert apt.calls == ([] if apt_state == "unavailable" else ["dataset-fashion-mnist"])
    assert fm.fashion_mnist("test", cache_dir=tmp_path / "cache", download=False)[1].tolist() == [0, 1, 2]


def test_when_every_route_fails_one_error_lists_each_route_and_a_command(tiny, tmp_path):
    apt, downloads = FakeApt(tiny, works=False), []
    with pytest.raises(provision.DataUnavailable) as caught:
        provision.fashion_mnist(folders=[tmp_path / "empty"], cache_dir=tmp_path / "cache", apt=apt,
                                download=fake_download(tiny, downloads, works=False), log=lambda _: None)
    message = str(caught.value)
    assert "1. found: no folder holds both splits: " + str(tmp_path / "empty") in message
    assert "2. apt: `apt-get install -y -q dataset-fashion-mnist` exited with 100" in message
    assert "3. download: could not download Fashion-MNIST from any mirror" in message
    assert "Fix: run `sudo apt-get install -y dataset-fashion-mnist`, then `make data`." in message


def test_offline_forbids_only_the_download(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("COMMLAB_OFFLINE", "1")
    downloads = []
    with pytest.raises(provision.DataUnavailable, match="3. download: COMMLAB_OFFLINE=1 forbids downloads"):
        provision.fashion_mnist(folders=[], cache_dir=tmp_path / "cache", apt=FakeApt(tiny, unavailable="no apt"),
                                download=fake_download(tiny, downloads), log=lambda _: None)
    assert downloads == []


def test_a_corrupt_local_copy_is_an_error_not_a_reason_to_fetch_again(tiny, tmp_path):
    put(tiny, tmp_path / "found")
    (tmp_path / "found" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01garbage"))
    apt = FakeApt(tiny)
    with pytest.raises(ValueError, match="checksum mismatch"):
        provision.fashion_mnist(folders=[tmp_path / "found"], cache_dir=tmp_path / "cache", apt=apt,
                                download=fake_download(tiny, []), log=lambda _: None)
    assert apt.calls == []


def test_the_real_apt_is_used_only_where_it_can_work(monkeypatch):
    apt = provision.Apt()
    monkeypatch.setattr(provision.os, "geteuid", lambda: 1000)
    reason = apt.unavailable()
    assert reason is not None and ("root" in reason or "Debian" in reason or "PATH" in reason)


def test_the_fix_command_without_apt_downloads_every_file_into_the_cache(tmp_path):
    assert provision.fix_command(tmp_path, fm.MIRRORS, has_apt=True) == "sudo apt-get install -y dataset-fashion-mnist"
    command = provision.fix_command(tmp_path / "cache", fm.MIRRORS, has_apt=False)
    assert command.startswith(f"curl -fL --create-dirs --output-dir {tmp_path / 'cache'} ")
    assert all(f"{stem}.gz" in command for files in fm.FILES.values() for stem in files)


def test_data_fetch_reports_each_dataset(monkeypatch, capsys):
    monkeypatch.setitem(provision.DATASETS, "fashion-mnist",
                        lambda: provision.Provisioned("fashion-mnist", "found", "/somewhere"))
    assert cli.main(["data", "fetch", "fashion-mnist", "digits", "stdlib-text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["fashion-mnist", "found"], ["digits", "bundled"],
                                                    ["stdlib-text", "bundled"]]


def test_data_fetch_rejects_an_unknown_name(capsys):
    assert cli.main(["data", "fetch", "cifar"]) == 2
    known = "fashion-mnist, digits, photos, stdlib-text, espeak-ng"
    assert f"unknown dataset(s) cifar; known: {known}" in capsys.readouterr().err


class FakeProgramApt:
    """apt for a program: installing it puts it on the fake PATH."""

    def __init__(self, path: dict, *, unavailable=None, works=True, present=True):
        self.path, self.reason, self.works, self.has_apt, self.calls = path, unavailable, works, present, []

    def present(self):
        return self.has_apt

    def unavailable(self):
        return self.reason

    def install(self, package):
        self.calls.append(package)
        if not self.works:
            raise OSError(f"`apt-get install -y -q {package}` exited with 100: E: Unable to locate package")
        self.path[package] = f"/usr/bin/{package}"


def test_espeak_ng_on_the_path_is_used_and_apt_is_not_called():
    path = {"espeak-ng": "/opt/bin/espeak-ng"}
    apt = FakeProgramApt(path)
    done = provision.espeak_ng(apt=apt, which=path.get, log=lambda line: None)
    assert (done.route, done.location, apt.calls) == ("found", "/opt/bin/espeak-ng", [])


def test_espeak_ng_missing_is_installed_by_apt():
    path, lines = {}, []
    apt = FakeProgramApt(path)
    done = provision.espeak_ng(apt=apt, which=path.get, log=lines.append)
    assert (done.route, done.location, apt.calls) == ("apt", "/usr/bin/espeak-ng", ["espeak-ng"])
    assert lines == ["espeak-ng: apt-get install -y espeak-ng"]


@pytest.mark.parametrize("apt_state", ["not root", "fails", "no apt-get"])
def test_espeak_ng_that_cannot_be_installed_is_a_clear_error(apt_state):
    path = {}
    apt = FakeProgramApt(path, unavailable="not running as root" if apt_state == "not root" else None,
                         works=apt_state != "fails", present=apt_state != "no apt-get")
    if apt_state == "no apt-get":
        apt.reason = "apt-get is not on the PATH"
    with pytest.raises(provision.DataUnavailable) as caught:
        provision.espeak_ng(apt=apt, which=path.get, log=lambda line: None)
    message = str(caught.value)
    assert message.startswith("espeak-ng could not be provisioned; routes tried, in order:\n"
                              "  1. found: espeak-ng is not on the PATH\n  2. apt: ")
    assert {"not root": "not running as root", "fails": "Unable to locate package",
            "no apt-get": "apt-get is not on the PATH"}[apt_state] in message
    fix = "brew install espeak-ng (macOS)" if apt_state == "no apt-get" else "sudo apt-get install -y espeak-ng"
    assert message.endswith(f"Fix: run `{fix}`, then `make data`.")
