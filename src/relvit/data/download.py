"""Fetching dataset files: atomic downloads and archive extraction that cannot write outside its target.

Nothing a later run could mistake for data is left behind: a download is written to a hidden temp
file next to its destination and renamed only once complete and verified, and an archive is
extracted into a hidden temp folder whose entries are renamed into place only once all of it is out.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from relvit.errors import MissingFileError, UserError, WouldOverwriteError
from relvit.runs.progress import Progress, progress

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(UserError, RuntimeError):
    """A download failed or its content did not match the expected checksum or size."""


class UnsafeArchiveError(UserError, ValueError):
    """An archive holds a member that would be written outside the extraction folder."""


def download_file(url: str, dest: str | os.PathLike, *, md5: str | None = None, size: int | None = None,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, replacing it only once the whole file arrived and matches ``md5``/``size``.

    On any failure, Ctrl-C included, the partial file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a unique temp name, so that two processes downloading at once do not write the same file
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    log.info("downloading %s to %s", url, dest)
    try:
        digest = hashlib.md5()
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            with Progress(int(length) if length else size, f"downloading {dest.name}", "B", unit_scale=True) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if size is not None and received != size:
            raise DownloadError(f"download of {url} is {received} bytes, expected {size}; nothing was kept")
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DownloadError(
                f"download of {url} has md5 {digest.hexdigest()}, expected {md5}; nothing was kept "
                "(the file is corrupt or the server changed it)"
            )
        # mkstemp makes the file private to its owner; data files are read by whoever runs training
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        # urllib reports bad URLs as ValueError and network or disk trouble as OSError
        if isinstance(e, (OSError, ValueError)):
            raise DownloadError(
                f"could not download {url} to {dest}: {e}. Nothing was kept; without network access, "
                f"fetch the file on another machine and put it at {dest}"
            ) from e
        raise
    return dest


def extract_archive(archive: str | os.PathLike, into: str | os.PathLike) -> list[Path]:
    """Extract a zip or tar (plain, gz, bz2, xz) archive into folder ``into``; return the top-level entries made.

    Every member is checked before anything is written; absolute paths, ``..`` and links that would
    point outside ``into`` raise UnsafeArchiveError. A top-level entry already in ``into`` is an error
    rather than being merged into, since a half-merged folder could not be told apart from data.
    """
    archive, into = Path(archive), Path(into)
    if not archive.is_file():
        raise MissingFileError(f"archive {archive} does not exist")
    opener: type[_ZipReader] | type[_TarReader]
    if zipfile.is_zipfile(archive):
        opener = _ZipReader
    elif tarfile.is_tarfile(archive):
        opener = _TarReader
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")

    with opener(archive) as reader:
        top_level = reader.check()
        into.mkdir(parents=True, exist_ok=True)
        clashes = sorted(name for name in top_level if (into / name).exists() or (into / name).is_symlink())
        if clashes:
            raise WouldOverwriteError(
                f"cannot extract {archive} into {into}: {', '.join(clashes)} already exist there; "
                "remove them to extract again"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=into))
        try:
            reader.extract_to(tmp)
            for name in sorted(top_level):
                os.replace(tmp / name, into / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %s into %s", archive, into)
    return [into / name for name in sorted(top_level)]


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The path parts of a member, refusing names that leave the extraction folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'; refusing to extract")
    return parts


def _escapes(parts: tuple[str, ...]) -> bool:
    """Whether a relative path, resolved lexically, climbs above its starting folder."""
    depth = 0
    for p in parts:
        depth += -1 if p == ".." else (0 if p in ("", ".") else 1)
        if depth < 0:
            return True
    return False


class _ZipReader:
    def __init__(self, archive: Path):
        self.archive = archive
        self.zf = zipfile.ZipFile(archive)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zf.close()

    def check(self) -> set[str]:
        top = set()
        for info in self.zf.infolist():
            parts = _member_parts(self.archive, info.filename)
            # zipfile writes links as plain files holding the target, so only names need checking
            if parts:
                top.add(parts[0])
        return top

    def extract_to(self, folder: Path) -> None:
        names = self.zf.namelist()
        for name in progress(names, len(names), f"extracting {self.archive.name}", "files"):
            self.zf.extract(name, folder)


class _TarReader:
    def __init__(self, archive: Path):
        self.archive = archive
        self.tf = tarfile.open(archive)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.tf.close()

    def check(self) -> set[str]:
        top, links = set(), set()
        for m in self.tf.getmembers():
            parts = _member_parts(self.archive, m.name)
            if not parts:
                continue
            where = f"{self.archive}: member {m.name!r}"
            # a member under a link from the same archive would be written wherever the link points
            for i in range(1, len(parts)):
                if parts[:i] in links:
                    raise UnsafeArchiveError(f"{where} lies under link {'/'.join(parts[:i])!r}; refusing to extract")
            if m.issym():
                target = PurePosixPath(m.linkname)
                if target.is_absolute() or _escapes(parts[:-1] + target.parts):
                    raise UnsafeArchiveError(
                        f"{where} is a symlink to {m.linkname!r}, outside the extraction folder; refusing to extract"
                    )
                links.add(parts)
            elif m.islnk():
                target = PurePosixPath(m.linkname)
                if target.is_absolute() or _escapes(target.parts):
                    raise UnsafeArchiveError(
                        f"{where} is a hard link to {m.linkname!r}, outside the extraction folder; refusing to extract"
                    )
                links.add(parts)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{where} is a device or fifo; refusing to extract")
            top.add(parts[0])
        return top

    def extract_to(self, folder: Path) -> None:
        # the "data" filter checks again against the real file system while extracting
        members = self.tf.getmembers()
        try:
            for member in progress(members, len(members), f"extracting {self.archive.name}", "files"):
                self.tf.extract(member, folder, filter="data")
        except tarfile.FilterError as e:
            raise UnsafeArchiveError(f"{self.archive}: {e}; refusing to extract") from e
