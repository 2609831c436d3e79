"""A fake IoT Edge workload API on a unix socket, written from the published API description
(Azure/iotedge ``edgelet/api/workload.yaml``; shapes as aziot-edged serves them).

Test support only. It knows one module (name, generation id, symmetric key) and an edge CA:
``POST /modules/{name}/genid/{genid}/sign`` HMACs with the key, ``.../certificate/server`` issues a
certificate for the common name signed by the CA (201), ``GET /trust-bundle`` returns the CA; every
request must carry ``api-version``; anything else is 404 ``{"message"}``. Requests are recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import shutil
import socketserver
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgehub.testing.certs import CertificateAuthority, make_ca


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any] | None


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    workload: FakeWorkload


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``requests`` instead."""

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        body = json.loads(raw) if raw else None
        request = Request(method, parts.path, parse_qs(parts.query), body)
        status, answer = self.server.workload.answer(request)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class FakeWorkload:
    """``with FakeWorkload(folder, key=...) as workload:`` serves on ``workload.uri`` (unix://)."""

    folder: Path
    key: str
    module_id: str = "$edgeHub"
    generation_id: str = "gen-1"
    requests: list[Request] = field(default_factory=list)
    ca: CertificateAuthority | None = None
    trust_bundle_served: bool = True
    """False: ``GET /trust-bundle`` answers 500, as a workload API that cannot read its CAs."""
    _server: _Server | None = None
    _socket_folder: Path | None = None

    @property
    def socket_path(self) -> Path:
        """A short path (unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer)."""
        if self._socket_folder is None:
            self._socket_folder = Path(tempfile.mkdtemp(prefix="wl-"))
        return self._socket_folder / "workload.sock"

    @property
    def uri(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> FakeWorkload:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(self.folder, "fake edge CA")
        server = _Server(str(self.socket_path), _Handler)
        server.workload = self
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._socket_folder is not None:
            shutil.rmtree(self._socket_folder, ignore_errors=True)

    def __enter__(self) -> FakeWorkload:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the API ---------------------------------------------------------------------------------

    def answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        self.requests.append(request)
        if not request.query.get("api-version"):
            return 400, {"message": "missing api-version"}
        module_prefix = f"/modules/{self.module_id}/genid/{self.generation_id}/"
        path = unquote(request.path)
        if request.method == "POST" and path == module_prefix + "sign":
            return self._sign(request.body or {})
        if request.method == "POST" and path == module_prefix + "certificate/server":
            return self._server_certificate(request.body or {})
        if request.method == "GET" and path == "/trust-bundle":
            if not self.trust_bundle_served:
                return 500, {"message": "trust bundle unavailable"}
            assert self.ca is not None
            return 200, {"certificate": self.ca.certificate.public_bytes(serialization.Encoding.PEM).decode()}
        return 404, {"message": f"no module {path!r} with this generation id"}

    def _sign(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("keyId") != "primary" or body.get("algo") != "HMACSHA256" or "data" not in body:
            return 400, {"message": "keyId, algo (HMACSHA256) and data are required"}
        digest = hmac.new(base64.b64decode(self.key), base64.b64decode(body["data"]), hashlib.sha256).digest()
        return 200, {"digest": base64.b64encode(digest).decode()}

    def _server_certificate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        common_name = body.get("commonName")
        if not isinstance(common_name, str) or "expiration" not in body:
            return 400, {"message": "commonName and expiration are required"}
        assert self.ca is not None
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        expires = now + timedelta(days=90)
        names: list[x509.GeneralName] = [x509.DNSName(self.module_id.lower().lstrip("$"))]
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(common_name)))
        except ValueError:
            names.append(x509.DNSName(common_name))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(expires)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.ca.key, hashes.SHA256())
        )
        chain = (certificate.public_bytes(serialization.Encoding.PEM)
                 + self.ca.certificate.public_bytes(serialization.Encoding.PEM)).decode()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return 201, {"privateKey": {"type": "key", "bytes": private}, "certificate": chain,
                     "expiration": expires.isoformat()}
