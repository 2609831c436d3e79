"""The sans-I/O AMQP connection core with bytes only: a proton client engine talks to it in memory, so
credit, settlement, bounds and the on-behalf-of rule of a child edge hub are checked without sockets."""

from __future__ import annotations

import base64
import time
from typing import Any, Final

import proton
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehub.amqp import cbs
from edgehub.amqp.engine import AmqpEngine, ClientSasl, Role
from edgehub.amqp.sasl import AMQP_HEADER, SASL_HEADER
from edgehub.auth.identities import IdentitySpec
from edgehub.auth.registry import IdentityRegistry
from edgehub.auth.sas import make_sas_token, sas_resource
from edgehub.heads.amqp.auth import AmqpAuthenticator
from edgehub.heads.amqp.connection import AmqpLimits, AmqpServerConnection
from edgehub.heads.amqp.events import DeliveryLinkChanged, Event, IdentityAuthenticated, TelemetryReceived
from edgehub.message import Identity, SystemProperty

KEY: Final = base64.b64encode(b"z" * 32).decode()
HOST: Final = "hub"
DEVICE = Identity("d1")
CHILD_HUB = Identity("child", "$edgeHub")


class Client:
    """A proton client engine that records what the hub told it."""

    def __init__(self, sasl: ClientSasl | None = None) -> None:
        self.engine = AmqpEngine(self, role=Role.CLIENT, sasl=sasl or ClientSasl("ANONYMOUS"), hostname=HOST)
        self.closed_links: dict[str, tuple[str, str]] = {}
        self.received: list[proton.Message] = []
        self.session_errors: list[str] = []
        self.engine.connection.open()
        self.session = self.engine.connection.session()
        self.session.open()

    def on_link_remote_close(self, event: Any) -> None:
        condition = event.link.remote_condition
        self.closed_links[event.link.name] = (
            (condition.name, condition.description) if condition else ("", "")
        )

    def on_session_remote_close(self, event: Any) -> None:
        condition = event.session.remote_condition
        self.session_errors.append(condition.name if condition else "")

    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        link = delivery.link
        if link.is_receiver and not delivery.partial:
            message = proton.Message()
            message.decode(link.recv(delivery.pending))
            link.advance()
            self.received.append(message)
            delivery.update(proton.Delivery.ACCEPTED)
            delivery.settle()

    def sender(self, address: str, name: str) -> Any:
        link = self.session.sender(name)
        link.target.address = address
        link.open()
        return link

    def receiver(self, address: str, name: str, credit: int = 10) -> Any:
        link = self.session.receiver(name)
        link.source.address = address
        link.open()
        link.flow(credit)
        return link


def registry() -> IdentityRegistry:
    return IdentityRegistry(
        [
            IdentitySpec("d1", None, primary_key=KEY),
            IdentitySpec("child", "$edgeHub", primary_key=KEY),
            IdentitySpec("other", None, primary_key=KEY),
        ],
        [HOST],
    )


def token(identity: Identity) -> str:
    return make_sas_token(sas_resource(HOST, identity), KEY, int(time.time()) + 600)


def hub(limits: AmqpLimits | None = None) -> AmqpServerConnection:
    built = registry()
    return AmqpServerConnection(AmqpAuthenticator(lambda: built), limits or AmqpLimits(), time.time())


def pump(client: Client, server: AmqpServerConnection) -> list[Event]:
    events: list[Event] = []
    for _ in range(50):
        client.engine.process()
        outgoing = client.engine.data_to_send()
        if outgoing:
            events += server.receive_data(outgoing, time.time())
        events += server.take_events()
        incoming = server.data_to_send()
        if incoming:
            client.engine.receive_data(incoming)
        if not outgoing and not incoming:
            return events
    raise AssertionError("the two ends never went quiet")


def send(sender: Any, message: proton.Message, tag: str = "t") -> Any:
    delivery = sender.delivery(tag)
    sender.send(message.encode())
    sender.advance()
    return delivery


def authenticate(client: Client, server: AmqpServerConnection, identity: Identity) -> None:
    sender = client.sender(cbs.CBS_ADDRESS, "cbs-out")
    client.receiver(cbs.CBS_ADDRESS, "cbs-in")
    events = pump(client, server)
    send(sender, cbs.put_token_request(f"{HOST}/devices/x", token(identity)))
    events += pump(client, server)
    assert IdentityAuthenticated(identity) in events
    assert cbs.parse_put_token_response(client.received.pop()) == (200, "OK")


def test_a_sending_link_gets_exactly_the_configured_credit_and_it_comes_back_only_as_messages_settle() -> (
    None
):
    client, server = Client(), hub(AmqpLimits(link_credit=3))
    authenticate(client, server, DEVICE)
    sender = client.sender("/devices/d1/messages/events", "events")
    pump(client, server)
    assert sender.credit == 3
    for index in range(3):
        sender.delivery(str(index))
        sender.send(proton.Message(body=b"m%d" % index).encode())
        sender.advance()
    [batch] = [e for e in pump(client, server) if isinstance(e, TelemetryReceived)]
    assert [m.body for m in batch.messages] == [b"m0", b"m1", b"m2"]
    assert sender.credit == 0  # the client may not send more while nothing is stored
    server.ingested(batch.token)
    pump(client, server)
    assert sender.credit == 3


def test_sessions_beyond_the_bound_close_the_connection_and_within_it_they_begin() -> None:
    within = Client()
    server = hub(AmqpLimits(max_sessions=2))
    within.engine.connection.session().open()
    pump(within, server)
    assert within.engine.transport.remote_channel_max == 1  # channels 0 and 1 (AMQP 1.0 §2.7.1)
    beyond = Client()
    server = hub(AmqpLimits(max_sessions=2))
    for _ in range(2):
        beyond.engine.connection.session().open()
    pump(beyond, server)
    assert server.closed
    condition = beyond.engine.connection.remote_condition
    assert condition is not None
    assert condition.name == "amqp:connection:framing-error"
    assert "channel_max" in str(condition.description)


def test_a_child_edge_hub_sends_for_the_devices_below_it_and_their_ids_come_from_the_link() -> None:
    client, server = Client(), hub()
    authenticate(client, server, CHILD_HUB)
    sender = client.sender("/devices/leaf/messages/events", "leaf-events")
    client.receiver("/devices/leaf/messages/devicebound", "leaf-c2d")
    events = pump(client, server)
    assert DeliveryLinkChanged(Identity("leaf"), True) in events
    sender.delivery("1")
    sender.send(proton.Message(body=b"from leaf").encode())
    sender.advance()
    [batch] = [e for e in pump(client, server) if isinstance(e, TelemetryReceived)]
    assert batch.messages[0].system_properties[SystemProperty.CONNECTION_DEVICE_ID] == "leaf"


def test_a_device_may_not_use_another_devices_links_even_on_a_connection_it_proved() -> None:
    client, server = Client(), hub()
    authenticate(client, server, DEVICE)
    client.sender("/devices/other/messages/events", "theirs")
    client.receiver("/devices/other/messages/devicebound", "their-c2d")
    pump(client, server)
    assert client.closed_links["theirs"][0] == "amqp:unauthorized-access"
    assert client.closed_links["their-c2d"][0] == "amqp:unauthorized-access"


def test_sasl_plain_proves_the_username_identity_before_any_link() -> None:
    client = Client(ClientSasl("PLAIN", "d1@sas.hub", token(DEVICE)))
    server = hub()
    events = pump(client, server)
    assert IdentityAuthenticated(DEVICE) in events
    assert server.identities.keys() == {DEVICE}


def test_an_undecodable_telemetry_body_is_rejected_with_decode_error_and_not_ingested() -> None:
    client, server = Client(), hub()
    authenticate(client, server, DEVICE)
    sender = client.sender("/devices/d1/messages/events", "events")
    pump(client, server)
    delivery = sender.delivery("1")
    message: Any = proton.Message(body={"not": "binary"})
    sender.send(message.encode())
    sender.advance()
    events = pump(client, server)
    assert not [e for e in events if isinstance(e, TelemetryReceived)]
    assert delivery.remote_state == proton.Delivery.REJECTED
    assert delivery.remote.condition.name == "amqp:decode-error"


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from([b"", AMQP_HEADER, SASL_HEADER]), garbage=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_out_of_the_core_and_end_in_a_closed_connection_or_a_wait(
    prefix: bytes,
    garbage: bytes,
) -> None:
    server = hub()
    events = server.receive_data(prefix + garbage, time.time())
    assert not [e for e in events if isinstance(e, TelemetryReceived | IdentityAuthenticated)]
    server.data_to_send()  # whatever it answers (a header, a close frame) is produced without error
    assert not server.authenticated


def test_a_connection_whose_every_credential_expired_is_closed_with_unauthorized_access() -> None:
    client, server = Client(), hub(AmqpLimits(idle_timeout=0))  # virtual time: no heartbeats
    authenticate(client, server, DEVICE)
    client.sender("/devices/d1/messages/events", "events")
    pump(client, server)
    server.tick(time.time() + 10)  # within the token's 600 s
    pump(client, server)
    assert not server.closed
    server.tick(time.time() + 601)
    pump(client, server)
    assert client.closed_links["events"][0] == "amqp:unauthorized-access"
    condition = client.engine.connection.remote_condition
    assert condition is not None
    assert condition.name == "amqp:unauthorized-access"


def test_a_peer_silent_past_the_idle_timeout_is_closed() -> None:
    client, server = Client(), hub(AmqpLimits(idle_timeout=10))
    authenticate(client, server, DEVICE)
    now = time.time()
    server.tick(now)
    pump(client, server)
    assert not server.closed
    server.tick(now + 25)  # nothing heard well past our idle-time-out (AMQP 1.0 §2.4.5)
    pump(client, server)
    condition = client.engine.connection.remote_condition
    assert condition is not None
    assert condition.name == "amqp:resource-limit-exceeded"
