"""Downloads land whole or not at all; archives never write outside their target folder."""
from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from relvit.data import download
from relvit.data.download import DownloadError, UnsafeArchiveError, download_file, extract_archive


def _everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def payload(tmp_path):
    src = tmp_path / "server" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(bytes(range(256)) * 5000)  # > 1 MiB, so it arrives in several chunks
    return src


def test_download_from_url_writes_the_file(tmp_path, payload):
    dest = tmp_path / "data" / "data.bin"
    md5 = hashlib.md5(payload.read_bytes()).hexdigest()

    assert download_file(payload.as_uri(), dest, md5=md5, size=payload.stat().st_size) == dest

    assert dest.read_bytes() == payload.read_bytes()
    assert _everything(dest.parent) == ["data.bin"]


def test_failed_download_leaves_nothing(tmp_path):
    dest = tmp_path / "data" / "data.bin"
    with pytest.raises(DownloadError, match="could not download"):
        download_file((tmp_path / "no_such_file").as_uri(), dest)
    assert _everything(tmp_path / "data") == []


def test_md5_mismatch_leaves_nothing_and_keeps_an_older_file(tmp_path, payload):
    dest = tmp_path / "data" / "data.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"older, good copy")

    with pytest.raises(DownloadError, match="md5"):
        download_file(payload.as_uri(), dest, md5="0" * 32)

    assert dest.read_bytes() == b"older, good copy"
    assert _everything(dest.parent) == ["data.bin"]


def test_size_mismatch_leaves_nothing(tmp_path, payload):
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="bytes, expected 7"):
        download_file(payload.as_uri(), dest, size=7)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["server"]


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        def read(self, n=-1):
            if self.tell():
                raise KeyboardInterrupt  # Ctrl-C after the first chunk
            return super().read(n)

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: Response(b"x" * (3 << 20)))
    with pytest.raises(KeyboardInterrupt):
        download_file("http://example.invalid/data.bin", tmp_path / "data" / "data.bin")
    assert _everything(tmp_path / "data") == []


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_extract_archive_puts_its_folders_in_place(tmp_path, kind):
    members = {"pack/a.txt": b"a", "pack/sub/b.txt": b"b", "top.txt": b"t"}
    archive = tmp_path / f"pack.{kind}"
    _zip(archive, members) if kind == "zip" else _tar(archive, list(members.items()))
    target = tmp_path / "out"

    made = extract_archive(archive, target)

    assert made == [target / "pack", target / "top.txt"]
    assert _everything(target) == ["pack", "pack/a.txt", "pack/sub", "pack/sub/b.txt", "top.txt"]
    assert (target / "pack" / "sub" / "b.txt").read_bytes() == b"b"


def test_tar_links_inside_the_target_are_kept(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [("pack/a.txt", b"a"), _link("pack/link.txt", "a.txt")])
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "pack" / "link.txt").read_bytes() == b"a"


@pytest.mark.parametrize(
    "members, reason",
    [
        ({"ok.txt": b"", "../evil.txt": b"x"}, "'..'"),
        ({"ok.txt": b"", "/tmp/evil.txt": b"x"}, "absolute path"),
    ],
)
def test_zip_member_escaping_the_target_is_refused(tmp_path, members, reason):
    archive = _zip(tmp_path / "bad.zip", members)
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=reason) as err:
        extract_archive(archive, target)
    assert "evil.txt" in str(err.value)
    assert not target.exists() or _everything(target) == []
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    "members, reason",
    [
        ([("ok.txt", b""), ("../evil.txt", b"x")], "'..'"),
        ([("ok.txt", b""), ("/tmp/evil.txt", b"x")], "absolute path"),
        ([_link("evil", "/etc")], "symlink to '/etc'"),
        ([_link("dir/evil", "../../outside")], "symlink to '../../outside'"),
        ([_link("evil", "../outside", tarfile.LNKTYPE)], "hard link"),
        ([_link("here", "."), ("here/evil.txt", b"x")], "under link 'here'"),
        # looks inside when read as text, but "here" is the target folder itself, so this is its parent
        ([_link("here", "."), _link("evil", "here/..")], "outside the destination"),
    ],
)
def test_tar_member_escaping_the_target_is_refused(tmp_path, members, reason):
    archive = _tar(tmp_path / "bad.tar.gz", members)
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=reason):
        extract_archive(archive, target)
    assert not target.exists() or _everything(target) == []
    assert not (tmp_path / "evil.txt").exists()


def test_extraction_never_merges_into_an_existing_folder(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"pack/new.txt": b"new"})
    (tmp_path / "out" / "pack").mkdir(parents=True)
    (tmp_path / "out" / "pack" / "old.txt").write_text("old")

    with pytest.raises(FileExistsError, match="pack"):
        extract_archive(archive, tmp_path / "out")
    assert _everything(tmp_path / "out") == ["pack", "pack/old.txt"]


def test_interrupted_extraction_leaves_no_half_folder(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "a.zip", {"pack/a.txt": b"a", "pack/b.txt": b"b"})

    def extract_then_die(self, folder):
        self.zf.extract("pack/a.txt", folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(download._ZipReader, "extract_to", extract_then_die)
    with pytest.raises(KeyboardInterrupt):
        extract_archive(archive, tmp_path / "out")
    assert _everything(tmp_path / "out") == []


def test_not_an_archive_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        extract_archive(path, tmp_path / "out")
