"""Provision every dataset the notebooks and tests need: ``commlab data fetch`` (``make data``).

Only Fashion-MNIST and the espeak-ng speech synthesiser have to come from outside the Python
packages; the other datasets ship inside packages the project installs (scikit-learn's digits and
sample photos, scikit-image's photos) or inside Python itself (the standard library's source text),
and are checked, not fetched.

Fashion-MNIST is provisioned by the first route that works, in this order:

1. **found** — the folders the loader already searches (``$COMMLAB_DATA/fashion-mnist``, the Debian
   package's folder, the user cache), each split's two files present and their checksums right;
2. **apt** — on a Debian or Ubuntu machine, when this process is root and ``apt-get`` exists:
   ``apt-get install -y dataset-fashion-mnist`` (after ``apt-get update`` if the package is not known
   yet);
3. **download** — the checksummed download into the user cache (skipped when ``COMMLAB_OFFLINE=1``).

espeak-ng (briefs/_conventions.md §3.5: the speech notebooks synthesise their corpus with it) is a
program, not files: **found** on the PATH, else **apt** (``apt-get install -y espeak-ng``) as above;
there is no download route.

When every route fails, :class:`DataUnavailable` lists each route with why it failed and the one
command a person can run to fix it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

fm = importlib.import_module("commlab.data.fashion_mnist")  # the package re-binds the name to the loader

APT_PACKAGE = "dataset-fashion-mnist"
"""The Debian package that installs Fashion-MNIST under :data:`commlab.data.fashion_mnist.DEBIAN_DIR`."""

ESPEAK_PACKAGE = "espeak-ng"
"""The Debian package (and the program's name) of the espeak-ng speech synthesiser."""

APT_TIMEOUT_S = 900.0
"""Wall-clock limit of one ``apt-get`` call, in seconds."""


class DataUnavailable(FileNotFoundError):
    """No route could provision a dataset; the message lists every route tried and a fix."""


@dataclass(frozen=True)
class Provisioned:
    """Where a dataset is now: ``route`` is ``"found" | "apt" | "download" | "bundled"``."""

    name: str
    route: str
    location: str


class Apt:
    """``apt-get`` on this machine, used only where it can work (Debian-like, root, on the PATH).

    Tests replace it with a fake that has the same two methods.
    """

    def present(self) -> bool:
        """Whether ``apt-get`` is on the PATH (as root or not)."""
        return shutil.which("apt-get") is not None

    def unavailable(self) -> str | None:
        """Why ``apt-get`` cannot install packages here, or None when it can."""
        if not Path("/etc/debian_version").is_file():
            return "not a Debian or Ubuntu machine (/etc/debian_version is missing)"
        if not self.present():
            return "apt-get is not on the PATH"
        if os.geteuid() != 0:
            return "not running as root"
        return None

    def install(self, package: str) -> None:
        """``apt-get install -y package``, after ``apt-get update`` when the first try fails.

        Raises ``OSError`` with apt's last lines when the install still fails.
        """
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", package]
        first = self._call(install, env)
        if first.returncode == 0:
            return
        update = self._call(["apt-get", "update", "-q"], env)
        second = self._call(install, env) if update.returncode == 0 else update
        if second.returncode != 0:
            tail = " ".join((second.stdout + second.stderr).strip().splitlines()[-3:])
            raise OSError(f"`{' '.join(second.args)}` exited with {second.returncode}: {tail}")

    @staticmethod
    def _call(command: list[str], env: dict) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)


def _verified_folder(folders: Sequence[Path]) -> Path | None:
    """The first folder holding both splits with the right checksums (a corrupt copy raises)."""
    for folder in folders:
        paths = {split: fm.split_paths(folder, split) for split in fm.FILES}
        if all(p is not None for p in paths.values()):
            for split, split_files in paths.items():
                fm.read_split(split_files, split)
            return folder
    return None


def fix_command(cache_dir: Path, mirrors: Sequence[str], *, has_apt: bool) -> str:
    """The one command a person can run to provision Fashion-MNIST by hand: the Debian package
    where ``apt-get`` exists, else a download of the four files into ``cache_dir``."""
    if has_apt:
        return f"sudo apt-get install -y {APT_PACKAGE}"
    urls = " ".join(mirrors[0].rstrip("/") + f"/{stem}.gz" for files in fm.FILES.values() for stem in files)
    return f"curl -fL --create-dirs --output-dir {cache_dir} --remote-name-all {urls}"


def fashion_mnist(*, folders: Sequence[Path] | None = None, cache_dir: Path | None = None,
                  apt: Apt | None = None, download: Callable[[str, Path], object] | None = None,
                  mirrors: Sequence[str] | None = None, log: Callable[[str], None] = print) -> Provisioned:
    """Make both Fashion-MNIST splits available, by the first route that works (module docstring).

    Args:
        folders: folders to search first (default: the loader's search order).
        cache_dir: where a download goes (default: :func:`commlab.data.fashion_mnist.default_cache_dir`).
        apt: the package installer (default: :class:`Apt`).
        download: ``download(split, cache_dir)`` fetching and verifying one split (default: the
            loader's checksummed download from ``mirrors``).
        mirrors: download base URLs (default: :data:`commlab.data.fashion_mnist.MIRRORS`).
        log: called with one line before each route that changes the machine.

    Returns:
        the route that worked and the folder that now holds the files.

    Raises:
        DataUnavailable: every route failed; the message names each route, why, and a fix.
        ValueError: a local copy is corrupt (checksum or format); it is never silently replaced.
    """
    cache = Path(cache_dir) if cache_dir is not None else fm.default_cache_dir()
    searched = list(folders) if folders is not None else fm.search_dirs(cache)
    apt = apt or Apt()
    urls = tuple(mirrors) if mirrors is not None else fm.MIRRORS
    fetch = download or (lambda split, target: fm.download_split(split, target, urls))
    failures = []

    found = _verified_folder(searched)
    if found is not None:
        return Provisioned("fashion-mnist", "found", str(found))
    failures.append(("found", "no folder holds both splits: " + ", ".join(map(str, searched))))

    found, reason = _by_apt("fashion-mnist", APT_PACKAGE, apt, log, lambda: _verified_folder([fm.DEBIAN_DIR]),
                            f"{APT_PACKAGE} installed, but {fm.DEBIAN_DIR} does not hold both splits")
    if found is not None:
        return Provisioned("fashion-mnist", "apt", str(found))
    failures.append(("apt", reason))

    if os.environ.get("COMMLAB_OFFLINE") == "1":
        failures.append(("download", "COMMLAB_OFFLINE=1 forbids downloads"))
    else:
        log(f"fashion-mnist: downloading into {cache}")
        try:
            for split in fm.FILES:
                fetch(split, cache)
        except (OSError, ValueError) as error:
            failures.append(("download", str(error)))
        else:
            return Provisioned("fashion-mnist", "download", str(cache))

    raise _unavailable("Fashion-MNIST", failures, fix_command(cache, urls, has_apt=apt.present()))


def _by_apt(name: str, package: str, apt: Apt, log: Callable[[str], None], locate: Callable[[], object],
            missing: str) -> tuple[object | None, str | None]:
    """The apt route: ``(where locate() finds it, None)`` after installing ``package``, else ``(None, why)``."""
    reason = apt.unavailable()
    if reason is not None:
        return None, reason
    log(f"{name}: apt-get install -y {package}")
    try:
        apt.install(package)
    except (OSError, subprocess.SubprocessError) as error:
        return None, str(error)
    found = locate()
    return (found, None) if found is not None else (None, missing)


def _unavailable(what: str, failures: list[tuple[str, str]], fix: str) -> DataUnavailable:
    routes = "\n".join(f"  {i}. {route}: {why}" for i, (route, why) in enumerate(failures, 1))
    return DataUnavailable(f"{what} could not be provisioned; routes tried, in order:\n{routes}\n"
                           f"Fix: run `{fix}`, then `make data`.")


def espeak_ng(*, apt: Apt | None = None, which: Callable[[str], str | None] = shutil.which,
              log: Callable[[str], None] = print) -> Provisioned:
    """Make the ``espeak-ng`` program available: found on the PATH, else installed by apt (module docstring).

    Args:
        apt: the package installer (default: :class:`Apt`).
        which: finds a program on the PATH (default: :func:`shutil.which`).
        log: called with one line before apt changes the machine.

    Raises:
        DataUnavailable: neither route worked; the message says why and how to install it by hand.
    """
    apt = apt or Apt()
    found = which(ESPEAK_PACKAGE)
    if found is not None:
        return Provisioned("espeak-ng", "found", found)
    failures = [("found", "espeak-ng is not on the PATH")]
    found, reason = _by_apt("espeak-ng", ESPEAK_PACKAGE, apt, log, lambda: which(ESPEAK_PACKAGE),
                            f"{ESPEAK_PACKAGE} installed, but espeak-ng is not on the PATH")
    if found is not None:
        return Provisioned("espeak-ng", "apt", found)
    failures.append(("apt", reason))
    fix = f"sudo apt-get install -y {ESPEAK_PACKAGE}" if apt.present() else "brew install espeak-ng (macOS)"
    raise _unavailable("espeak-ng", failures, fix)


def _bundled(name: str, check: Callable[[], str]) -> Callable[[], Provisioned]:
    def provision() -> Provisioned:
        return Provisioned(name, "bundled", check())

    return provision


def _digits() -> str:
    import sklearn
    from sklearn.datasets import load_digits

    if load_digits().images.shape != (1797, 8, 8):
        raise DataUnavailable("scikit-learn's bundled digits do not have 1,797 images of 8x8")
    return f"scikit-learn {sklearn.__version__}"


def _photos() -> str:
    import skimage

    from .photos import SOURCES, photos

    for split in SOURCES:
        photos(split)
    return f"scikit-image {skimage.__version__} and scikit-learn sample images"


def _stdlib_text() -> str:
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not (stdlib / "os.py").is_file():
        raise DataUnavailable(f"the Python standard library's source is not at {stdlib} (os.py is missing)")
    return str(stdlib)


DATASETS: dict[str, Callable[[], Provisioned]] = {
    "fashion-mnist": fashion_mnist,
    "digits": _bundled("digits", _digits),
    "photos": _bundled("photos", _photos),
    "stdlib-text": _bundled("stdlib-text", _stdlib_text),
    "espeak-ng": espeak_ng,
}
"""Every dataset a notebook or test reads, by name, with the function that provisions it."""


def provision(names: Sequence[str] | None = None) -> list[Provisioned]:
    """Provision ``names`` (default: all of :data:`DATASETS`), in that order; raise on the first failure."""
    names = list(DATASETS) if not names else list(names)
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    return [DATASETS[name]() for name in names]
