"""Downloads against a local http.server: resume, retries, verification, layout and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import benchmark
from core.errors import DownloadError
from core.facts import LICENCE, citations
from data_utils import sources, verify
from data_utils.archives import UnsafeArchiveError
from data_utils.download import BASE_URL_ENV, download_dataset
from data_utils.fetch import download_file
from data_utils.readers import read_ham10000, read_isic2018
from data_utils.sources import FILES, RemoteFile, files_for
from data_utils.verify import is_verified

INDEX_PATH = ("/api/datasets/:persistentId/versions/:latest-published/files"
              "?persistentId=doi:10.7910/DVN/DBW86T")


class FakeServer:
    """Serves `files` (URL path -> bytes); can drop a response early or ignore Range."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_once: dict[str, int] = {}
        self.ignore_range: set[str] = set()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                rng = self.headers.get("Range")
                state.requests.append((self.path, rng))
                body = state.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and self.path not in state.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                cut = state.drop_once.pop(self.path, None)
                # HTTP/1.0: the connection closes when the handler returns, mid-body if cut.
                self.wfile.write(payload if cut is None else payload[:cut])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.close()


def _jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 90, 255 - shade)).save(buf, "JPEG")
    return buf.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _images(folder: str, ids: range) -> dict[str, bytes]:
    return {f"{folder}/ISIC_{i:07d}.jpg": _jpeg(i) for i in ids}


def _gt(folder: str, ids: range) -> dict[str, bytes]:
    rows = "".join(f"ISIC_{i:07d},0.0,1.0,0.0,0.0,0.0,0.0,0.0\n" for i in ids)
    csv = ("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n" + rows).encode()
    return {f"{folder}/{folder}.csv": csv, f"{folder}/LICENSE.txt": b"CC BY-NC 4.0"}


# Small stand-ins for the official files, with the image counts the tiny table expects.
ISIC_COUNTS = {"ISIC2018_Task3_Training_Input.zip": (4,),
               "ISIC2018_Task3_Validation_Input.zip": (2,),
               "ISIC2018_Task3_Test_Input.zip": (3, 2)}
HAM_COUNTS = {"HAM10000_images_part_1.zip": (3,), "HAM10000_images_part_2.zip": (2,)}


def _tiny_table() -> tuple[RemoteFile, ...]:
    counts = {**ISIC_COUNTS, **HAM_COUNTS}
    return tuple(dataclasses.replace(row, expected_images=counts[row.name])
                 if row.name in counts else row for row in FILES)


def _isic_payloads() -> dict[str, bytes]:
    return {
        "ISIC2018_Task3_Training_Input.zip": _zip(_images("ISIC2018_Task3_Training_Input",
                                                          range(1, 5))),
        "ISIC2018_Task3_Training_GroundTruth.zip": _zip(_gt("ISIC2018_Task3_Training_GroundTruth", range(1, 5))),
        "ISIC2018_Task3_Training_LesionGroupings.csv":
            b"image,lesion_id,diagnosis_confirm_type\n" + b"".join(
                b"ISIC_%07d,HAM_%07d,histopathology\n" % (i, i) for i in range(1, 5)),
        "ISIC2018_Task3_Validation_Input.zip": _zip(_images("ISIC2018_Task3_Validation_Input",
                                                            range(10, 12))),
        "ISIC2018_Task3_Validation_GroundTruth.zip":
            _zip(_gt("ISIC2018_Task3_Validation_GroundTruth", range(10, 12))),
        # 2 images: the public test release's count may differ from the challenge's (3 here).
        "ISIC2018_Task3_Test_Input.zip": _zip(_images("ISIC2018_Task3_Test_Input", range(20, 22))),
        "ISIC2018_Task3_Test_GroundTruth.zip": _zip(_gt("ISIC2018_Task3_Test_GroundTruth", range(20, 22))),
    }


@pytest.fixture()
def isic_server(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.setattr(sources, "FILES", _tiny_table())
    for name, data in _isic_payloads().items():
        server.files["/" + name] = data
    return server


# Dataverse's archival (tab-separated, quoted) form of the metadata, for the 5 fixture images.
HAM_METADATA_TAB = b'lesion_id\timage_id\tdx\tdx_type\tage\tsex\tlocalization\n' + b"".join(
    b'"HAM_%07d"\t"ISIC_%07d"\t"%s"\t"histo"\t80.0\t"male"\t"scalp"\n' % (i // 2, i, dx)
    for i, dx in zip(range(1, 6), (b"bkl", b"nv", b"nv", b"mel", b"mel"), strict=True))


def _ham_server(server: FakeServer, md5_override: str | None = None) -> dict[str, bytes]:
    payloads = {
        # part 1 flat at the zip root, part 2 inside a folder: both must land in the same layout.
        "/api/access/datafile/101": _zip({f"ISIC_{i:07d}.jpg": _jpeg(i) for i in range(1, 4)}),
        "/api/access/datafile/102": _zip(_images("HAM10000_images_part_2", range(4, 6))),
        "/api/access/datafile/103?format=original": HAM_METADATA_TAB,
    }
    server.files.update(payloads)
    listing = [
        {"label": "HAM10000_images_part_1.zip",
         "dataFile": {"id": 101, "filename": "HAM10000_images_part_1.zip",
                      "filesize": len(payloads["/api/access/datafile/101"]),
                      "checksum": {"type": "MD5", "value": md5_override or hashlib.md5(
                          payloads["/api/access/datafile/101"]).hexdigest()}}},
        {"label": "HAM10000_images_part_2.zip",
         "dataFile": {"id": 102, "filename": "HAM10000_images_part_2.zip",
                      "md5": hashlib.md5(payloads["/api/access/datafile/102"]).hexdigest()}},
        {"label": "HAM10000_metadata.tab",
         "dataFile": {"id": 103, "filename": "HAM10000_metadata.tab", "filesize": 999999,
                      "originalFileFormat": "text/csv", "md5": "0" * 32}},
        {"label": "ISIC2018_Task3_Test_Images.zip", "dataFile": {"id": 104}},
    ]
    server.files[INDEX_PATH] = json.dumps({"status": "OK", "data": listing}).encode()
    return payloads


def _paths(server: FakeServer) -> list[str]:
    return [path for path, _ in server.requests]


def test_table_lists_every_official_file_once() -> None:
    isic = {row.name: row for row in files_for("isic2018")}
    assert sorted(isic) == sorted([
        "ISIC2018_Task3_Training_Input.zip", "ISIC2018_Task3_Training_GroundTruth.zip",
        "ISIC2018_Task3_Training_LesionGroupings.csv", "ISIC2018_Task3_Validation_Input.zip",
        "ISIC2018_Task3_Validation_GroundTruth.zip", "ISIC2018_Task3_Test_Input.zip",
        "ISIC2018_Task3_Test_GroundTruth.zip"])
    for name, row in isic.items():
        assert row.url() == f"https://isic-challenge-data.s3.amazonaws.com/2018/{name}"
        assert row.extracts_to in (None, name.removesuffix(".zip"))
    assert isic["ISIC2018_Task3_Training_Input.zip"].expected_images == (10015,)
    assert isic["ISIC2018_Task3_Validation_Input.zip"].expected_images == (193,)
    assert set(isic["ISIC2018_Task3_Test_Input.zip"].expected_images) == {1512, 1511}
    ham = {row.name: row for row in files_for("ham10000")}
    assert ham["HAM10000_images_part_1.zip"].expected_images == (5000,)
    assert ham["HAM10000_images_part_2.zip"].expected_images == (5015,)
    assert ham["HAM10000_metadata.csv"].url(file_id=7) == (
        "https://dataverse.harvard.edu/api/access/datafile/7?format=original")
    assert ham["HAM10000 file list (Dataverse)"].url("http://mirror/x") == "http://mirror/x" + INDEX_PATH
    assert len({(row.dataset, row.name) for row in FILES}) == len(FILES)
    with pytest.raises(DownloadError, match="no download is defined for dataset 'synthetic'"):
        files_for("synthetic")


def test_isic_download_extract_verify_then_rerun_fetches_nothing(
        isic_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "isic"
    summary = download_dataset("isic2018", data, base_url=isic_server.url, progress=False)
    assert sorted(_paths(isic_server)) == sorted(isic_server.files)
    assert summary.images == {"ISIC2018_Task3_Training_Input": 4,
                              "ISIC2018_Task3_Training_GroundTruth": 0,
                              "ISIC2018_Task3_Validation_Input": 2,
                              "ISIC2018_Task3_Validation_GroundTruth": 0,
                              "ISIC2018_Task3_Test_Input": 2,
                              "ISIC2018_Task3_Test_GroundTruth": 0}
    assert (data / "ISIC2018_Task3_Training_Input" / "ISIC_0000001.jpg").read_bytes() == _jpeg(1)
    assert (data / "ISIC2018_Task3_Test_GroundTruth" / "ISIC2018_Task3_Test_GroundTruth.csv").is_file()
    assert (data / "ISIC2018_Task3_Training_LesionGroupings.csv").read_bytes() == \
        isic_server.files["/ISIC2018_Task3_Training_LesionGroupings.csv"]
    marker = json.loads((data / "ISIC2018_Task3_Validation_Input.zip.verified.json").read_text())
    payload = isic_server.files["/ISIC2018_Task3_Validation_Input.zip"]
    assert marker["sha256"] == hashlib.sha256(payload).hexdigest()
    assert marker["size"] == len(payload)
    assert not list(data.glob("*.part")) and not list(data.glob(".*extracting"))
    table = read_isic2018(data)  # the project's reader accepts the downloaded layout as is
    assert sorted(table["image_id"]) == [f"ISIC_{i:07d}" for i in range(1, 5)]

    # The rerun trusts the markers: no request, and no file is hashed again.
    def no_rehash(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("verified file was hashed again")

    monkeypatch.setattr(verify, "hash_file", no_rehash)
    before = len(isic_server.requests)
    again = download_dataset("isic2018", data, base_url=isic_server.url, progress=False)
    assert len(isic_server.requests) == before
    assert again.downloaded == [] and len(again.skipped) == 7
    assert again.images == summary.images


def test_changed_archive_is_rehashed_and_downloaded_again(isic_server: FakeServer,
                                                          tmp_path: Path) -> None:
    data = tmp_path / "isic"
    download_dataset("isic2018", data, base_url=isic_server.url, progress=False)
    name = "ISIC2018_Task3_Validation_Input.zip"
    (data / name).write_bytes(b"PK\x03\x04 truncated garbage")
    shutil.rmtree(data / "ISIC2018_Task3_Validation_Input")
    before = len(isic_server.requests)
    summary = download_dataset("isic2018", data, base_url=isic_server.url, progress=False)
    assert _paths(isic_server)[before:] == ["/" + name]
    assert summary.downloaded == [name]
    assert (data / name).read_bytes() == isic_server.files["/" + name]
    assert summary.images["ISIC2018_Task3_Validation_Input"] == 2


def test_ham10000_from_dataverse_file_list_gives_the_official_layout(
        server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "FILES", _tiny_table())
    _ham_server(server)
    data = tmp_path / "ham"
    summary = download_dataset("ham10000", data, base_url=server.url.rstrip("/"), progress=False)
    assert _paths(server) == [INDEX_PATH, "/api/access/datafile/101", "/api/access/datafile/102",
                              "/api/access/datafile/103?format=original"]
    assert summary.images == {"HAM10000_images_part_1": 3, "HAM10000_images_part_2": 2}
    assert sorted(p.name for p in (data / "HAM10000_images_part_2").iterdir()) == [
        "ISIC_0000004.jpg", "ISIC_0000005.jpg"]
    meta = pd.read_csv(data / "HAM10000_metadata.csv")  # the tab file became a comma CSV
    assert list(meta.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex",
                                  "localization"]
    assert meta["image_id"].tolist() == [f"ISIC_{i:07d}" for i in range(1, 6)]
    # The project's reader accepts the downloaded layout as is.
    table = read_ham10000(data)
    assert sorted(table["image_id"]) == [f"ISIC_{i:07d}" for i in range(1, 6)]
    assert {Path(p).parent.name for p in table["path"]} == {"HAM10000_images_part_1",
                                                            "HAM10000_images_part_2"}
    # Rerun: the file list is not even fetched.
    before = len(server.requests)
    download_dataset("ham10000", data, base_url=server.url, progress=False)
    assert len(server.requests) == before


def test_dataverse_md5_mismatch_is_refused(server: FakeServer, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "FILES", _tiny_table())
    payloads = _ham_server(server, md5_override="f" * 32)
    data = tmp_path / "ham"
    with pytest.raises(DownloadError) as err:
        download_dataset("ham10000", data, base_url=server.url, progress=False, retries=0)
    actual = hashlib.md5(payloads["/api/access/datafile/101"]).hexdigest()
    assert str(err.value).startswith(
        f"HAM10000_images_part_1.zip: MD5 mismatch, expected {'f' * 32} but got {actual}")
    assert not (data / "HAM10000_images_part_1.zip").exists()
    assert not (data / "HAM10000_images_part_1.zip.part").exists()


BLOB = bytes(range(256)) * 800  # 204,800 bytes
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


def test_dropped_connection_is_resumed_with_range_on_rerun(server: FakeServer,
                                                           tmp_path: Path) -> None:
    server.files["/blob.zip"] = BLOB
    server.drop_once["/blob.zip"] = len(BLOB) // 2
    dest = tmp_path / "blob.zip"
    with pytest.raises(DownloadError) as err:
        download_file(server.url + "blob.zip", dest, sha256=BLOB_SHA, retries=0, progress=False)
    assert "a rerun resumes it" in str(err.value)
    part = tmp_path / "blob.zip.part"
    assert part.read_bytes() == BLOB[: len(BLOB) // 2]
    download_file(server.url + "blob.zip", dest, sha256=BLOB_SHA, retries=0, progress=False)
    assert server.requests == [("/blob.zip", None), ("/blob.zip", f"bytes={len(BLOB) // 2}-")]
    assert dest.read_bytes() == BLOB
    assert not part.exists()


def test_dropped_connection_is_retried_within_one_call(server: FakeServer, tmp_path: Path) -> None:
    server.files["/blob.zip"] = BLOB
    server.drop_once["/blob.zip"] = 1000
    dest = tmp_path / "blob.zip"
    download_file(server.url + "blob.zip", dest, size=len(BLOB), sha256=BLOB_SHA, retries=2,
                  backoff=0, progress=False)
    assert server.requests == [("/blob.zip", None), ("/blob.zip", "bytes=1000-")]
    assert dest.read_bytes() == BLOB


def test_server_ignoring_range_restarts_cleanly(server: FakeServer, tmp_path: Path) -> None:
    server.files["/blob.zip"] = BLOB
    server.ignore_range.add("/blob.zip")
    dest = tmp_path / "blob.zip"
    # A stale part whose bytes are NOT the file's prefix: appending would corrupt the result.
    (tmp_path / "blob.zip.part").write_bytes(b"\xff" * 5000)
    download_file(server.url + "blob.zip", dest, sha256=BLOB_SHA, retries=0, progress=False)
    assert server.requests == [("/blob.zip", "bytes=5000-")]
    assert dest.read_bytes() == BLOB


def test_416_on_a_complete_part_file_finishes_it(server: FakeServer, tmp_path: Path) -> None:
    server.files["/blob.zip"] = BLOB
    (tmp_path / "blob.zip.part").write_bytes(BLOB)
    dest = download_file(server.url + "blob.zip", tmp_path / "blob.zip", sha256=BLOB_SHA,
                         retries=0, progress=False)
    assert server.requests == [("/blob.zip", f"bytes={len(BLOB)}-")]
    assert dest.read_bytes() == BLOB


def test_checksum_mismatch_deletes_the_file_and_names_both_hashes(server: FakeServer,
                                                                  tmp_path: Path) -> None:
    server.files["/blob.zip"] = BLOB
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        download_file(server.url + "blob.zip", tmp_path / "blob.zip", sha256=wrong, retries=0,
                      progress=False)
    assert str(err.value).startswith(
        f"blob.zip: SHA-256 mismatch, expected {wrong} but got {BLOB_SHA}; the bad file was deleted")
    assert list(tmp_path.iterdir()) == []


def test_table_checksum_is_enforced_by_download_dataset(isic_server: FakeServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    name = "ISIC2018_Task3_Training_LesionGroupings.csv"
    table = tuple(dataclasses.replace(r, sha256="a" * 64) if r.name == name else r
                  for r in sources.FILES)
    monkeypatch.setattr(sources, "FILES", table)
    with pytest.raises(DownloadError, match=f"{name}: SHA-256 mismatch, expected {'a' * 64}"):
        download_dataset("isic2018", tmp_path, base_url=isic_server.url, progress=False, retries=0)
    assert not (tmp_path / name).exists()
    assert not (tmp_path / (name + ".part")).exists()


def test_archive_with_parent_entry_is_refused_in_the_pipeline(isic_server: FakeServer,
                                                              tmp_path: Path) -> None:
    isic_server.files["/ISIC2018_Task3_Training_Input.zip"] = _zip(
        {"ISIC2018_Task3_Training_Input/ISIC_0000001.jpg": _jpeg(1), "../../evil.jpg": b"x"})
    data = tmp_path / "a" / "b"
    with pytest.raises(UnsafeArchiveError, match="'../../evil.jpg' contains a '..' component"):
        download_dataset("isic2018", data, base_url=isic_server.url, progress=False)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "a" / "evil.jpg").exists()
    assert not (data / "ISIC2018_Task3_Training_Input").exists()
    assert sorted(p.name for p in data.iterdir()) == [
        "ISIC2018_Task3_Training_Input.zip", "ISIC2018_Task3_Training_Input.zip.verified.json"]


def test_unreachable_host_names_the_url_and_the_manual_route(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ISIC2018_Task3_Test_Input.zip"
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "x.zip", retries=1, backoff=0, timeout=5, progress=False)
    message = str(err.value)
    assert f"could not download {url}" in message
    assert f"download the file manually from {url} into {tmp_path}" in message
    assert "after 2 attempt(s)" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_http_404_fails_at_once_without_retries(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"missing.zip answered HTTP 404"):
        download_file(server.url + "missing.zip", tmp_path / "missing.zip", retries=3,
                      progress=False)
    assert len(server.requests) == 1


def test_existing_verified_file_without_marker_is_checked_not_downloaded(tmp_path: Path) -> None:
    row = dataclasses.replace(files_for("isic2018")[0], sha256=BLOB_SHA, size=len(BLOB))
    path = tmp_path / row.name
    path.write_bytes(BLOB)
    # Placed by hand (no marker): hashed against the table; zip integrity then fails for a blob.
    assert not is_verified(path, row)
    csv_row = dataclasses.replace(row, kind="csv")
    assert is_verified(path, csv_row)
    assert (tmp_path / (row.name + ".verified.json")).is_file()


def test_cli_download_prints_licence_citation_and_next_step(
        isic_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(BASE_URL_ENV, isic_server.url)
    data = tmp_path / "isic"
    code = benchmark.main(["--download", "--dataset", "isic2018", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert code == 0
    assert "7 file(s) downloaded" in out
    assert "ISIC2018_Task3_Training_Input/: 4 images" in out
    assert "1,511" in out  # the note on the public test set's image count
    assert "CC BY-NC 4.0" in out and "CC BY-NC-SA 4.0" in out
    assert "doi:10.1038/sdata.2018.161" in out and "arXiv:1902.03368" in out
    # the wording every report closes with (core.facts)
    assert LICENCE in out and all(f"  - {c}" in out for c in citations("isic2018"))
    assert f"python benchmark.py --prepare --dataset isic2018 --data-dir {data}" in out
    assert len(isic_server.requests) == 7


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--download", "--dataset", "isic2018"], "--download needs --data-dir DIR"),
        (["--download", "--data-dir", "DIR"], "--download needs --dataset ham10000 or isic2018"),
        (["--download", "--dataset", "synthetic", "--data-dir", "DIR"],
         "synthetic dataset is generated, not downloaded"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(argv: list[str], expected: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "d") if a == "DIR" else a for a in argv]
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert not (tmp_path / "d").exists()


def test_cli_unknown_dataset_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        benchmark.main(["--download", "--dataset", "kaggle", "--data-dir", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'kaggle'" in err


def test_citations_per_dataset_and_for_reports() -> None:
    ham, = citations("ham10000")
    assert "doi:10.1038/sdata.2018.161" in ham
    assert citations("isic2018")[0] == ham and "arXiv:1902.03368" in citations("isic2018")[1]
    assert citations() == citations("isic2018")  # a report cites both releases, once each
