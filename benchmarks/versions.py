"""Which burrow a benchmark supervisor runs: this checkout, or an earlier release.

``python -m benchmarks --against REF`` measures the checkout's drains beside those
of git ref REF (a tag or a commit of this repository), in the same run. REF's
``burrow`` package is exported from git into a cached virtualenv,
``~/.cache/burrow-bench/<full sha>/venv`` (``BURROW_BENCH_CACHE`` moves the cache),
made with ``--system-site-packages``: burrow's dependencies are the ones already
installed, so nothing is downloaded. The package is copied, not ``pip install``ed:
it is pure Python, and pip could not build it here without fetching ``wheel``.

A version's supervisor must import ITS burrow. ``PYTHONPATH`` entries and the
working directory come before site-packages on ``sys.path``, so neither may hold
the checkout for REF's processes: the benchmark app is copied into a directory of
its own (:func:`app_dir`), which is REF's working directory and only
``PYTHONPATH`` entry; :meth:`Version.check` proves where ``burrow`` comes from.

The latest release is read from CHANGELOG.md (``## 0.2.0 - ..., commit dcdce96``),
since a git tag may not travel with the repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.target import Target

REPO_ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = REPO_ROOT / "CHANGELOG.md"
APP_FILE = Path(__file__).resolve().parent / "app.py"
APP_MODULE = "burrow_bench_app"  # benchmarks/app.py, copied where no burrow is beside it
APP_REF = f"{APP_MODULE}:app"
CACHE_ENV = "BURROW_BENCH_CACHE"
LATEST = "latest"  # --against latest: the newest release in CHANGELOG.md

_RELEASE = re.compile(r"^##\s+(?P<version>\d+\.\d+\.\d+)\b[^\n]*?\bcommit\s+(?P<commit>[0-9a-f]{7,40})\b", re.M)


class VersionError(RuntimeError):
    """A ref that cannot be resolved or installed; the message is one line for the user."""


@dataclass(frozen=True)
class Release:
    version: str
    commit: str  # as CHANGELOG.md spells it (may be abbreviated)


def releases(path: Path = CHANGELOG) -> list[Release]:
    """CHANGELOG.md's release headings, newest first."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise VersionError(f"cannot read {path}: {exc.strerror}") from None
    return [Release(m["version"], m["commit"]) for m in _RELEASE.finditer(text)]


def latest_release(path: Path = CHANGELOG) -> Release:
    found = releases(path)
    if not found:
        raise VersionError(f"{path}: no release heading naming a commit (\"## 0.2.0 - <date>, commit <sha>\")")
    return found[0]


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=False)


def resolve(ref: str) -> tuple[str, str]:
    """(full commit sha, label) of ``ref``: "latest", a release's version, a tag or a commit."""
    label = ref
    if ref == LATEST:
        release = latest_release()
        ref, label = release.commit, release.version
    else:
        named = {r.version: r for r in releases()} if CHANGELOG.exists() else {}
        if ref in named:
            ref = named[ref].commit
    done = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0:
        raise VersionError(f"--against {label}: {ref!r} is not a commit of the repository at {REPO_ROOT}")
    sha = done.stdout.decode().strip()
    if label == ref:  # a bare ref: say which release it is, when it is one
        for release in (releases() if CHANGELOG.exists() else []):
            if sha.startswith(release.commit):
                label = release.version
    return sha, label


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "burrow-bench").expanduser()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer per commit at a time (two benchmark runs may start together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def install(sha: str) -> Path:
    """The cached virtualenv holding commit ``sha``'s burrow (made on first use): its python."""
    root = cache_root() / sha
    python = root / "venv" / "bin" / "python"
    ready = root / "ready"
    if ready.exists():
        return python
    with _locked(cache_root() / f"{sha}.lock"):
        if ready.exists():
            return python
        staging = cache_root() / f"{sha}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                               str(staging / "venv")], capture_output=True, check=False)
        if made.returncode != 0:
            raise VersionError(f"cannot make a virtualenv for {sha[:12]}: {made.stderr.decode().strip()[-300:]}")
        purelib = subprocess.run([str(staging / "venv" / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 capture_output=True, check=True, cwd=staging).stdout.decode().strip()
        archive = _git("archive", "--format=tar", sha, "burrow")
        if archive.returncode != 0:
            raise VersionError(f"git archive {sha[:12]} burrow: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(purelib, filter="data")
        (staging / "commit").write_text(sha + "\n")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        ready.write_text("ok\n")
    return python


def app_dir(where: Path) -> Path:
    """A directory holding only the benchmark app (as :data:`APP_MODULE`), under ``where``."""
    directory = where / "app"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(APP_FILE, directory / f"{APP_MODULE}.py")
    return directory


_COMPILED: set[Path] = set()


def byte_compile(python: str, package: Path) -> None:
    """Byte-compile a version's package once a run, as ``pip install`` does.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (this machine sets it), every
    supervisor would otherwise compile each burrow module from source as it starts:
    0.1 s of the checkout's start here and less of an older release's, fewer
    modules, a cost no installed burrow pays, in a drain timed from the process's
    start (benchmarks/README.md, "sixth pass"). The compiled files go in the
    package's ``__pycache__`` (ignored by git), checked against the sources' times.
    """
    if package in _COMPILED:
        return
    done = subprocess.run([python, "-m", "compileall", "-q", str(package)], capture_output=True, check=False)
    if done.returncode != 0:
        raise VersionError(f"byte-compiling {package} failed: {done.stdout.decode().strip()[-300:]}")
    _COMPILED.add(package)


@dataclass(frozen=True)
class Version:
    """How to run one burrow: interpreter and the ``sys.path`` entries before site-packages."""

    label: str  # "checkout", or REF's release version / the ref as given
    python: str
    commit: str | None = None  # None: the checkout
    path: tuple[str, ...] = ()  # PYTHONPATH after the app's directory

    @classmethod
    def checkout(cls) -> Version:
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        return cls("checkout", sys.executable, None, tuple(dict.fromkeys([str(REPO_ROOT), *inherited])))

    @classmethod
    def of(cls, ref: str) -> Version:
        sha, label = resolve(ref)
        version = cls(label, str(install(sha)), sha)
        version.check()
        return version

    @property
    def is_checkout(self) -> bool:
        return self.commit is None

    @property
    def package(self) -> Path:
        """This version's ``burrow`` directory."""
        if self.is_checkout:
            return REPO_ROOT / "burrow"
        return next(Path(self.python).parent.parent.glob("lib/python*/site-packages/burrow"))

    def env(self, app: Path, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for this version's processes, the app importable from ``app``."""
        byte_compile(self.python, self.package)
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("BURROW_DATABASE")}
        env["PYTHONPATH"] = os.pathsep.join((str(app), *self.path))
        return env

    def check(self) -> None:
        """Fail unless this version's processes import burrow from where they should."""
        scratch = cache_root() / "check"
        app = app_dir(scratch)
        done = subprocess.run([self.python, "-c", "import burrow; print(burrow.__file__)"], capture_output=True,
                              cwd=app, env=self.env(app), check=False)
        where = done.stdout.decode().strip()
        expected = str(REPO_ROOT) if self.is_checkout else str(Path(self.python).parent.parent)
        if done.returncode != 0 or not where.startswith(expected):
            raise VersionError(f"{self.label}: burrow imported from {where or done.stderr.decode().strip()[-200:]!r},"
                               f" not from {expected}")

    def migrate(self, target: Target) -> None:
        """Create burrow's tables in ``target`` with this version's migrations."""
        if self.is_checkout:
            target.migrate()
            return
        app = app_dir(Path(target.workdir))
        code = f"import burrow; burrow.connect({target.dsn!r}, schema={target.schema!r}).close()"
        done = subprocess.run([self.python, "-c", code], capture_output=True, cwd=app, env=self.env(app), check=False)
        if done.returncode != 0:
            raise VersionError(f"{self.label}: migrating {target.schema or target.path} failed:"
                               f" {done.stderr.decode().strip()[-300:]}")
