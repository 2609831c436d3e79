"""Shared pieces of the AMQP head tests: an AmqpServer on a TLS port, and python-qpid-proton's
BlockingConnection as the client (a real AMQP client; its calls block, so tests run them in a thread).

Test support only; the hub side is the real AmqpServer with a real or a gated fake hub.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import proton
from proton.utils import BlockingConnection, BlockingReceiver

from edgehub.amqp import cbs
from edgehub.auth.registry import IdentityRegistry
from edgehub.clock import Clock
from edgehub.heads.amqp.auth import AmqpAuthenticator
from edgehub.heads.amqp.connection import AmqpLimits
from edgehub.heads.amqp.server import AmqpServer
from edgehub.heads.port import HubPort
from edgehub.message import Identity
from edgehub.tls import ensure_dev_certificates, server_ssl_context
from edgehub.twins.port import (
    ClientPresence,
    MethodPort,
    NoPresence,
    TwinPort,
    UnavailableMethods,
    UnavailableTwins,
)

HOST: Final = "localhost"
TIMEOUT: Final = 10.0
T = TypeVar("T")


@asynccontextmanager
async def amqp_server(
    tmp_path: Path,
    hub: HubPort,
    registry: Callable[[], IdentityRegistry],
    clock: Clock,
    *,
    limits: AmqpLimits | None = None,
    twins: TwinPort | None = None,
    methods: MethodPort | None = None,
    presence: ClientPresence | None = None,
    client_ca: Path | None = None,
) -> AsyncIterator[tuple[AmqpServer, Path]]:
    """A listening AmqpServer (TLS, dev certificate for localhost) and the CA file clients trust;
    with ``client_ca``, client certificates from that CA are asked for and authenticate."""
    dev = ensure_dev_certificates(tmp_path / "certs", [HOST])
    clients = [client_ca] if client_ca is not None else []
    context = server_ssl_context(dev.cert_file, dev.key_file, None, extra_client_ca_files=clients)
    server = AmqpServer(
        hub,
        AmqpAuthenticator(registry, client_cert_auth=client_ca is not None),
        limits=limits or AmqpLimits(),
        clock=clock,
        twins=twins or UnavailableTwins(),
        methods=methods or UnavailableMethods(),
        presence=presence or NoPresence(),
    )
    await server.listen("127.0.0.1", 0, context)
    try:
        yield server, dev.ca_file
    finally:
        server.close()
        await server.wait_closed()


def connect(
    port: int,
    ca_file: Path,
    *,
    mechs: str = "ANONYMOUS",
    user: str | None = None,
    password: str | None = None,
    certificate: tuple[Path, Path] | None = None,
) -> BlockingConnection:
    """A proton client over TLS; ``certificate`` (certificate file, key file) presents a client
    certificate."""
    domain = proton.SSLDomain(proton.SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(str(ca_file))
    if certificate is not None:
        domain.set_credentials(str(certificate[0]), str(certificate[1]), None)
    domain.set_peer_authentication(proton.SSLDomain.VERIFY_PEER_NAME)
    return BlockingConnection(
        f"amqps://{HOST}:{port}",
        ssl_domain=domain,
        allowed_mechs=mechs,
        user=user,
        password=password,
        timeout=TIMEOUT,
    )


_cbs_links: weakref.WeakKeyDictionary[BlockingConnection, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def put_token(connection: BlockingConnection, identity: Identity, token: str) -> tuple[int, str]:
    """A CBS put-token as the Azure SDKs send it (one $cbs link pair per connection); the status
    code and description of the answer."""
    if connection not in _cbs_links:
        _cbs_links[connection] = (
            connection.create_sender(cbs.CBS_ADDRESS),
            connection.create_receiver(cbs.CBS_ADDRESS),
        )
    sender, receiver = _cbs_links[connection]
    audience = f"{HOST}/devices/{identity.device_id}" + (
        f"/modules/{identity.module_id}" if identity.module_id else ""
    )
    sender.send(cbs.put_token_request(audience, token))
    answer = receiver.receive(timeout=TIMEOUT)
    return cbs.parse_put_token_response(answer)


def events_address(identity: Identity) -> str:
    if identity.module_id:
        return f"/devices/{identity.device_id}/modules/{identity.module_id}/messages/events"
    return f"/devices/{identity.device_id}/messages/events"


def telemetry(body: bytes, **properties: str) -> proton.Message:
    message: Any = proton.Message(body=body, properties=dict(properties) or None)
    message.inferred = True
    return message  # type: ignore[no-any-return]


async def blocking(call: Callable[[], T]) -> T:
    """Run a blocking client step off the event loop (the hub keeps serving meanwhile)."""
    return await asyncio.to_thread(call)


def flush(connection: BlockingConnection) -> None:
    """Write what the client queued without waiting for an answer (a disposition, a settle): a
    BlockingConnection does I/O only while it waits for something."""
    transport = connection.conn.transport if connection.conn is not None else None
    connection.wait(
        lambda: transport is None or transport.pending() <= 0,
        timeout=TIMEOUT,
        msg="writing the client's queued frames",
    )


def settle(connection: BlockingConnection, receiver: BlockingReceiver, outcome: str) -> None:
    """Accept, reject or release (undelivered) the last message ``receiver`` returned, and send it now."""
    if outcome == "accept":
        receiver.accept()
    elif outcome == "reject":
        receiver.reject()
    else:
        receiver.release(delivered=False)
    flush(connection)


def app_properties(message: proton.Message) -> dict[str, Any]:
    """A received message's application properties (proton's stubs type the section as None)."""
    section: Any = message.properties
    return dict(section or {})
