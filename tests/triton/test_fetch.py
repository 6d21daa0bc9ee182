"""The init container's fetcher (`triton/fetch.py`): s3:// against a real S3-compatible server.

AWS Signature Version 4 is checked twice: against the worked example in AWS's S3 API
reference ("Signature Calculations for the Authorization Header", GET Object), and by a
real server (S3Proxy, `e2e/s3_local.py`), which refuses any request it can't verify. The
example's artifacts are uploaded with signed PUTs, fetched back byte for byte, and every
user mistake — a wrong secret, an unknown key id, a missing object or bucket, half a key
pair — fails at once with the server's code and what to check.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import pathlib
import subprocess
import sys
import threading
import time
import typing
import urllib.request
from collections.abc import Iterator

import pytest
from e2e import s3_local

from geo_operator.triton import fetch

# AWS's example: GET /test.txt from examplebucket, Range bytes=0-9, 2013-05-24T00:00:00Z.
AWS_EXAMPLE_SIGNATURE = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_the_signature_is_aws_worked_example() -> None:
    headers = fetch.sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9"},
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        when=datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        f"Signature={AWS_EXAMPLE_SIGNATURE}"
    )
    assert headers["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()
    assert headers["Range"] == "bytes=0-9"


def test_urls_path_style_on_an_endpoint_virtual_hosted_on_aws() -> None:
    uri = "s3://models/digits/int8 v2/model.onnx"
    on_minio = {"AWS_ENDPOINT_URL": "http://s3.local:9000/"}
    assert fetch.s3_url(uri, on_minio) == "http://s3.local:9000/models/digits/int8%20v2/model.onnx"
    assert (
        fetch.s3_url("s3://models/a.onnx", {"AWS_REGION": "eu-west-1"})
        == "https://models.s3.eu-west-1.amazonaws.com/a.onnx"
    )
    with pytest.raises(ValueError, match="s3://BUCKET/KEY"):
        fetch.s3_url("s3://only-a-bucket", {})
    unsigned = fetch.s3_request("s3://public/a.onnx", {"AWS_ENDPOINT_URL": "http://x"})
    assert "Authorization" not in unsigned.headers
    with pytest.raises(ValueError, match="go together"):
        fetch.s3_request("s3://b/k", {"AWS_ACCESS_KEY_ID": "only-the-id"})
    token = fetch.s3_request(
        "s3://b/k", {**s3_local.S3Proxy(pathlib.Path()).env(), "AWS_SESSION_TOKEN": "tok"}
    )
    assert token.headers["X-amz-security-token"] == "tok"
    assert "x-amz-security-token" in token.headers["Authorization"]


def test_gs_is_refused_with_the_way_that_works() -> None:
    with pytest.raises(ValueError, match=r"storage\.googleapis\.com"):
        fetch.fetch("gs://bucket/model.onnx", "/tmp/never")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3_local.S3Proxy]:
    why = s3_local.missing()
    if why is not None:
        pytest.skip(why)
    with s3_local.S3Proxy(tmp_path_factory.mktemp("s3proxy")) as server:
        yield server


def _put(server: s3_local.S3Proxy, uri: str, body: bytes) -> int:
    request = fetch.s3_request(uri, server.env(), method="PUT", body=body)
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


@pytest.fixture(scope="module")
def uploaded(s3: s3_local.S3Proxy, artifacts: pathlib.Path) -> dict[str, pathlib.Path]:
    """The example's artifacts in bucket `models` under digits/, by signed PUTs."""
    # The bucket: a signed PUT on ENDPOINT/models (fetch.py itself only ever reads objects).
    url = f"{s3.endpoint}/models"
    headers = fetch.sign(
        "PUT",
        url,
        {},
        access_key=s3_local.IDENTITY,
        secret_key=s3_local.CREDENTIAL,
        region="us-east-1",
        when=datetime.datetime.now(datetime.UTC),
    )
    request = urllib.request.Request(url, data=b"", headers=headers, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    files = {p.relative_to(artifacts).as_posix(): p for p in artifacts.rglob("*.onnx")}
    assert files, artifacts
    for key, path in files.items():
        assert _put(s3, f"s3://models/digits/{key}", path.read_bytes()) == 200
    return files


def test_the_examples_artifacts_come_back_from_s3_byte_for_byte(
    s3: s3_local.S3Proxy,
    uploaded: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    for key, path in uploaded.items():
        dest = tmp_path / "models" / "digits" / "1" / key
        size = fetch.fetch(f"s3://models/digits/{key}", str(dest))
        assert size == path.stat().st_size
        assert (
            hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
        )
    print(
        f"\nfetched {len(uploaded)} artifacts from S3Proxy {s3_local.VERSION}: {sorted(uploaded)}"
    )


@pytest.mark.parametrize(
    ("uri", "env", "words"),
    [
        (
            "s3://models/digits/fp32/model.onnx",
            {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
            "HTTP 403 SignatureDoesNotMatch",
        ),
        (
            "s3://models/digits/fp32/model.onnx",
            {"AWS_ACCESS_KEY_ID": "nobody"},
            "HTTP 403 InvalidAccessKeyId",
        ),
        ("s3://models/digits/none/model.onnx", {}, "HTTP 404 NoSuchKey"),
        ("s3://no-such-bucket/model.onnx", {}, "HTTP 404 NoSuchBucket"),
    ],
)
def test_a_refusal_fails_at_once_with_the_servers_code_and_what_to_check(
    s3: s3_local.S3Proxy,
    uploaded: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    uri: str,
    env: dict[str, str],
    words: str,
) -> None:
    """Through `python3 fetch.py URI DEST`, as the init container runs it: exit 1, one line
    on stderr (what the pod's termination message carries), no retries, no file left."""
    dest = tmp_path / "model.onnx"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, fetch.__file__, uri, str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **s3.env(**env)},
    )
    took = time.monotonic() - began
    print(f"\n{words}: exit {done.returncode} in {took:.1f}s: {done.stderr.strip()}")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"fetch {uri} failed: {uri}: {words}"), line
    hint = fetch.HINTS[words.split()[-1]]
    assert line.endswith(f"({hint})")
    assert "retrying" not in done.stderr and took < 10
    assert not dest.exists() and list(tmp_path.iterdir()) == []


# ---- what the fetcher refuses (issue 14): a wrong digest, too large, out of the claim,
# a redirect to another scheme


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, fetch.__file__, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_a_declared_sha256_is_verified_before_the_file_is_in_place(
    artifacts: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    source = artifacts / "int8" / "model.onnx"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "repo" / "model.onnx"
    done = _cli(f"file://{source}", str(dest), "--sha256", digest)
    assert done.returncode == 0 and dest.read_bytes() == source.read_bytes(), done.stderr
    wrong = "0" * 64
    other = tmp_path / "other" / "model.onnx"
    done = _cli(f"file://{source}", str(other), "--sha256", wrong)
    assert done.returncode == 1
    assert f"sha256 {digest} is not the artifact's declared sha256 {wrong}" in done.stderr
    assert not other.exists() and list(other.parent.iterdir()) == []  # nothing half-written
    assert _cli(f"file://{source}", str(other), "--sha256").returncode == 2  # usage


def test_a_file_over_the_limit_is_refused(artifacts: pathlib.Path, tmp_path: pathlib.Path) -> None:
    source = artifacts / "int8" / "model.onnx"
    done = _cli(f"file://{source}", str(tmp_path / "m.onnx"), "--max-bytes", "1000")
    assert done.returncode == 1
    assert "larger than the limit of 1000 bytes: refused" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_pvc_path_never_leaves_the_claim() -> None:
    assert fetch.local_path("pvc://store/digits/m.onnx", "/src") == "/src/digits/m.onnx"
    with pytest.raises(ValueError, match="leaves the claim"):
        fetch.local_path("pvc://store/../../etc/shadow", "/src")
    with pytest.raises(ValueError, match="leaves the claim"):
        fetch.local_path("pvc://store/digits/%2e%2e/%2e%2e/%2e%2e/etc/shadow", "/src")


class _Redirects(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/model.onnx":
            body = b"\x08\x07onnx"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        target = {"/same": "/model.onnx", "/to-https": "https://127.0.0.1:9/model.onnx"}
        self.send_response(302)
        self.send_header("Location", target.get(self.path, "/missing"))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirects)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_redirects_stay_within_the_scheme(web: str, tmp_path: pathlib.Path) -> None:
    assert fetch.fetch(f"{web}/same", str(tmp_path / "a.onnx")) == 6
    with pytest.raises(fetch.Refused, match="HTTP 302 redirect to https://"):
        fetch.fetch(f"{web}/to-https", str(tmp_path / "b.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]


class _Cuts(http.server.BaseHTTPRequestHandler):
    """Declares 100,000 bytes. /cut sends 1,000 and drops the connection; /flaky does that
    once, then sends the whole body; /huge declares more than the caller's limit."""

    protocol_version = "HTTP/1.1"
    body = bytes(range(256)) * 390 + b"x" * 160  # 100,000 bytes
    attempts: typing.ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        seen = self.attempts[self.path] = self.attempts.get(self.path, 0) + 1
        whole = self.path == "/flaky" and seen > 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if self.path == "/huge":
            self.wfile.write(self.body[:10])
        elif self.path == "/trickle":  # a byte every 50 ms: no read ever times out
            for i in range(200):
                try:
                    self.wfile.write(self.body[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
        else:
            self.wfile.write(self.body if whole else self.body[:1000])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cutting() -> Iterator[str]:
    _Cuts.attempts = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Cuts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_connection_dropped_mid_body_never_leaves_a_short_file(
    cutting: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 of 100,000 declared bytes, every attempt: refused with both figures, and
    nothing is in place (before the fix a 1,000-byte model.onnx was)."""
    monkeypatch.setattr(fetch, "ATTEMPTS", 2)
    dest = tmp_path / "model.onnx"
    with pytest.raises(fetch.Truncated, match="received 1000 of the 100000 bytes"):
        fetch.fetch(f"{cutting}/cut", str(dest))
    assert _Cuts.attempts["/cut"] == 2  # a dropped connection is retried
    assert list(tmp_path.iterdir()) == []


def test_a_dropped_connection_is_retried_and_the_whole_body_put_in_place(
    cutting: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "ATTEMPTS", 2)
    dest = tmp_path / "model.onnx"
    assert fetch.fetch(f"{cutting}/flaky", str(dest)) == 100_000
    assert dest.read_bytes() == _Cuts.body


def test_a_declared_size_over_the_limit_is_refused_before_downloading(
    cutting: str, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(fetch.Refused, match=r"declares 100000 bytes .* refused before downloading"):
        fetch.fetch(f"{cutting}/huge", str(tmp_path / "model.onnx"), max_bytes=50_000)
    assert _Cuts.attempts["/huge"] == 1  # a refusal is not retried
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_a_declared_size_over_its_limit_in_words(
    cutting: str, tmp_path: pathlib.Path
) -> None:
    """The init container's view: exit 1, the figures on stderr, no traceback, no file."""
    done = _cli(f"{cutting}/huge", str(tmp_path / "model.onnx"), "--max-bytes", "50000")
    assert done.returncode == 1
    assert "declares 100000 bytes (Content-Length), over the limit of 50000" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "model.onnx").exists()


def test_a_file_that_trickles_in_is_abandoned_at_its_deadline(
    cutting: str, tmp_path: pathlib.Path
) -> None:
    """Each read gets a byte well within the 30 s read timeout, so only the whole fetch's
    deadline ends it (the operator's held-out fetch has one; before, it waited on)."""
    t0 = time.monotonic()
    with pytest.raises(fetch.Overdue, match="not fetched within its deadline"):
        fetch.fetch(f"{cutting}/trickle", str(tmp_path / "heldout.npz"), deadline=1.0)
    assert time.monotonic() - t0 < 5
    assert _Cuts.attempts["/trickle"] == 1
    assert list(tmp_path.iterdir()) == []
