"""Persistent MQTT sessions across hub restarts, graceful (SIGTERM) and kill -9, with paho-mqtt 2.x
over MQTT 3.1.1 and 5 against a real hub: session-present 1, deliveries resume without a
resubscribe, twin feeds come back, unacked QoS 1 deliveries come again, expired sessions are gone."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from edgehub.message import Identity
from tests.conformance.deployment import (
    Deployment,
    DeploymentSpec,
    events_topic,
    inputs_topic,
    module,
    run_deployment,
)
from tests.conformance.paho_peer import PahoPeer, connect_properties, wait_for_messages, wait_until
from tests.hubproc import free_port

pytestmark = pytest.mark.conformance

V311, V5 = MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5
VERSIONS: Final = {"3.1.1": V311, "5": V5}
STOPS: Final = {"sigterm": signal.SIGTERM, "kill-9": signal.SIGKILL}
SOURCE = module("source")
TWIN_RESPONSES: Final = "$iothub/twin/res/#"
EXPIRY_BOUND: Final = 10.0


def sink(name: str) -> Identity:
    return module(f"sink-{name}")


def spec(*sinks: Identity) -> DeploymentSpec:
    """The source's output ``{sink}`` routed to that sink's input ``in``; a fixed TLS port, so
    clients dial the same one after a restart."""
    routes = {
        f"route{n}": f'FROM /messages/modules/source/outputs/{s.module_id} '
                     f'INTO BrokeredEndpoint("/modules/{s.module_id}/inputs/in")'
        for n, s in enumerate(sinks)
    }
    return DeploymentSpec(routes=routes, identities=[SOURCE, *sinks], tls_port=free_port())


@contextmanager
def deployed(folder: Path, *sinks: Identity) -> Iterator[Deployment]:
    with run_deployment(folder, spec(*sinks)) as deployment:
        yield deployment


def stop(deployment: Deployment, how: str, *connected: PahoPeer) -> None:
    """Stop the hub with ``how``; the connected peers see their connections close."""
    code = deployment.hub.stop(STOPS[how])
    assert code == (0 if how == "sigterm" else -signal.SIGKILL), deployment.hub.output
    for peer in connected:
        wait_gone(peer)


def wait_gone(peer: PahoPeer) -> None:
    wait_until([peer], lambda: peer.disconnected or peer.client.socket() is None,
               f"{peer.identity} sees the hub go")


def restart(deployment: Deployment, how: str, *connected: PahoPeer) -> None:
    """Stop the hub with ``how``, then start it again on the same folder, config and port."""
    stop(deployment, how, *connected)
    deployment.hub.start()


def send(deployment: Deployment, to: Identity, count: int, tag: str) -> list[bytes]:
    payloads = [f"{tag}-{n}".encode() for n in range(count)]
    with PahoPeer(deployment, SOURCE, V311).connected() as source:
        acks = [source.publish_acked(events_topic(SOURCE) + f"$.on={to.module_id}", p) for p in payloads]
    assert [ack.value for ack in acks] == [0] * count
    return payloads


def receive(peer: PahoPeer, expected: list[bytes], *, may_repeat: list[bytes] | None = None) -> None:
    """Wait until ``peer`` got every one of ``expected``, in order. Delivery is at least once:
    messages it got before a restart may come again first (a PUBACK the hub had not yet
    checkpointed when it stopped), ``may_repeat`` names them; nothing else may arrive."""
    prefix = inputs_topic(peer.identity)

    def inputs() -> list[bytes]:
        return [bytes(m.payload) for m in peer.received if m.topic.startswith(prefix)]

    wait_until([peer], lambda: set(expected) <= set(inputs()), f"{len(expected)} inputs at {peer.identity}")
    repeatable = set(may_repeat or ())
    assert [payload for payload in inputs() if payload not in repeatable] == expected


def twin_answers(peer: PahoPeer, rid: str) -> None:
    """A twin GET is answered on the $iothub/twin/res/# feed the peer subscribed to earlier."""
    peer.publish(f"$iothub/twin/GET/?$rid={rid}", b"")
    wait_until([peer], lambda: any(f"$rid={rid}" in m.topic for m in peer.received), f"twin response {rid}")


def connect_with_expiry(peer: PahoPeer, seconds: int) -> None:
    """MQTT 5 CONNECT with Clean Start 0 and this Session Expiry Interval."""
    peer.client.connect(peer.deployment.host, peer.deployment.tls_port, keepalive=30, clean_start=False,
                        properties=connect_properties(seconds))
    wait_until([peer], lambda: peer.connack is not None or peer.disconnected, "CONNACK")
    assert peer.connack is not None
    assert not peer.connack.is_failure, peer.connack


@pytest.mark.parametrize("how", list(STOPS))
@pytest.mark.parametrize("v", list(VERSIONS))
def test_a_persistent_session_resumes_after_a_restart_without_resubscribing(
    tmp_path: Path, v: str, how: str,
) -> None:
    receiver = sink("kept")
    with deployed(tmp_path, receiver) as deployment:
        first = PahoPeer(deployment, receiver, VERSIONS[v], persistent=True).connected()
        first.subscribed(inputs_topic(receiver) + "#").subscribed(TWIN_RESPONSES)
        before = send(deployment, receiver, 3, "before")
        assert [m.payload for m in wait_for_messages(first, 3)] == before
        restart(deployment, how, first)  # the receiver is connected when the hub goes

        after = send(deployment, receiver, 3, "after")  # queued while the receiver is away
        with PahoPeer(deployment, receiver, VERSIONS[v], persistent=True).connected() as again:
            assert again.session_present is True
            receive(again, after, may_repeat=before)  # no SUBSCRIBE sent
            twin_answers(again, "restored")  # the twin response feed came back too
            more = send(deployment, receiver, 2, "live")
            receive(again, after + more, may_repeat=before)
        first.close()


@pytest.mark.parametrize("v", list(VERSIONS))
def test_unacked_deliveries_are_redelivered_after_kill_9(tmp_path: Path, v: str) -> None:
    receiver = sink("unacked")
    with deployed(tmp_path, receiver) as deployment:
        holding = PahoPeer(deployment, receiver, VERSIONS[v], persistent=True)
        holding.client.manual_ack_set(True)  # receives QoS 1 PUBLISHes and never PUBACKs them
        holding.connected().subscribed(inputs_topic(receiver) + "#")
        payloads = send(deployment, receiver, 5, "inflight")
        # The pump keeps a bounded number of unacked batches in flight; the rest wait queued.
        in_flight = [m.payload for m in wait_for_messages(holding, 1)]
        assert in_flight == payloads[:len(in_flight)]
        restart(deployment, "kill-9", holding)

        with PahoPeer(deployment, receiver, VERSIONS[v], persistent=True).connected() as again:
            assert again.session_present is True
            receive(again, payloads)  # every unacked one again, in order
        holding.close()


@pytest.mark.parametrize("how", list(STOPS))
def test_an_expired_v5_session_is_gone_after_a_restart_and_a_live_one_is_not(
    tmp_path: Path, how: str,
) -> None:
    short, long = sink("short"), sink("long")
    with deployed(tmp_path, short, long) as deployment:
        brief = PahoPeer(deployment, short, V5)
        connect_with_expiry(brief, 1)
        brief.subscribed(inputs_topic(short) + "#")
        brief.close()
        # paho closes its socket right after DISCONNECT; the TLS handshake and CONNECT of a new
        # connection take the hub several loop turns, so it has parked the brief session by then
        # (a session still connected at a kill -9 would get its whole interval from the restart).
        kept = PahoPeer(deployment, long, V5, persistent=True).connected()
        kept.subscribed(inputs_topic(long) + "#").close()
        expired_at = time.time() + 1
        stop(deployment, how)
        # The expiry runs in wall time, also while the hub is down; stopping and starting it
        # usually takes longer than the second already, so this poll rarely waits at all.
        bound = time.monotonic() + EXPIRY_BOUND
        while time.time() <= expired_at and time.monotonic() < bound:
            time.sleep(0.05)
        deployment.hub.start()

        gone = PahoPeer(deployment, short, V5)
        connect_with_expiry(gone, 1)
        assert gone.session_present is False
        gone.close()
        with PahoPeer(deployment, long, V5, persistent=True).connected() as back:
            assert back.session_present is True
