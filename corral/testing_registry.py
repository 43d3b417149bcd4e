"""A real image registry for tests: Debian's ``docker-registry`` (the
reference distribution server) on a free loopback port, and ``skopeo`` (an
independent client) to push images to it.

Nothing here is ours on the registry side: what the agent's puller reads was
written by skopeo and served by the reference server.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corral.testing_images import image_config
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


def write_oci_dir(path: Path, platforms: Sequence[tuple[str, list[bytes], Mapping[str, Any] | None]]) -> Path:
    """An OCI image layout directory whose index lists one manifest per
    ``(architecture, layers, config)``, all linux, layers gzip-compressed
    (``skopeo copy --all oci:PATH:multi`` pushes it as a multi-platform index)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> dict[str, Any]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return {"digest": f"sha256:{hexd}", "size": len(data)}

    entries = []
    for arch, layers, config in platforms:
        descs = [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gzip.compress(layer, mtime=0))}
            for layer in layers
        ]
        cfg = json.loads(image_config(layers, config))
        cfg["architecture"] = arch
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **put(json.dumps(cfg, sort_keys=True).encode()),
            },
            "layers": descs,
        }
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **put(json.dumps(manifest).encode()),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    # The layout's index.json names one image, the multi-platform index
    # (what skopeo copies with --all from oci:PATH:multi).
    nested = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }
    top = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        **put(json.dumps(nested).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path
