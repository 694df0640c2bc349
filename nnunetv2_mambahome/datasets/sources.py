"""Fetch and cache the pinned public sources the offline datasets are built from.

* Debian package `mricron-data` (MNI "ch2" T1 template and the AAL atlas on the same 1 mm grid).
* The PyPI sdist of `totalsegmentator` (its test reference CT/MR cases with segmentations, and the
  `map_to_binary.py` file that names their label ids).

Everything is downloaded once into the cache directory (`$NNUNETV2_MAMBAHOME_CACHE`, else
`~/.cache/nnunetv2_mambahome`) and checked against pinned SHA-256 digests, so every build sees the
same bytes. Unpacking goes to a staging folder that is renamed only when complete, so an interrupted
fetch never leaves a half-filled cache behind. Each fetch holds an exclusive lock (`flock` on `<target>.lock`)
from its check to the rename: processes sharing the cache (parallel test workers, two `make-dataset` runs)
fetch a source once, and the others wait and use that copy instead of downloading into the same files.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from nnunetv2_mambahome.progress import progress

CACHE_ENV = "NNUNETV2_MAMBAHOME_CACHE"

MRICRON_PACKAGE = "mricron-data"
MRICRON_VERSION = "1.2.20211006+dfsg-4"
MRICRON_SYSTEM_DIR = Path("/usr/share/mricron/templates")
# file name -> SHA-256 of that file in mricron-data 1.2.20211006+dfsg-4
MRICRON_FILES = {
    "ch2.nii.gz": "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
    "aal.nii.gz": "b512dcd3f36b77f56be7a9a038134096e66314b7e8c31d25875b96bcf6991454",
    "aal.nii.txt": "1788d6556a9ec056de9867b2382cf1ce1b51b87ae4cfd9cd25de48ae4dde709e",
}

TOTALSEG_VERSION = "2.18.0"
TOTALSEG_SDIST = f"totalsegmentator-{TOTALSEG_VERSION}.tar.gz"
TOTALSEG_SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
# Paths inside the sdist's top folder; only these are unpacked.
TOTALSEG_MEMBERS = (
    "tests/reference_files/example_ct.nii.gz",
    "tests/reference_files/example_seg_fast_force_split.nii.gz",
    "tests/reference_files/example_mr_sm.nii.gz",
    "tests/reference_files/example_seg_mr.nii.gz",
    "totalsegmentator/map_to_binary.py",
)


class SourceFetchError(RuntimeError):
    """A pinned source could not be fetched or did not match its pinned digest."""


def cache_dir() -> Path:
    """The download cache: `$NNUNETV2_MAMBAHOME_CACHE` if set, else `~/.cache/nnunetv2_mambahome`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nnunetv2_mambahome"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatched(folder: Path, expected: dict[str, str]) -> list[str]:
    """Names in `expected` that are missing from `folder` or have another digest."""
    return [n for n, h in expected.items() if not (folder / n).is_file() or _sha256(folder / n) != h]


def _run(cmd: Sequence[str], cwd: Path, what: str, fix: str) -> None:
    """Run `cmd`; on failure raise SourceFetchError naming the command, its output tail and a fix."""
    shown = " ".join(cmd)
    print(f"$ {shown}", flush=True)
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SourceFetchError(
            f"Could not fetch {what}: command not found: {cmd[0]!r} (while running `{shown}`).\nFix: {fix}"
        ) from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SourceFetchError(
            f"Could not fetch {what}: `{shown}` failed with exit code {proc.returncode}:\n{tail}\n"
            f"Fix: {fix}\nThen run the same command again; finished downloads are kept in {cwd}."
        )


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A fresh folder next to `target` to fill; moved atomically to `target` on success, removed on any error."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():  # an incomplete copy (fetch_once found it lacking): replace it
        shutil.rmtree(target)
    staging.chmod(0o755)  # mkdtemp creates it private
    staging.rename(target)


def fetch_once(target: Path, complete: Callable[[Path], bool], fetch: Callable[[Path], None]) -> Path:
    """`target`, filled by `fetch(staging)` and renamed into place unless `complete(target)` already holds.

    The check, the fetch and the rename run under an exclusive `flock` on `<target>.lock`, so concurrent
    processes fetch once: the others block, then find `target` complete. The lock is released when its file
    closes, also when the process dies.
    """
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete(target):  # nobody fetched it while we waited
            with _staging(target) as staging:
                fetch(staging)
    return target


def mricron_templates(cache: Optional[Path] = None) -> Path:
    """Folder holding ch2.nii.gz, aal.nii.gz and aal.nii.txt (pinned digests).

    Uses an installed `/usr/share/mricron/templates` when its files match the pinned digests;
    otherwise `apt-get download`s the pinned .deb once and unpacks it with `dpkg-deb -x`.
    """
    if not _mismatched(MRICRON_SYSTEM_DIR, MRICRON_FILES):
        return MRICRON_SYSTEM_DIR
    cache = Path(cache) if cache is not None else cache_dir()
    return fetch_once(cache / f"{MRICRON_PACKAGE}-{MRICRON_VERSION}", lambda t: not _mismatched(t, MRICRON_FILES),
                      functools.partial(_fetch_mricron, cache))


def _fetch_mricron(cache: Path, staging: Path) -> None:
    """Copy MRICRON_FILES out of the pinned .deb (downloaded into `cache`/downloads if absent) into `staging`."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    debs = sorted(downloads.glob(f"{MRICRON_PACKAGE}_*.deb"))
    if not debs:
        print(f"Fetching {MRICRON_PACKAGE} {MRICRON_VERSION} (16 MB, once) into {downloads}", flush=True)
        _run(["apt-get", "download", f"{MRICRON_PACKAGE}={MRICRON_VERSION}"], downloads, MRICRON_PACKAGE,
             "on Debian/Ubuntu run `apt-get update` first and check network access to the archive. "
             f"Elsewhere, download {MRICRON_PACKAGE}_{MRICRON_VERSION}_all.deb (e.g. from "
             f"https://snapshot.debian.org/package/mricron/) and put it into {downloads}.")
        debs = sorted(downloads.glob(f"{MRICRON_PACKAGE}_*.deb"))
        if not debs:
            raise SourceFetchError(f"`apt-get download` reported success but left no {MRICRON_PACKAGE} .deb in "
                                   f"{downloads}; put the .deb there by hand and retry.")
    with tempfile.TemporaryDirectory(dir=cache) as unpacked:
        _run(["dpkg-deb", "-x", str(debs[-1]), unpacked], downloads, MRICRON_PACKAGE,
             "install dpkg (Debian's `dpkg` package), or remove the (possibly damaged) .deb from "
             f"{downloads} so that it is downloaded again.")
        for name in MRICRON_FILES:
            src = Path(unpacked) / "usr/share/mricron/templates" / name
            if src.is_file():
                shutil.copy2(src, staging / name)
    bad = _mismatched(staging, MRICRON_FILES)
    if bad:
        raise SourceFetchError(
            f"{debs[-1].name} does not contain the pinned {MRICRON_PACKAGE} {MRICRON_VERSION} files "
            f"(missing or different: {', '.join(bad)}). Delete {debs[-1]} and retry, or supply "
            f"{MRICRON_PACKAGE}_{MRICRON_VERSION}_all.deb by hand.")


def totalsegmentator_files(cache: Optional[Path] = None) -> Path:
    """Folder with TOTALSEG_MEMBERS unpacked from the pinned `totalsegmentator` sdist (never imported)."""
    cache = Path(cache) if cache is not None else cache_dir()
    return fetch_once(cache / f"totalsegmentator-{TOTALSEG_VERSION}",
                      lambda t: all((t / m).is_file() for m in TOTALSEG_MEMBERS),
                      functools.partial(_fetch_totalsegmentator, cache))


def _fetch_totalsegmentator(cache: Path, staging: Path) -> None:
    """Unpack TOTALSEG_MEMBERS of the pinned sdist (downloaded into `cache`/downloads if absent) into `staging`."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    sdist = downloads / TOTALSEG_SDIST
    if not sdist.is_file():
        print(f"Fetching the totalsegmentator=={TOTALSEG_VERSION} sdist (38 MB, once) into {downloads}", flush=True)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"totalsegmentator=={TOTALSEG_VERSION}", "-d", str(downloads)], downloads,
             f"totalsegmentator {TOTALSEG_VERSION} sdist",
             f"check network access to PyPI (and any PIP_INDEX_URL), or download {TOTALSEG_SDIST} from "
             f"https://pypi.org/project/totalsegmentator/{TOTALSEG_VERSION}/#files into {downloads}.")
    if _sha256(sdist) != TOTALSEG_SDIST_SHA256:
        raise SourceFetchError(f"{sdist} does not match the pinned SHA-256 of the PyPI sdist; delete it and retry.")
    top = f"totalsegmentator-{TOTALSEG_VERSION}/"
    wanted = {top + m: m for m in TOTALSEG_MEMBERS}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in progress(tar, desc=f"Scanning {TOTALSEG_SDIST}"):
            if member.name in wanted and member.isfile():
                out = staging / wanted[member.name]
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    missing = [m for m in TOTALSEG_MEMBERS if not (staging / m).is_file()]
    if missing:
        raise SourceFetchError(f"{sdist} lacks expected members {missing}; delete it and retry.")
