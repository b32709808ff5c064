"""Download DeepWeeds: resumable HTTP with SHA-256 checks, and a safe, atomic unpack.

Where the real files live (from the DeepWeeds README, github.com/AlexOlsen/DeepWeeds, and the
checksum record of TensorFlow Datasets' ``deep_weeds``):

- ``images.zip`` (17,509 JPEGs, 256x256): primary
  https://nextcloud.qriscloud.org.au/index.php/s/a3KxPawpqkiorST/download, mirror
  https://docs.google.com/uc?export=download&id=1xnK3B6K6KekDI55vwJ0vnc2IGoDga9cj;
  935,276,050 bytes, SHA-256 d616b33e...652f1ba (as recorded for the mirror).
- ``labels.csv`` and the official five-fold ``{train,val,test}_subset{0..4}.csv`` from
  https://raw.githubusercontent.com/AlexOlsen/DeepWeeds/master/labels/; the SHA-256 of
  ``labels.csv`` is TFDS' record, those of the split files were taken from copies of that
  folder of the repository.

The target directory ends up as ``images/`` plus ``labels/`` (labels.csv and the split files),
the layout of the DeepWeeds repository. Partial downloads stay in ``DIR/.download/`` and resume
with an HTTP Range request; a file already placed there by hand (``DIR/.download/images.zip``) is
used when its checksum is right.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import socket
import stat
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence, Tuple, Union

from graftsearch._utils.atomic import write_json
from graftsearch._utils.errors import DataError, ParameterError, param_message
from graftsearch._utils.progress import ProgressCallback, report
from graftsearch._version import __version__

logger = logging.getLogger("graftsearch")

IMAGES_URLS = (
    "https://nextcloud.qriscloud.org.au/index.php/s/a3KxPawpqkiorST/download",
    "https://docs.google.com/uc?export=download&id=1xnK3B6K6KekDI55vwJ0vnc2IGoDga9cj",
)
IMAGES_SHA256 = "d616b33efe097909bdac9623abc5705b59ad11f6796a26a956c1aa5de652f1ba"
IMAGES_SIZE = 935_276_050
LABELS_BASE_URL = "https://raw.githubusercontent.com/AlexOlsen/DeepWeeds/master/labels/"

# name: (bytes, sha256) of the label and official split files of the DeepWeeds repository
_LABEL_FILES = {
    "labels.csv": (598898, "6fb95b89fd9d384f94e185a5cab6c5da7c987649399c90618ecc60acfb0112eb"),
    "train_subset0.csv": (252039, "a2e63f561a545837c8cabaa276a957ccf1293ec985c9d8fbc49d67b4fd5abdb2"),
    "train_subset1.csv": (252111, "a7447a6c67852f79837eca790aac55f2e16b96e71d63a1d850ba5a4db57748b8"),
    "train_subset2.csv": (252159, "7e27d63c1614ebbd6a57b3925403f999f70facbc2ffc04f1116f7f8688ebbd52"),
    "train_subset3.csv": (252159, "fae89ae8d9b00a919a5b20d7eda4807a3400c040ec89df2ac3304a70c97ad24d"),
    "train_subset4.csv": (252207, "e0c8011ad795638b85dc59d49d1c9e7af4b3843c780cebb3e3241188cf28380e"),
    "val_subset0.csv": (84039, "1fa70a03a68def06c921a1dd7f0b53e96490f6dfad51d7d423bb145161ebc478"),
    "val_subset1.csv": (84063, "0aa1f7d2140e20c14736029a37c3022ca14c37f9e135435d3c5bb790054c2e92"),
    "val_subset2.csv": (84063, "5a5cc004ef3ec9f021fd46194519ab030b0c65606e3b9cd1f09fc465859289d8"),
    "val_subset3.csv": (84087, "a50360be0955155e9dfeea9927230ffb8376f3a2b2a2e9f46fb6bf51c84cacd6"),
    "val_subset4.csv": (84087, "d28432a8a3943a23d1d8539a72a6b78ee67f6ec4179830cec071e03fdb749ce3"),
    "test_subset0.csv": (84183, "fb212793b988bc0455aae2e48cb9eb3168014c2f47fbdb93f5f1e284e0974f75"),
    "test_subset1.csv": (84087, "1ffc3df9be7e312691a4d3c748deeabd846f339e2a9f2a084f84b16beca2f6e9"),
    "test_subset2.csv": (84039, "c4d0c72bd3bf6ce3cf4b7528ea125be998e881cd4234dc80532e4217aeccd2c1"),
    "test_subset3.csv": (84015, "8f4cd1c842b12d4282a865d83a7f960745c1b67d221c32a75ca3d0c99f0af471"),
    "test_subset4.csv": (83967, "0efa3be49a357d83f60f5c9164350503e92b357a72d0ff461f865e47f6f91171"),
}

MARKER = ".graftsearch-deepweeds.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where it goes (relative to the target), its URLs (mirrors, tried in
    order), its SHA-256 and size, and for an archive the folder it unpacks into."""

    name: str
    urls: Tuple[str, ...]
    sha256: str
    size: Optional[int] = None
    unpack_to: Optional[str] = None


DEEPWEEDS_FILES: Tuple[RemoteFile, ...] = (
    RemoteFile("images.zip", IMAGES_URLS, IMAGES_SHA256, IMAGES_SIZE, unpack_to="images"),
) + tuple(RemoteFile(f"labels/{name}", (LABELS_BASE_URL + name,), sha, size)
          for name, (size, sha) in _LABEL_FILES.items())


class _Cut(Exception):
    """The server closed the connection before sending everything."""


class _WrongFile(Exception):
    """The server answered with something that is not the file (an HTML page)."""


def download_deepweeds(to: Union[str, os.PathLike], *, progress: Optional[ProgressCallback] = None,
                       base_urls: Union[str, Sequence[str], None] = None,
                       files: Optional[Sequence[RemoteFile]] = None, retries: int = 5,
                       timeout: float = 60.0, keep_archive: bool = False) -> Path:
    """Fetch DeepWeeds into ``to`` (``images/`` and ``labels/``) and return that path.

    Resumes partial downloads, checks each file's SHA-256, unpacks the image archive into a
    temporary folder that is renamed into place only when complete, and refuses archive members
    that would land outside it (absolute paths, ``..``, links). ``base_urls`` replaces the real
    URLs by mirrors serving the same file names (``{base}/images.zip``, ``{base}/labels.csv``,
    ...); ``files`` replaces the whole file list (tests). A finished download is not repeated.
    """
    target = Path(to).expanduser()
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ParameterError(param_message("retries", "a non-negative integer", retries))
    wanted = tuple(files) if files is not None else DEEPWEEDS_FILES
    if base_urls is not None:
        bases = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        wanted = tuple(RemoteFile(f.name, tuple(f"{b.rstrip('/')}/{PurePosixPath(f.name).name}"
                                                for b in bases), f.sha256, f.size, f.unpack_to)
                       for f in wanted)
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        hint = f"({type(exc).__name__}: {exc}) Pick another `--to DIR`."
        raise DataError(param_message("to", "a writable directory", str(target), hint)) from None

    from filelock import FileLock

    with FileLock(str(target / ".download.lock")):
        if (target / MARKER).is_file() and all(_in_place(target, f) for f in wanted):
            logger.info("DeepWeeds is already in %s", target)
            return target
        work = target / ".download"
        work.mkdir(exist_ok=True)
        for f in wanted:
            if _in_place(target, f):
                continue
            local = work / PurePosixPath(f.name).name
            _obtain(f, local, progress=progress, retries=retries, timeout=timeout)
            if f.unpack_to:
                unpack_zip(local, target / f.unpack_to)
                if not keep_archive:
                    local.unlink()
            else:
                dest = target / f.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(local, dest)
        write_json(target / MARKER, {"graftsearch": __version__, "finished": time.time(),
                                     "files": {f.name: f.sha256 for f in wanted}})
        shutil.rmtree(work, ignore_errors=True)
    return target


def _in_place(target: Path, f: RemoteFile) -> bool:
    if f.unpack_to:
        return (target / f.unpack_to).is_dir()
    dest = target / f.name
    return dest.is_file() and (f.size is None or dest.stat().st_size == f.size)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _obtain(f: RemoteFile, local: Path, *, progress, retries: int, timeout: float) -> None:
    """Make ``local`` a verified copy of ``f``, from a file already there or from its URLs."""
    if local.is_file():
        if sha256_of(local) == f.sha256:
            return
        local.unlink()
    part = local.with_name(local.name + ".part")
    failures = []
    for url in f.urls:
        try:
            _fetch(url, part, f, progress=progress, retries=retries, timeout=timeout)
        except _WrongFile as exc:
            failures.append(f"{url}: {exc}")
            part.unlink(missing_ok=True)
            continue
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
            continue
        except (urllib.error.URLError, OSError) as exc:
            if part.is_file() and part.stat().st_size:
                raise DataError(_cut_message(f, url, part, exc)) from None
            failures.append(f"{url}: {_reason(exc)}")
            continue
        got = sha256_of(part)
        if got != f.sha256:
            size = part.stat().st_size
            part.unlink()
            failures.append(f"{url}: SHA-256 {got} of {size:,} bytes, expected {f.sha256}"
                            + (f" ({f.size:,} bytes)" if f.size else ""))
            continue
        os.replace(part, local)
        return
    raise DataError(
        f"Could not download '{f.name}' with the expected checksum: " + "; ".join(failures)
        + f". Nothing was kept. Try again later, or put a copy of the file at '{local}' and run "
        "the same command again (it is used when its SHA-256 matches).")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason if reason is not None else exc}"


def _cut_message(f: RemoteFile, url: str, part: Path, exc: BaseException) -> str:
    have = part.stat().st_size if part.is_file() else 0
    total = f" of {f.size:,}" if f.size else ""
    return (f"The download of '{f.name}' from {url} stopped after {have:,}{total} bytes "
            f"({_reason(exc)}). The part is kept in '{part}'; run the same command again to "
            "resume from there.")


def _fetch(url: str, part: Path, f: RemoteFile, *, progress, retries: int, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming what is there; retry cut connections."""
    attempt = 0
    while True:
        have = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": f"graftsearch/{__version__}", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                _receive(resp, part, have, f, progress)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                return  # the range starts at the end: the part is already whole
            raise
        except (_Cut, http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError,
                urllib.error.URLError) as exc:
            if isinstance(exc, urllib.error.URLError) and not part.is_file():
                raise  # could not connect at all: try the next mirror
            attempt += 1
            if attempt > retries:
                raise DataError(_cut_message(f, url, part, exc)) from None
            logger.warning("download of %s cut (%s); resuming (attempt %d of %d)", f.name,
                           _reason(exc), attempt, retries)
            time.sleep(min(0.2 * attempt, 5.0))


def _receive(resp, part: Path, have: int, f: RemoteFile, progress) -> None:
    status = getattr(resp, "status", 200)
    if have and status == 206:
        start = _range_start(resp.headers.get("Content-Range", ""))
        if start != have:
            have = 0  # the server sent another range: start over
    elif have:
        have = 0  # no range support: the whole file comes again
    ctype = resp.headers.get("Content-Type", "")
    if ctype.startswith("text/html") and not f.name.endswith((".html", ".htm")):
        raise _WrongFile("the server sent an HTML page instead of the file (a mirror that "
                         "needs a browser)")
    length = resp.headers.get("Content-Length")
    total = have + int(length) if length is not None and length.isdigit() else f.size
    done = have
    with open(part, "r+b" if have else "wb") as fh:
        fh.seek(have)
        fh.truncate()
        while True:
            block = resp.read(_CHUNK)
            if not block:
                break
            fh.write(block)
            done += len(block)
            report(progress, "download", done, total, message=f.name, file=f.name)
    if length is not None and total is not None and done < total:
        raise _Cut(f"connection closed after {done:,} of {total:,} bytes")


def _range_start(content_range: str) -> Optional[int]:
    # "bytes 100-199/200"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# unpacking


def _unsafe_reason(info: zipfile.ZipInfo) -> Optional[str]:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode) and mode & 0o170000:
        return "not a plain file or folder"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "a path with '..'"
    return None


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` so that ``dest`` appears only when complete (one rename).

    Every member is checked first; one that would land outside ``dest`` (absolute path, ``..``,
    a link) stops the unpack before anything is written. An archive holding a single top folder
    is unpacked with that folder's contents as ``dest``.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"The archive '{archive}' cannot be opened ({type(exc).__name__}: {exc}). "
                        "Delete it and download again.") from None
    with zf:
        members = zf.infolist()
        for info in members:
            why = _unsafe_reason(info)
            if why:
                raise DataError(f"The archive '{archive}' holds a member that would land outside "
                                f"'{dest}': {info.filename!r} is {why}. Nothing was unpacked; this "
                                "is not a trustworthy archive, delete it.")
        tmp = dest.parent / f".{dest.name}.unpacking-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            root = tmp.resolve()
            for info in members:
                out = (tmp / info.filename.replace("\\", "/")).resolve()
                if root != out and root not in out.parents:  # belt and braces after the checks
                    raise DataError(f"The archive member {info.filename!r} of '{archive}' would "
                                    f"land outside '{dest}'. Nothing was unpacked.")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            entries = [p for p in tmp.iterdir() if not p.name.startswith(("__MACOSX", "."))]
            top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
            if dest.exists():
                raise DataError(f"'{dest}' already exists; remove it to unpack '{archive}' again.")
            os.replace(top, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
