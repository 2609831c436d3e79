"""A client of the IoT Edge workload API (``IOTEDGE_WORKLOADURI``): sign data with the module's key,
issue the hub's server certificate, read the trust bundle.

Blocking HTTP/1.1 over a unix socket (or http://host:port), one request per connection; it knows
the API's paths and JSON shapes and nothing about MQTT, tokens or the hub.

The shapes are those of the published workload API (Azure/iotedge ``edgelet/api/workload.yaml``,
version 2018-06-28 and later) as aziot-edged serves them:

- ``POST /modules/{name}/genid/{genid}/sign?api-version=…`` with
  ``{"keyId": "primary", "algo": "HMACSHA256", "data": base64}`` → 200 ``{"digest": base64}``
- ``POST /modules/{name}/genid/{genid}/certificate/server?api-version=…`` with
  ``{"commonName", "expiration"}`` → 201 ``{"privateKey": {"type": "key", "bytes": PEM},
  "certificate": PEM chain, "expiration": ISO 8601}``
- ``GET /trust-bundle?api-version=…`` → 200 ``{"certificate": PEM}``
- errors: ``{"message": …}`` with any other status.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

from edgehub.errors import AuthError, ConfigError

DEFAULT_API_VERSION: Final = "2019-01-30"
"""What edgeAgent passes in ``IOTEDGE_APIVERSION`` since IoT Edge 1.0.7; used when it is not set."""

REQUEST_TIMEOUT: Final = 10.0
"""Seconds one workload API call may take (a local daemon answers in milliseconds)."""

MAX_RESPONSE_BYTES: Final = 1024 * 1024

SERVER_CERT_VALIDITY: Final = timedelta(days=90)
"""The expiration the hub asks for (aziot-edged applies its own policy, 90 days by default)."""
SERVER_CERT_FILE: Final = "workload-server.pem"
SERVER_KEY_FILE: Final = "workload-server.key"


class WorkloadError(Exception):
    """The workload API could not be reached or refused the request (the reason says which)."""


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A server certificate issued by the workload API: PEM chain, PEM private key, expiry."""

    certificate_pem: str
    private_key_pem: str = field(repr=False)
    expiration: str


class _UnixConnection(http.client.HTTPConnection):
    """``http.client`` over a unix domain socket (the daemon's ``workload.sock``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True, slots=True)
class WorkloadClient:
    """The workload API of one module: ``uri`` (``unix:///var/run/iotedge/workload.sock`` or
    ``http://host:port``), the module's id and generation id, the API version."""

    uri: str
    module_id: str
    generation_id: str
    api_version: str = DEFAULT_API_VERSION
    timeout: float = REQUEST_TIMEOUT

    def __post_init__(self) -> None:
        scheme = urlsplit(self.uri).scheme
        if scheme not in ("unix", "http"):
            raise ValueError(f"workload URI must be unix:///path or http://host:port (got {self.uri!r})")

    def sign(self, data: bytes, key_id: str = "primary") -> bytes:
        """HMAC-SHA256 of ``data`` with the module's key (``key_id`` primary or secondary)."""
        body = {"keyId": key_id, "algo": "HMACSHA256", "data": base64.b64encode(data).decode("ascii")}
        answer = self._call("POST", f"{self._module_path()}/sign", body, expected=(200,))
        digest = answer.get("digest")
        if not isinstance(digest, str):
            raise WorkloadError("sign: the answer has no digest")
        try:
            return base64.b64decode(digest, validate=True)
        except (binascii.Error, ValueError):
            raise WorkloadError("sign: the digest is not base64") from None

    def server_certificate(self, common_name: str, expiration: datetime) -> ServerCertificate:
        """A new server certificate for ``common_name``, signed by the device's edge CA."""
        body = {"commonName": common_name, "expiration": expiration.isoformat()}
        answer = self._call(
            "POST", f"{self._module_path()}/certificate/server", body, expected=(200, 201),
        )
        certificate, key = answer.get("certificate"), answer.get("privateKey")
        key_bytes = key.get("bytes") if isinstance(key, dict) else None
        if not isinstance(certificate, str) or not isinstance(key_bytes, str):
            raise WorkloadError("certificate/server: the answer lacks certificate or privateKey.bytes")
        expires = answer.get("expiration")
        return ServerCertificate(certificate, key_bytes, expires if isinstance(expires, str) else "")

    def trust_bundle(self) -> str:
        """The CAs (PEM) the device trusts: its edge CA's root and any configured trust bundle."""
        answer = self._call("GET", "/trust-bundle", None, expected=(200,))
        certificate = answer.get("certificate")
        if not isinstance(certificate, str):
            raise WorkloadError("trust-bundle: the answer has no certificate")
        return certificate

    # -- HTTP ------------------------------------------------------------------------------------

    def _module_path(self) -> str:
        return f"/modules/{quote(self.module_id, safe='')}/genid/{quote(self.generation_id, safe='')}"

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.uri)
        if parts.scheme == "unix":
            return _UnixConnection(parts.path, self.timeout)
        host, port = parts.hostname or "localhost", parts.port or 80
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _call(self, method: str, path: str, body: dict[str, Any] | None,
              expected: tuple[int, ...]) -> dict[str, Any]:
        target = f"{path}?api-version={quote(self.api_version, safe='')}"
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection = self._connection()
        try:
            connection.request(method, target, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise WorkloadError(f"{method} {path}: workload API at {self.uri} unreachable: {exc}") from None
        finally:
            connection.close()
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = None
        if response.status not in expected:
            message = document.get("message") if isinstance(document, dict) else None
            raise WorkloadError(f"{method} {path}: HTTP {response.status}: {message or raw[:200]!r}")
        if not isinstance(document, dict):
            raise WorkloadError(f"{method} {path}: the answer is not a JSON object")
        return document


def workload_signer(client: WorkloadClient) -> Callable[[bytes], bytes]:
    """A signer for upstream SAS tokens (edgehub.upstream.credentials.Signer): the module's primary
    key through ``client``; AuthError when the workload API cannot sign, so the link backs off."""

    def sign(data: bytes) -> bytes:
        try:
            return client.sign(data)
        except WorkloadError as exc:
            raise AuthError(f"the workload API did not sign the upstream token: {exc}") from None

    return sign


def fetch_server_certificate(client: WorkloadClient, common_name: str, folder: Path) -> tuple[Path, Path]:
    """A server certificate for ``common_name`` from the workload API, written to ``folder``
    (chain and key, the key with mode 0600) for the TLS context; ConfigError when none is issued."""
    try:
        issued = client.server_certificate(common_name, datetime.now(UTC) + SERVER_CERT_VALIDITY)
    except WorkloadError as exc:
        reason = f"no server certificate from the workload API: {exc}"
        raise ConfigError([("IOTEDGE_WORKLOADURI", reason)]) from None
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE
    _write_private(key_file, issued.private_key_pem.encode())
    cert_file.write_text(issued.certificate_pem)
    return cert_file, key_file


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)
