"""Fetch a model artifact by URI into the Triton model repository.

This file is self-contained (stdlib only) on purpose: the builders copy its
text into the GeoDeployment's ConfigMap and the Triton pod's init container
runs it with the image's `python3`. The e2e runner imports `fetch()` directly.

    python3 fetch.py URI DEST

Schemes: http(s)://, file:///path, pvc://CLAIM/path (the claim is mounted
read-only at /artifact-source by the Deployment builder). s3:// and gs:// need
cloud credentials and a client this image doesn't carry: refused with a clear
message rather than half-supported.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request

PVC_MOUNT = "/artifact-source"
ATTEMPTS = 5


def local_path(uri: str, pvc_mount: str = PVC_MOUNT) -> str | None:
    """The local path a file:// or pvc:// URI names, or None for remote URIs."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return urllib.parse.unquote(parsed.path)
    if parsed.scheme == "pvc":
        # pvc://CLAIM/path/in/claim -> <mount>/path/in/claim
        return os.path.join(pvc_mount, urllib.parse.unquote(parsed.path).lstrip("/"))
    return None


def fetch(uri: str, dest: str, *, pvc_mount: str = PVC_MOUNT, timeout: float = 60.0) -> int:
    """Copy the artifact at `uri` to `dest`; returns its size in bytes.

    Writes to a temporary file in the destination folder and renames it, so a
    half-downloaded file is never served. Remote fetches are retried with
    back-off.
    """
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("s3", "gs"):
        raise ValueError(
            f"{scheme}:// artifacts are not supported by the init container yet; "
            "serve the file over https:// or from a PVC (pvc://CLAIM/path)"
        )
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dest)), prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as out:
            path = local_path(uri, pvc_mount)
            if path is not None:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out)
            elif scheme in ("http", "https"):
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        with urllib.request.urlopen(uri, timeout=timeout) as response:
                            out.seek(0)
                            out.truncate()
                            shutil.copyfileobj(response, out)
                        break
                    except OSError as error:
                        if attempt == ATTEMPTS:
                            raise
                        delay = 2.0**attempt
                        print(f"fetch {uri}: {error}; retrying in {delay:g}s", file=sys.stderr)
                        time.sleep(delay)
            else:
                raise ValueError(f"unsupported URI scheme {scheme!r} in {uri}")
        size = os.path.getsize(tmp)
        if size == 0:
            raise ValueError(f"{uri} is empty")
        os.replace(tmp, dest)
        return size
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: fetch.py URI DEST", file=sys.stderr)
        return 2
    try:
        size = fetch(argv[1], argv[2])
    except (OSError, ValueError) as error:
        print(f"fetch {argv[1]} failed: {error}", file=sys.stderr)
        return 1
    print(f"fetched {argv[1]} -> {argv[2]} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
