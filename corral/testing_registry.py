"""A real image registry for tests: Debian's ``docker-registry`` (the
reference distribution server) on a free loopback port, and ``skopeo`` (an
independent client) to push images to it.

Nothing here is ours on the registry side: what the agent's puller reads was
written by skopeo and served by the reference server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from corral.testing_zookeeper import free_port

REGISTRY = "/usr/bin/docker-registry"


def available() -> str | None:
    """None if a registry can be run and pushed to here, else why not."""
    if not Path(REGISTRY).exists():
        return "docker-registry is not installed (apt-get install docker-registry)"
    if shutil.which("skopeo") is None:
        return "skopeo is not installed (apt-get install skopeo)"
    return None


class RegistryServer:
    """``docker-registry serve`` on 127.0.0.1:<free port>, storage under ``root``;
    with ``htpasswd`` (a file of ``user:bcrypt``) it asks for basic authentication."""

    def __init__(self, root: Path, htpasswd: Path | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.htpasswd = htpasswd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host},
        }
        if self.htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "corral-test", "path": str(self.htpasswd)}}
        path = self.root / "config.json"  # YAML is a superset of JSON
        path.write_text(json.dumps(config))
        log = (self.root / "registry.log").open("wb")
        self._proc = subprocess.Popen([REGISTRY, "serve", str(path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_tail()}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # 401: up, asking for credentials
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer within {timeout_s:g} s: {self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def log_tail(self) -> str:
        try:
            return (self.root / "registry.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def push(self, source: str, ref: str, creds: str | None = None, all_platforms: bool = False) -> None:
        """``skopeo copy SOURCE docker://HOST/REF`` (``oci-archive:PATH``, ``oci:DIR``)."""
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if creds:
            cmd += ["--dest-creds", creds]
        if all_platforms:
            cmd.append("--all")
        # skopeo checks the source image's platform against the host's unless told not to.
        cmd += ["--override-os", "linux", "--override-arch", "amd64"] if not all_platforms else []
        cmd += [source, f"docker://{self.host}/{ref}"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob (a test corrupts it there)."""
        hexd = digest.removeprefix("sha256:")
        return self.root / "data" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
