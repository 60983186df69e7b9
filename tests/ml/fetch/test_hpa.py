"""`ml.fetch.hpa` against a local HTTP server that also answers with server errors and damaged files."""

import gzip
import io
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tifffile

from ml.cli import main
from ml.constants import CHANNELS
from ml.fetch.hpa import PublicField, fetch_fields, parse_labels, read_public_table, select_fields
from ml.io import InputError, find_fields, read_field
from ml.training.data import read_image_labels


def tif_gz(seed: int) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.random.default_rng(seed).integers(0, 65535, (24, 24), dtype=np.uint16))
    return gzip.compress(buffer.getvalue())


class Server:
    """Files by path; `fail_first[path]` 500s before serving it; `corrupt` paths are always damaged."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail_first: Counter = Counter()
        self.corrupt: set[str] = set()
        self.requests: Counter = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                server.requests[self.path] += 1
                if server.fail_first[self.path] > 0:
                    server.fail_first[self.path] -= 1
                    self.send_error(500, "Internal Server Error")
                    return
                if self.path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body = server.files[self.path]
                if self.path in server.corrupt:
                    body = body[: len(body) // 2]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add_field(self, antibody: str, name: str, seed: int) -> str:
        for index, channel in enumerate(CHANNELS):
            self.files[f"/{antibody}/{name}_{channel}.tif.gz"] = tif_gz(seed * 10 + index)
        return f"{self.base}/{antibody}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = Server()
    yield running
    running.close()


def write_table(path, rows) -> None:
    path.write_text(
        "Image,Label,Cellline,in_trainset\n" + "".join(f"{u},{label},{line},False\n" for u, label, line in rows)
    )


def test_fetch_downloads_every_channel_checks_it_and_writes_the_kaggle_layout(tmp_path, server):
    a = server.add_field("10005", "921_B9_1", 1)
    b = server.add_field("10005", "921_B9_2", 2)
    write_table(tmp_path / "table.csv", [(a, "Nucleoplasm|Cytosol", "A-431"), (b, "11", "U2OS")])
    report = fetch_fields(read_public_table(tmp_path / "table.csv"), tmp_path / "out", jobs=4, backoff_s=0.01)
    assert (report.complete, report.fetched, report.already_there, dict(report.failures)) == (2, 8, 0, {})
    assert read_image_labels(tmp_path / "out" / "train.csv") == {"10005_921_B9_1": (0, 16), "10005_921_B9_2": (11,)}
    assert (tmp_path / "out" / "train.csv").read_text().splitlines()[1] == f"10005_921_B9_1,0|16,A-431,{a}"
    fields = find_fields(tmp_path / "out", public_formats=True)
    field = read_field(fields["10005_921_B9_1"])
    assert field.bit_depth == 16 and field.shape == (24, 24)
    again = fetch_fields(read_public_table(tmp_path / "table.csv"), tmp_path / "out", jobs=4)
    assert (again.fetched, again.already_there, again.complete) == (0, 8, 2)  # resumed: nothing fetched twice


def test_server_errors_are_retried_and_damaged_or_missing_files_are_counted_with_a_sentence(tmp_path, server):
    good = server.add_field("1", "1_A1_1", 1)
    flaky = server.add_field("1", "1_A1_2", 2)
    damaged = server.add_field("1", "1_A1_3", 3)
    broken = server.add_field("1", "1_A1_4", 4)
    server.fail_first["/1/1_A1_2_green.tif.gz"] = 2  # recovers on the third attempt
    server.fail_first["/1/1_A1_4_red.tif.gz"] = 99  # never recovers
    server.corrupt.add("/1/1_A1_3_blue.tif.gz")
    del server.files["/1/1_A1_3_yellow.tif.gz"]
    fields = [PublicField(url.rsplit("/", 1)[1], url, (0,)) for url in (good, flaky, damaged, broken)]
    report = fetch_fields(fields, tmp_path / "out", jobs=3, attempts=3, backoff_s=0.01)
    assert (report.complete, report.fetched) == (2, 13)
    assert dict(report.failures) == {"server": 1, "corrupt": 1, "missing": 1}
    assert server.requests["/1/1_A1_2_green.tif.gz"] == 3 and server.requests["/1/1_A1_4_red.tif.gz"] == 3
    assert server.requests["/1/1_A1_3_blue.tif.gz"] == 3 and server.requests["/1/1_A1_3_yellow.tif.gz"] == 1
    assert read_image_labels(tmp_path / "out" / "train.csv") == {"1_A1_1": (0,), "1_A1_2": (0,)}
    assert not list((tmp_path / "out").glob(".*"))  # no partial downloads left
    lines = report.sentences()
    assert lines[0] == "2 of 4 field(s) complete; 13 file(s) downloaded, 0 already there."
    assert lines[1].startswith("1 file(s) were damaged (they did not decode as images) on every attempt; for example ")
    assert "1_A1_3_blue.tif.gz" in lines[1] and "truncated gzip file" in lines[1]
    assert lines[2] == (
        f"1 file(s) do not exist on the server (404 or 403; not retried); for example {damaged}_yellow.tif.gz "
        "answered 404 Not Found."
    )
    assert lines[3] == (
        f"1 file(s) failed with a server error on every attempt; for example {broken}_red.tif.gz answered 500 "
        "Internal Server Error."
    )
    assert lines[4] == "Run the same command again to retry them; complete files are kept."


def test_read_public_table_takes_names_or_indices_and_refuses_unknown_classes(tmp_path):
    assert parse_labels("Nucleoplasm,Mitotic spindle", where="x") == (0, 11)
    assert parse_labels("16|0", where="x") == (0, 16)
    write_table(tmp_path / "t.csv", [("images.proteinatlas.org/5/1_A1_1", "Cytoplasm", "")])
    with pytest.raises(InputError, match=r"^t.csv line 2: 'Cytoplasm' is neither a class index \(0\.\.18\) nor one"):
        read_public_table(tmp_path / "t.csv")
    write_table(tmp_path / "t.csv", [("images.proteinatlas.org/5/1_A1_1", "Cytosol", "HeLa")])
    (field,) = read_public_table(tmp_path / "t.csv")
    assert field == PublicField("5_1_A1_1", "https://images.proteinatlas.org/5/1_A1_1", (16,), "HeLa")
    (tmp_path / "bad.csv").write_text("ID,Target\n")
    with pytest.raises(InputError, match=r"^bad.csv must have an image URL column \(Image or "):
        read_public_table(tmp_path / "bad.csv")


def test_select_fields_filters_classes_and_fills_rare_classes_first():
    fields = [PublicField(f"c{i}", "u", (0,)) for i in range(5)] + [
        PublicField(f"r{i}", "u", (0, 11)) for i in range(3)
    ]
    assert [f.image_id for f in select_fields(fields, classes=[11])] == ["r0", "r1", "r2"]
    chosen = [f.image_id for f in select_fields(fields, per_class=2)]
    assert chosen == ["r0", "r1"]  # the rare class's two fields already give Nucleoplasm its two


def test_fetch_hpa_command_downloads_and_exits_1_with_sentences_when_files_fail(tmp_path, server, capsys):
    good = server.add_field("7", "2_B2_1", 5)
    bad = server.add_field("7", "2_B2_2", 6)
    server.fail_first["/7/2_B2_2_red.tif.gz"] = 99
    write_table(tmp_path / "table.csv", [(good, "0", ""), (bad, "2", "")])
    argv = ["fetch-hpa", "--labels", str(tmp_path / "table.csv"), "--out", str(tmp_path / "out"), "--jobs", "2",
            "--attempts", "2", "--backoff", "0.01"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 2 field(s) complete; 7 file(s) downloaded, 0 already there." in err
    assert "1 file(s) failed with a server error on every attempt; for example" in err
    assert main([*argv, "--classes", "Nucleoplasm"]) == 0  # only the complete field's class: nothing fails
    assert read_image_labels(tmp_path / "out" / "train.csv") == {"7_2_B2_1": (0,)}
