"""Fetch a model artifact by URI into the Triton model repository.

This file is self-contained (stdlib only) on purpose: the builders copy its
text into the GeoDeployment's ConfigMap and the Triton pod's init container
runs it with the image's `python3`. The e2e runner imports `fetch()` directly.

    python3 fetch.py URI DEST

Schemes: http(s)://, file:///path, pvc://CLAIM/path (the claim is mounted
read-only at /artifact-source by the Deployment builder), and s3://BUCKET/KEY:
AWS S3 or any S3-compatible server, a GET signed with AWS Signature Version 4
(`sign`, below) from the environment the pod gets from `spec.model.s3`:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN`` from the
Secret it names, ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (path-style
``ENDPOINT/BUCKET/KEY``; without one, AWS's virtual-hosted
``https://BUCKET.s3.REGION.amazonaws.com/KEY``). Without keys the GET is unsigned
(a public bucket). gs:// is refused with a clear message: Google Cloud Storage's
XML API takes the same signed GET with HMAC keys, through `s3://` and
``AWS_ENDPOINT_URL=https://storage.googleapis.com``.

A refusal (HTTP 4xx: a wrong key, a missing object) fails at once with the
server's own code and message; network errors and 5xx are retried with back-off.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any


class Refused(ValueError):
    """A refusal retrying would not change: a 4xx, a redirect to another scheme, a digest or size
    that is not the one allowed."""


class Overdue(TimeoutError):
    """The whole fetch took longer than its ``deadline``: abandoned, not retried."""


class Truncated(OSError):
    """A body shorter or longer than its declared Content-Length: the connection dropped (or
    the server lied); retried like any network error, and never put in place."""


PVC_MOUNT = "/artifact-source"
ATTEMPTS = 5
# The largest file fetched (fetch.py --max-bytes): a runaway or wrong URI fails, not the node.
MAX_BYTES = 64 * 2**30
CHUNK = 1 << 20


class _SameScheme(urllib.request.HTTPRedirectHandler):
    """Redirects within the scheme only: an https:// artifact never arrives over http://."""

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ):
        old, new = urllib.parse.urlsplit(req.full_url).scheme, urllib.parse.urlsplit(newurl).scheme
        if new != old:
            raise Refused(f"{req.full_url}: HTTP {code} redirect to {new}:// ({newurl}): refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameScheme)


def local_path(uri: str, pvc_mount: str = PVC_MOUNT) -> str | None:
    """The local path a file:// or pvc:// URI names, or None for remote URIs."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return urllib.parse.unquote(parsed.path)
    if parsed.scheme == "pvc":
        # pvc://CLAIM/path/in/claim -> <mount>/path/in/claim, never outside the mount
        inside = os.path.normpath(
            os.path.join(pvc_mount, urllib.parse.unquote(parsed.path).lstrip("/"))
        )
        if os.path.commonpath([inside, os.path.normpath(pvc_mount)]) != os.path.normpath(pvc_mount):
            raise ValueError(f"{uri}: the path leaves the claim (.. segments): refused")
        return inside
    return None


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# What a refusal means for the user, by S3's error code.
HINTS = {
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID in the Secret spec.model.s3.secretName names",
    "SignatureDoesNotMatch": (
        "check AWS_SECRET_ACCESS_KEY in the Secret spec.model.s3.secretName names"
    ),
    "AccessDenied": "the key may not read this object: check the bucket's policy",
    "NoSuchKey": "no object at this key: check the artifact's uri",
    "NoSuchBucket": "no such bucket: check the artifact's uri and spec.model.s3.endpoint",
}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(path: str) -> str:
    """S3's canonical URI: every byte but unreserved characters and '/' percent-encoded."""
    return urllib.parse.quote(path, safe="/-_.~")


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    access_key: str,
    secret_key: str,
    region: str,
    when: datetime.datetime,
    payload_sha256: str = EMPTY_SHA256,
    service: str = "s3",
) -> dict[str, str]:
    """The request's headers with AWS Signature Version 4 added (x-amz-date,
    x-amz-content-sha256, Authorization): every header given is signed, with Host."""
    parsed = urllib.parse.urlsplit(url)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed.setdefault("host", parsed.netloc)
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_sha256
    names = sorted(signed)
    query = "&".join(
        f"{_quote_all(k)}={_quote_all(v)}"
        for k, v in sorted(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    )
    canonical = "\n".join(
        [
            method,
            _quote(urllib.parse.unquote(parsed.path) or "/"),
            query,
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in headers.items() if k.lower() != "host"}
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_sha256
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


def _quote_all(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def s3_url(uri: str, env: Mapping[str, str]) -> str:
    """The HTTP(S) URL of s3://BUCKET/KEY: path-style on AWS_ENDPOINT_URL, else AWS's own."""
    parsed = urllib.parse.urlsplit(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise ValueError(f"{uri}: an s3 URI is s3://BUCKET/KEY")
    endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").rstrip("/")
    if endpoint:
        return f"{endpoint}/{bucket}/{_quote(key)}"
    region = _region(env)
    return f"https://{bucket}.s3.{region}.amazonaws.com/{_quote(key)}"


def _region(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_request(
    uri: str,
    env: Mapping[str, str] = os.environ,
    *,
    method: str = "GET",
    body: bytes | None = None,
    when: datetime.datetime | None = None,
) -> urllib.request.Request:
    """The request for an s3:// URI, signed when the environment carries keys."""
    url = s3_url(uri, env)
    headers: dict[str, str] = {}
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        token = env.get("AWS_SESSION_TOKEN")
        if token:
            headers["x-amz-security-token"] = token
        headers = sign(
            method,
            url,
            headers,
            access_key=access,
            secret_key=secret,
            region=_region(env),
            # timezone.utc, not datetime.UTC: the Triton image's python3 may be 3.10.
            when=when or datetime.datetime.now(datetime.timezone.utc),  # noqa: UP017
            payload_sha256=hashlib.sha256(body).hexdigest() if body is not None else EMPTY_SHA256,
        )
    elif access or secret:
        raise ValueError(
            f"{uri}: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together; the Secret "
            "spec.model.s3.secretName names has only one of them"
        )
    return urllib.request.Request(url, data=body, headers=headers, method=method)


def refusal(uri: str, error: urllib.error.HTTPError) -> Refused:
    """A 4xx in the user's words: the server's code and message, and what to check."""
    try:
        text = error.read(4096).decode("utf-8", "replace")
    except OSError:
        text = ""
    code = message = ""
    try:
        root = ET.fromstring(text)
        code = (root.findtext("Code") or "").strip()
        message = (root.findtext("Message") or "").strip()
    except ET.ParseError:
        message = " ".join(text.split())[:200]
    words = f"{uri}: HTTP {error.code} {code or error.reason}"
    if message:
        words += f": {message}"
    hint = HINTS.get(code)
    return Refused(f"{words} ({hint})" if hint else words)


def declared_length(response: Any) -> int | None:
    """The response's Content-Length, if it declares a plain one (none when chunked)."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("Content-Length")
    if value is None or headers.get("Transfer-Encoding"):
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _copy(
    src: Any,
    out: Any,
    uri: str,
    max_bytes: int,
    declared: int | None = None,
    end: float | None = None,
) -> hashlib._Hash:
    """Copy ``src`` to ``out`` in chunks, at most ``max_bytes``; the content's sha256. With
    ``declared`` (the Content-Length), a size over the limit is refused before a byte is read
    and a body of any other length raises `Truncated`: http.client's chunked reads end
    quietly when the connection drops early."""
    if declared is not None and declared > max_bytes:
        raise Refused(
            f"{uri}: declares {declared} bytes (Content-Length), over the limit of "
            f"{max_bytes} bytes: refused before downloading"
        )
    digest, total = hashlib.sha256(), 0
    read = getattr(src, "read1", src.read)  # what has arrived: a trickle still meets `end`
    while chunk := read(CHUNK):
        if end is not None and time.monotonic() > end:
            raise Overdue(f"{uri}: not fetched within its deadline ({total} bytes so far)")
        total += len(chunk)
        if total > max_bytes:
            raise Refused(f"{uri}: larger than the limit of {max_bytes} bytes: refused")
        digest.update(chunk)
        out.write(chunk)
    if declared is not None and total != declared:
        raise Truncated(
            f"{uri}: received {total} of the {declared} bytes its Content-Length declares "
            "(the connection dropped or the server sent another length): not put in place"
        )
    return digest


def fetch(
    uri: str,
    dest: str,
    *,
    pvc_mount: str = PVC_MOUNT,
    timeout: float = 60.0,
    sha256: str | None = None,
    max_bytes: int = MAX_BYTES,
    deadline: float | None = None,
) -> int:
    """Copy the artifact at `uri` to `dest`; returns its size in bytes.

    Writes to a temporary file in the destination folder and renames it, so a
    half-downloaded file is never served (a body shorter or longer than its
    Content-Length is retried, then refused), nor one whose content is not ``sha256``
    (hex) when given, nor one over ``max_bytes`` (refused before downloading when the
    server declares its size). Remote fetches are retried with
    back-off; ``timeout`` bounds each connect and read, ``deadline`` (seconds) the
    whole fetch, retries included (a file that trickles in is `Overdue`).
    """
    end = None if deadline is None else time.monotonic() + deadline
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme == "gs":
        raise ValueError(
            "gs:// is not supported: use s3://BUCKET/KEY with spec.model.s3.endpoint "
            "https://storage.googleapis.com and HMAC keys (Cloud Storage's XML API), "
            "https://, or a PVC (pvc://CLAIM/path)"
        )
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dest)), prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as out:
            path = local_path(uri, pvc_mount)
            digest = None
            if path is not None:
                with open(path, "rb") as src:
                    digest = _copy(src, out, uri, max_bytes)
            elif scheme in ("http", "https", "s3"):
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        # Signed anew each attempt: a signature is valid for 15 minutes.
                        request = s3_request(uri) if scheme == "s3" else uri
                        with _OPENER.open(request, timeout=timeout) as response:
                            out.seek(0)
                            out.truncate()
                            length = declared_length(response)
                            digest = _copy(response, out, uri, max_bytes, length, end)
                        break
                    except OSError as error:  # HTTPError too: 5xx, 408 and 429 are retried
                        if isinstance(error, urllib.error.HTTPError) and (
                            400 <= error.code < 500 and error.code not in (408, 429)
                        ):
                            raise refusal(uri, error) from None
                        delay = 2.0**attempt
                        if attempt == ATTEMPTS or isinstance(error, Overdue):
                            raise
                        if end is not None and time.monotonic() + delay > end:
                            raise Overdue(
                                f"{uri}: not fetched within its deadline ({error})"
                            ) from error
                        print(f"fetch {uri}: {error}; retrying in {delay:g}s", file=sys.stderr)
                        time.sleep(delay)
            else:
                raise ValueError(f"unsupported URI scheme {scheme!r} in {uri}")
        size = os.path.getsize(tmp)
        if size == 0:
            raise ValueError(f"{uri} is empty")
        if sha256 is not None and digest is not None and digest.hexdigest() != sha256.lower():
            raise Refused(
                f"{uri}: sha256 {digest.hexdigest()} is not the artifact's declared sha256 "
                f"{sha256.lower()}: refused, nothing served (a changed or corrupted file, or a "
                "wrong sha256 in the spec)"
            )
        os.replace(tmp, dest)
        return size
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


TERMINATION_LOG = "/dev/termination-log"


def _termination_message(words: str, path: str = TERMINATION_LOG) -> None:
    """The kubelet's terminationMessagePath (the default): the pod's status carries the words
    (status.initContainerStatuses[].state.terminated.message), where GEO reads them."""
    if not os.path.exists(path):
        return  # not in a pod (a test, a shell)
    try:
        with open(path, "a", encoding="utf-8") as log:
            log.write(words[:4000] + "\n")
    except OSError:
        pass


USAGE = "usage: fetch.py URI DEST [--sha256 HEX] [--max-bytes N]"


def main(argv: list[str]) -> int:
    args, options = argv[1:3], dict(zip(argv[3::2], argv[4::2], strict=False))
    if len(args) != 2 or len(argv) % 2 == 0 or set(options) - {"--sha256", "--max-bytes"}:
        print(USAGE, file=sys.stderr)
        return 2
    digest = options.get("--sha256") or None  # "" : none declared
    try:
        limit = int(options.get("--max-bytes", MAX_BYTES))
        size = fetch(args[0], args[1], sha256=digest, max_bytes=limit)
    except (OSError, ValueError) as error:
        words = f"fetch {argv[1]} failed: {error}"
        print(words, file=sys.stderr)
        _termination_message(words)
        return 1
    print(f"fetched {argv[1]} -> {argv[2]} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
