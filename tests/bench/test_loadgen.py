"""The load generator against bench.ack_server (real processes, loopback, a few hundred messages): every
publish acked across worker processes; a server that drops the connection ends the load with an error
instead of a hang; the ack server's replies byte by byte."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from bench.ack_server import answer
from bench.common import free_port, server_process
from bench.loadgen_processes import run_load_processes, split
from bench.mqtt_loadgen import Credentials, LoadResult, publish_packet, run_load, subscribe_packet


@pytest.fixture(scope="module")
def ack_server_port() -> Iterator[int]:
    port = free_port()
    with server_process([sys.executable, "-m", "bench.ack_server", str(port), "2"], port):
        yield port


def _publishers(n: int) -> list[Credentials]:
    return [Credentials(f"load{i}", topic=f"bench/{i}") for i in range(n)]


def test_every_qos1_publish_is_acked_across_worker_processes(ack_server_port: int) -> None:
    result = run_load_processes("127.0.0.1", ack_server_port, _publishers(4), None, "", 100, 1, window=10,
                                processes=2, limit_secs=30)
    assert (result.published, result.acked, result.errors) == (400, 400, [])
    assert len(result.latencies) == len(result.ack_times) == 400
    assert result.seconds > 0


def test_more_clients_than_the_hubs_per_source_admission_all_connect(ack_server_port: int) -> None:
    result = run_load_processes("127.0.0.1", ack_server_port, _publishers(100), None, "", 3, 1, window=3,
                                processes=2, limit_secs=30)
    assert (result.acked, result.errors) == (300, [])


def test_one_process_gives_the_same_counts(ack_server_port: int) -> None:
    result = run_load_processes("127.0.0.1", ack_server_port, _publishers(2), None, "", 50, 1, processes=1)
    assert (result.published, result.acked) == (100, 100)


def test_publishers_are_dealt_round_robin_into_non_empty_groups() -> None:
    groups = split(_publishers(5), 2)
    assert [[c.client_id for c in g] for g in groups] == [["load0", "load2", "load4"], ["load1", "load3"]]
    assert len(split(_publishers(1), 4)) == 1


async def test_a_server_that_drops_the_connection_ends_the_load_with_an_error() -> None:
    async def accept_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x20\x02\x00\x00")  # CONNACK, then nothing acked
        await writer.drain()
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(accept_then_drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(ConnectionError, match="closed after 0 acks"):
            await asyncio.wait_for(run_load("127.0.0.1", port, _publishers(1), None, "", 50, 1, window=5), 10)


def test_ack_server_answers_each_packet_as_the_spec_says() -> None:
    first, body = _split(publish_packet("t", b"x", 1, 0x1234))
    assert answer(first, body) == b"\x40\x02\x12\x34"  # PUBACK [MQTT-3.4]
    first, body = _split(publish_packet("t", b"x", 2, 7))
    assert answer(first, body) == b"\x50\x02\x00\x07"  # PUBREC [MQTT-3.5]
    assert answer(*_split(publish_packet("t", b"x", 0, 0))) == b""
    assert answer(0x62, b"\x00\x07") == b"\x70\x02\x00\x07"  # PUBREL → PUBCOMP
    assert answer(*_split(subscribe_packet("a/#", 1, 9))) == b"\x90\x03\x00\x09\x01"  # SUBACK
    assert answer(0xC0, b"") == b"\xd0\x00"  # PINGRESP


def test_load_results_merge_publisher_counts() -> None:
    total = LoadResult(published=1, acked=1, latencies=[0.1])
    total.merge(LoadResult(published=2, acked=2, latencies=[0.2, 0.3], errors=["e"]))
    assert (total.published, total.acked, total.latencies, total.errors) == (3, 3, [0.1, 0.2, 0.3], ["e"])


def _split(packet: bytes) -> tuple[int, bytes]:
    assert packet[1] < 128  # short packets only: one length byte
    return packet[0], packet[2:]
