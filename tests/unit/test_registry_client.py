"""Registry references, the registry config file, and the client's protocol
where a real registry cannot be made to misbehave on cue (token service,
429, a manifest that is not what its digest says): httpx's MockTransport."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from corral.image_refs import ImageRefError, RemoteRef, is_remote_ref, parse_remote_ref
from corral.slave.containerizer.images import ImageError
from corral.slave.containerizer.images.registry import OCI_MANIFEST, RegistryClient
from corral.slave.containerizer.images.registry_config import RegistryAuth, RegistryConfig

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("localhost/app", RemoteRef("localhost", "app", "latest")),
        ("127.0.0.1:5000/team/app:v1", RemoteRef("127.0.0.1:5000", "team/app", "v1")),
        ("registry.example/a/b/c:1.2-rc_3", RemoteRef("registry.example", "a/b/c", "1.2-rc_3")),
        (f"registry.example/app@{DIGEST}", RemoteRef("registry.example", "app", "latest", DIGEST)),
        (f"registry.example/app:v1@{DIGEST}", RemoteRef("registry.example", "app", "v1", DIGEST)),
        ("[::1]:5000/app:v1", RemoteRef("[::1]:5000", "app", "v1")),
    ],
)
def test_registry_references_parse(image: str, expected: RemoteRef) -> None:
    assert is_remote_ref(image)
    assert parse_remote_ref(image) == expected


def test_a_pinned_name_is_its_digest() -> None:
    assert parse_remote_ref(f"r.example/app:v1@{DIGEST}").name == f"r.example/app@{DIGEST}"
    assert parse_remote_ref("r.example/app").name == "r.example/app:latest"


@pytest.mark.parametrize("image", ["busybox", "busybox:1.35", "team/app:v1", "/srv/app.tar", ""])
def test_store_names_and_paths_are_not_registry_references(image: str) -> None:
    assert not is_remote_ref(image)


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("r.example/App", "bad repository 'App'"),
        ("r.example/app:", "bad tag ''"),
        ("r.example/app:-x", "bad tag '-x'"),
        ("r.example/app@sha256:12", "the digest must be sha256:<64 lowercase hex>"),
        ("r.example/", "bad repository ''"),
        ("r_x.example/app", "bad registry host 'r_x.example'"),
        ("r.example/a//b", "bad repository 'a//b'"),
    ],
)
def test_bad_references_name_the_part(image: str, problem: str) -> None:
    with pytest.raises(ImageRefError, match=problem.replace("(", r"\(").replace("[", r"\[")):
        parse_remote_ref(image)


def test_plain_http_only_for_loopback_and_hosts_named_insecure() -> None:
    config = RegistryConfig(insecure=frozenset({"lab.example:5000"}))
    assert config.scheme("127.0.0.1:5000") == "http"
    assert config.scheme("localhost:5000") == "http"
    assert config.scheme("[::1]:5000") == "http"
    assert config.scheme("lab.example:5000") == "http"
    assert config.scheme("lab.example") == "https"
    assert config.scheme("registry.example") == "https"
    assert config.scheme("10.0.0.1:5000") == "https"


def test_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "registries.toml"
    path.write_text(
        '[registries."r.example"]\nusername = "u"\npassword = "p"\n'
        '[registries."lab.example:5000"]\ninsecure = true\n'
    )
    path.chmod(0o600)
    config = RegistryConfig.load(path)
    assert config.credentials == {"r.example": RegistryAuth("u", "p")}
    assert config.insecure == frozenset({"lab.example:5000"})
    assert "p" not in repr(config.credentials["r.example"])
    path.chmod(0o644)
    with pytest.raises(ImageError, match="readable by others; chmod 600"):
        RegistryConfig.load(path)
    for text, problem in [
        ("[x]\n", "expected only"),
        ('[registries."r"]\nusername = "u"\n', "needs both username and password"),
        ('[registries."r"]\ntoken = "t"\n', "takes username, password, insecure"),
        ("not toml", "not valid TOML"),
    ]:
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(ImageError, match=problem):
            RegistryConfig.load(path)


def _manifest() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST, "size": 9}
            ],
        }
    ).encode()


def test_a_bearer_challenge_is_answered_from_the_token_service_with_the_credentials() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "auth.example":
            assert request.url.params["scope"] == "repository:team/app:pull"
            assert request.url.params["service"] == "r.example"
            assert request.headers["authorization"].startswith("Basic ")
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("authorization") != "Bearer T0K":
            challenge = 'Bearer realm="https://auth.example/token",service="r.example",scope="repository:team/app:pull"'
            return httpx.Response(401, headers={"www-authenticate": challenge})
        return httpx.Response(200, content=_manifest(), headers={"content-type": OCI_MANIFEST})

    config = RegistryConfig(credentials={"r.example": RegistryAuth("u", "p")}, retries=0)
    client = RegistryClient(config, transport=httpx.MockTransport(handle))
    ref = parse_remote_ref("r.example/team/app:v1")
    manifest = client.manifest(ref)
    assert [d.digest for d in manifest.layers] == [DIGEST]
    assert str(seen[0].url) == "https://r.example/v2/team/app/manifests/v1"
    client.manifest(ref)  # the token is kept: no second trip to the token service
    assert sum(r.url.host == "auth.example" for r in seen) == 1


def test_a_refusing_token_service_and_a_429_then_200() -> None:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(401)
        if request.url.path.endswith("/private/manifests/v1"):
            return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/t"'})
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(429)
        return httpx.Response(200, content=_manifest(), headers={"content-type": OCI_MANIFEST})

    client = RegistryClient(RegistryConfig(retries=2, backoff_s=0.001), transport=httpx.MockTransport(handle))
    with pytest.raises(ImageError, match="token service refused an anonymous pull"):
        client.manifest(parse_remote_ref("r.example/private:v1"))
    assert client.manifest(parse_remote_ref("r.example/public:v1")).layers
    assert calls["n"] == 2


def test_a_manifest_that_is_not_what_its_digest_says_is_refused() -> None:
    body = _manifest()

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": OCI_MANIFEST})

    client = RegistryClient(RegistryConfig(retries=0), transport=httpx.MockTransport(handle))
    with pytest.raises(ImageError, match="sent a manifest whose digest is sha256:"):
        client.manifest(parse_remote_ref(f"r.example/app@{DIGEST}"))
    good = "sha256:" + hashlib.sha256(body).hexdigest()
    assert client.manifest(parse_remote_ref(f"r.example/app@{good}")).digest == good


def test_schema1_and_zstd_layers_are_refused_by_name() -> None:
    bodies = {
        "old": json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(),
        "zstd": _manifest().replace(b"tar+gzip", b"tar+zstd"),
    }

    def handle(request: httpx.Request) -> httpx.Response:
        name = request.url.path.split("/")[2]
        return httpx.Response(200, content=bodies[name], headers={"content-type": OCI_MANIFEST})

    client = RegistryClient(RegistryConfig(retries=0), transport=httpx.MockTransport(handle))
    with pytest.raises(ImageError, match="schema 1 manifests are not supported"):
        client.manifest(parse_remote_ref("r.example/old:1"))
    with pytest.raises(ImageError, match="tar\\+zstd'; supported: tar or gzip tar"):
        client.manifest(parse_remote_ref("r.example/zstd:1"))
