"""The DeepWeeds download against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import graftsearch as gs
from graftsearch.data._download import RemoteFile, download_deepweeds
from graftsearch._utils.errors import DataError
from datagen import image_of_mode


class Server:
    """Serves ``files`` (path -> bytes) with HTTP Range support; ``cut[path] = k`` makes the
    next k responses for that path stop half way (with the full Content-Length announced)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut.get(self.path, 0) > 0:
                    server.cut[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _images_zip(names, *, root: str = "") -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as zf:
        for n in names:
            img = io.BytesIO()
            image_of_mode("RGB", rng, (8, 8)).save(img, format="JPEG")
            zf.writestr(root + n, img.getvalue())
    return buf.getvalue()


def _labels_csv(names) -> bytes:
    from graftsearch.data._spec import DEEPWEEDS_CLASSES

    lines = ["Filename,Label,Species"]
    for i, n in enumerate(names):
        lines.append(f"{n},{i % 9},{DEEPWEEDS_CLASSES[i % 9]}")
    return ("\n".join(lines) + "\n").encode()


NAMES = [f"2017010{d}-1200{i:02d}-0.jpg" for d in range(1, 4) for i in range(9)]


def _publish(server: Server, *, zip_bytes: bytes | None = None, sha: str | None = None):
    zip_bytes = zip_bytes if zip_bytes is not None else _images_zip(NAMES)
    labels = _labels_csv(NAMES)
    server.files["/dl/images.zip"] = zip_bytes
    server.files["/gh/labels.csv"] = labels
    return (RemoteFile("images.zip", (server.url + "/dl/images.zip",), sha or _sha(zip_bytes),
                       len(zip_bytes), unpack_to="images"),
            RemoteFile("labels/labels.csv", (server.url + "/gh/labels.csv",), _sha(labels),
                       len(labels)))


def test_download_success_then_nothing_to_do(server, tmp_path):
    files = _publish(server)
    events = []
    out = download_deepweeds(tmp_path / "dw", files=files, progress=events.append)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(NAMES)
    assert (out / "labels" / "labels.csv").read_bytes() == server.files["/gh/labels.csv"]
    assert not (out / "images.zip").exists() and not (out / ".download").exists()
    assert events[-1].stage == "download" and events[-1].done == events[-1].total
    ds = gs.load_dataset(f"deepweeds:{out}")
    assert len(ds) == 27 and ds.classes[8] == "Negative"
    n = len(server.requests)
    download_deepweeds(tmp_path / "dw", files=files)
    assert len(server.requests) == n  # finished: no request at all


def test_archive_with_one_top_folder_unpacks_its_contents(server, tmp_path):
    files = _publish(server, zip_bytes=_images_zip(NAMES[:3], root="images/"))
    out = download_deepweeds(tmp_path / "dw", files=files)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(NAMES[:3])


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    files = _publish(server, sha="0" * 64)
    with pytest.raises(DataError, match=r"Could not download 'images.zip' with the expected "
                                        r"checksum: .*SHA-256 [0-9a-f]{64} of .* bytes, expected 0{64}"):
        download_deepweeds(tmp_path / "dw", files=files)
    assert not (tmp_path / "dw" / "images").exists()
    assert not list((tmp_path / "dw").rglob("*.part"))


def test_mirrors_use_the_real_checksums(server, tmp_path):
    server.files["/mirror/images.zip"] = b"not the DeepWeeds archive"
    with pytest.raises(DataError, match=r"images.zip' with the expected checksum: .*expected "
                                        r"d616b33efe097909bdac9623abc5705b59ad11f6796a26a956c1aa5de652f1ba"):
        download_deepweeds(tmp_path / "dw", base_urls=server.url + "/mirror")
    assert server.requests[0][0] == "/mirror/images.zip"


def test_next_mirror_after_a_failure(server, tmp_path):
    zip_file, labels = _publish(server)
    zip_file = RemoteFile("images.zip", (server.url + "/missing.zip",) + zip_file.urls,
                          zip_file.sha256, zip_file.size, unpack_to="images")
    out = download_deepweeds(tmp_path / "dw", files=(zip_file, labels))
    assert (out / "images" / NAMES[0]).is_file()
    assert [r[0] for r in server.requests[:2]] == ["/missing.zip", "/dl/images.zip"]


def test_cut_connection_resumes_with_a_range_request(server, tmp_path):
    files = _publish(server)
    size = len(server.files["/dl/images.zip"])
    server.cut["/dl/images.zip"] = 1
    out = download_deepweeds(tmp_path / "dw", files=files)
    assert len(list((out / "images").iterdir())) == len(NAMES)
    zip_requests = [r for r in server.requests if r[0] == "/dl/images.zip"]
    assert zip_requests == [("/dl/images.zip", None), ("/dl/images.zip", f"bytes={size // 2}-")]


def test_interrupted_download_resumes_on_the_next_call(server, tmp_path):
    files = _publish(server)
    size = len(server.files["/dl/images.zip"])
    server.cut["/dl/images.zip"] = 1
    with pytest.raises(DataError, match=r"stopped after [\d,]+ of [\d,]+ bytes .*run the same "
                                        r"command again to resume"):
        download_deepweeds(tmp_path / "dw", files=files, retries=0)
    part = tmp_path / "dw" / ".download" / "images.zip.part"
    assert part.stat().st_size == size // 2
    assert not (tmp_path / "dw" / "images").exists()
    download_deepweeds(tmp_path / "dw", files=files)
    assert server.requests[-2] == ("/dl/images.zip", f"bytes={size // 2}-")
    assert len(list((tmp_path / "dw" / "images").iterdir())) == len(NAMES)


def _evil_zip(kind: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.jpg", b"fine")
        if kind == "dotdot":
            zf.writestr("../escaped.jpg", b"evil")
        elif kind == "absolute":
            zf.writestr("/tmp/escaped.jpg", b"evil")
        else:
            info = zipfile.ZipInfo("link.jpg")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../../etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("kind,why", [("dotdot", "a path with '..'"),
                                      ("absolute", "an absolute path"),
                                      ("symlink", "a symbolic link")])
def test_malicious_archives_are_refused(server, tmp_path, kind, why):
    evil = _evil_zip(kind)
    names = [i.filename for i in zipfile.ZipFile(io.BytesIO(evil)).infolist()]
    assert any(n.startswith(("/", "..")) or n == "link.jpg" for n in names)
    files = _publish(server, zip_bytes=evil)
    with pytest.raises(DataError, match=rf"holds a member that would land outside .*is {why}\. "
                                        r"Nothing was unpacked"):
        download_deepweeds(tmp_path / "t" / "dw", files=files)
    assert not (tmp_path / "t" / "dw" / "images").exists()
    assert not (tmp_path / "t" / "escaped.jpg").exists()
    assert not [p for p in (tmp_path / "t" / "dw").iterdir() if "unpacking" in p.name]


def test_deepweeds_alone_downloads_on_first_use(server, tmp_path, monkeypatch):
    import graftsearch.data._download as dl

    monkeypatch.setenv("GRAFTSEARCH_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(dl, "DEEPWEEDS_FILES", _publish(server))
    ds = gs.load_dataset("deepweeds")
    assert ds.root == tmp_path / "data" / "deepweeds" and len(ds) == 27
    with pytest.raises(DataError, match=r"'data' parameter must be an existing file or directory"):
        gs.load_dataset(f"deepweeds:{tmp_path / 'elsewhere'}")


def test_cli_download_reports_a_bad_mirror(server, tmp_path, capsys):
    from graftsearch._cli import main

    server.files["/m/images.zip"] = b"nope"
    code = main(["data", "download", "deepweeds", "--to", str(tmp_path / "dw"),
                 "--mirror", server.url + "/m"])
    assert code == 2
    assert "expected checksum" in capsys.readouterr().err
