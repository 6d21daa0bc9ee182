"""Run a real S3-compatible server on 127.0.0.1 for tests: S3Proxy (Apache-2.0, Java).

S3Proxy (https://github.com/gaul/s3proxy) implements the S3 REST API over Apache jclouds'
filesystem store, and checks every request's AWS Signature (V2 or V4) against the one
identity it is given: a wrong key is refused as AWS refuses it (InvalidAccessKeyId,
SignatureDoesNotMatch), a missing object or bucket is NoSuchKey / NoSuchBucket. Its
self-contained jar comes from Maven Central (`mvn dependency:copy`, about 38 MB, once) into
~/.cache/geo-e2e/s3proxy; it runs on this machine's JDK (17).

Used by tests/triton/test_fetch.py (the fetcher against it). Uploads go through
`geo_operator.triton.fetch.s3_request` (a signed PUT), so the signing is checked by the
server's own implementation, not ours.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

VERSION = "2.4.1"
CACHE = pathlib.Path.home() / ".cache" / "geo-e2e" / "s3proxy"
JAR = CACHE / f"s3proxy-{VERSION}-jar-with-dependencies.jar"
IDENTITY = "geo-test-access-key"
CREDENTIAL = "geo-test-secret-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing() -> str | None:
    """Why S3Proxy can't run here (no JDK, no Maven to fetch it), or None."""
    if shutil.which("java") is None:
        return "no java on PATH (S3Proxy runs on a JDK)"
    if not JAR.exists() and shutil.which("mvn") is None:
        return f"no mvn to fetch {JAR.name} from Maven Central"
    return None


def jar() -> pathlib.Path:
    """The S3Proxy jar, fetched from Maven Central on first use."""
    if JAR.exists():
        return JAR
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact=org.gaul:s3proxy:{VERSION}:jar:jar-with-dependencies",
            f"-DoutputDirectory={CACHE}",
        ],
        check=True,
        cwd=CACHE,
        timeout=600,
    )
    return JAR


class S3Proxy:
    """One S3Proxy process on a free port; `stop()` leaves nothing running."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **override: str) -> dict[str, str]:
        """What the init container's environment holds for spec.model.s3 with this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": IDENTITY,
            "AWS_SECRET_ACCESS_KEY": CREDENTIAL,
            **override,
        }

    def start(self, timeout: float = 60) -> S3Proxy:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3proxy.conf"
        config.write_text(
            "\n".join(
                [
                    f"s3proxy.endpoint={self.endpoint}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={IDENTITY}",
                    f"s3proxy.credential={CREDENTIAL}",
                    "jclouds.provider=filesystem",
                    f"jclouds.filesystem.basedir={data}",
                    "",
                ]
            )
        )
        log = (self.workdir / "s3proxy.log").open("wb")
        self.process = subprocess.Popen(
            ["java", "-Xmx256m", "-jar", str(jar()), "--properties", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"s3proxy exited: {self.log()[-2000:]}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
                return self
            except urllib.error.HTTPError:
                return self  # answering (403 to an anonymous list): up
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"s3proxy not up in {timeout:g}s: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.workdir / "s3proxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
