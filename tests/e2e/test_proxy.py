"""MqttWs directly and through a real HTTP CONNECT proxy: device → child ``edgehub run`` → Debian's tinyproxy
→ parent ``edgehub run`` (its HTTP head's WebSocket, TLS with the parent's dev CA) → mosquitto.

tinyproxy runs with its own config in tmp (loopback port, ``Allow 127.0.0.1``, ``ConnectPort`` for the
parent's port, ``LogFile``), and its log proves the CONNECT. tinyproxy speaks plain HTTP only, so the https://
proxy case puts a small TLS terminator (written here) in front of it: TLS to the proxy, then TLS to the parent
inside that.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from edgehub.tls import DevCertificates, ensure_dev_certificates
from tests.e2e.conftest import DeviceFactory
from tests.e2e.parts import Broker, Observer, key, upstream_env, wait_until
from tests.hubproc import HubProcess, free_port, write_config

pytestmark = pytest.mark.slow

TINYPROXY: Final = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
HUB_NAME = "myhub.example"
TO_UPSTREAM = {"upstream": "FROM /messages/* INTO $upstream"}
NO_PROXY_ENV = {"https_proxy": "", "HTTPS_PROXY": "", "no_proxy": "", "NO_PROXY": ""}
"""Nothing inherited from the test runner's environment."""


class Tinyproxy:
    """A tinyproxy in the foreground on a free loopback port, logging to ``log_file``."""

    def __init__(self, folder: Path, connect_port: int, basic_auth: tuple[str, str] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_file = folder / "tinyproxy.log"
        lines = [
            f"Port {self.port}", "Listen 127.0.0.1", "Timeout 600", f'LogFile "{self.log_file}"',
            "LogLevel Info", "MaxClients 20", "Allow 127.0.0.1", f"ConnectPort {connect_port}",
        ]
        if basic_auth is not None:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        self.config = folder / "tinyproxy.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen([TINYPROXY, "-d", "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.process.poll() is not None or "Accepting connections" in self.log(), 10,
                   "tinyproxy accepting connections")
        if self.process.poll() is not None:
            raise RuntimeError(f"tinyproxy exited with {self.process.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class TlsTerminator:
    """TLS on a loopback port, relayed as plain bytes to ``upstream_port``: turns tinyproxy into an
    https:// proxy. Its own event loop on a thread, since the e2e tests are synchronous."""

    def __init__(self, certificates: DevCertificates, upstream_port: int) -> None:
        self.port = free_port()
        self._upstream_port = upstream_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(certificates.cert_file, certificates.key_file)
        self.handshakes = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TLS terminator did not start")

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self._context)
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        writer.close()


@contextlib.contextmanager
def parent_hub(tmp_path: Path, broker: Broker) -> Iterator[tuple[HubProcess, int, DevCertificates]]:
    """A parent ``edgehub run`` whose HTTP head serves MQTT over WebSocket (TLS, dev certificate), trusting
    ``child/$edgeHub``, routing upstream to ``broker``."""
    folder = tmp_path / "parent"
    certificates = ensure_dev_certificates(folder / "data" / "certs", ["localhost", HUB_NAME])
    config = write_config(tmp_path / "parent.json", TO_UPSTREAM, [
        {"deviceId": "child", "moduleId": "$edgeHub", "primaryKey": key("child")},
    ])
    http_port = free_port()
    env = upstream_env(broker.port, key("parent"), device_id="parent") | NO_PROXY_ENV | {
        "IotHubHostName": HUB_NAME, "httpSettings__enabled": "true", "httpSettings__port": str(http_port),
    }
    with HubProcess(folder, config, env) as parent:
        yield parent, http_port, certificates


def child_env(parent_port: int, ca_file: Path, proxy_url: str) -> dict[str, str]:
    """A child hub whose upstream is MqttWs over TLS to the parent, through ``https_proxy``."""
    return upstream_env(parent_port, key("child"), device_id="child", tls=True) | NO_PROXY_ENV | {
        "UpstreamProtocol": "MqttWs", "UpstreamCaFile": str(ca_file), "IotHubHostName": HUB_NAME,
        "https_proxy": proxy_url,
    }


def send_through(
    tmp_path: Path, env: dict[str, str], device: DeviceFactory, observer: Observer
) -> HubProcess:
    """50 messages from d1 into a child hub with ``env``; returns once the observer upstream has them all."""
    config = write_config(tmp_path / "child.json", TO_UPSTREAM, [{"deviceId": "d1", "primaryKey": key("d1")}])
    with HubProcess(tmp_path / "child", config, env) as child:
        sensor = device("d1", int(child.env["mqttSettings__plainPort"]))
        sensor.publish(range(50), "via=proxy")
        sensor.wait_acked(30)
        observer.wait_for((("d1", n) for n in range(50)), 60)
    return child


def test_mqtt_ws_without_a_proxy_reaches_the_parent_s_websocket_directly(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory,
) -> None:
    with parent_hub(tmp_path, broker) as (_, http_port, certificates):
        env = child_env(http_port, certificates.ca_file, "") | {"no_proxy": "*"}
        child = send_through(tmp_path, env, device, observer)
    assert "through the HTTPS proxy" not in child.output
    assert f"upstream connected to wss://127.0.0.1:{http_port}/$iothub/websocket" in child.output


def test_mqtt_ws_reaches_the_parent_through_tinyproxy_with_basic_credentials(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory,
) -> None:
    with parent_hub(tmp_path, broker) as (_, http_port, certificates):
        proxy = Tinyproxy(tmp_path / "tinyproxy", connect_port=http_port, basic_auth=("edge", "pr0xy-pass"))
        try:
            env = child_env(http_port, certificates.ca_file, f"http://edge:pr0xy-pass@127.0.0.1:{proxy.port}")
            child = send_through(tmp_path, env, device, observer)
        finally:
            proxy.stop()
    assert f"CONNECT 127.0.0.1:{http_port} HTTP/1.1" in proxy.log()
    assert f"through the HTTPS proxy http://edge:***@127.0.0.1:{proxy.port} (https_proxy)" in child.output
    assert "pr0xy-pass" not in child.output
    assert {a.topic.split("/")[1] for a in observer.snapshot()} == {"d1"}


def test_mqtt_ws_through_an_https_proxy_runs_tls_to_the_parent_inside_tls_to_the_proxy(
    tmp_path: Path, broker: Broker, observer: Observer, device: DeviceFactory,
) -> None:
    with parent_hub(tmp_path, broker) as (_, http_port, certificates):
        proxy = Tinyproxy(tmp_path / "tinyproxy", connect_port=http_port)
        terminator = TlsTerminator(certificates, proxy.port)  # the child trusts its certificate (dev CA)
        try:
            env = child_env(http_port, certificates.ca_file, f"https://localhost:{terminator.port}")
            child = send_through(tmp_path, env, device, observer)
        finally:
            terminator.stop()
            proxy.stop()
    assert terminator.handshakes >= 1
    assert f"CONNECT 127.0.0.1:{http_port} HTTP/1.1" in proxy.log()
    assert f"through the HTTPS proxy https://localhost:{terminator.port}" in child.output


def test_a_proxy_that_refuses_the_connect_is_named_with_its_status_line_in_the_hub_log(
    tmp_path: Path,
) -> None:
    parent_port = free_port()  # nothing needs to listen: the proxy refuses before connecting
    proxy = Tinyproxy(tmp_path / "tinyproxy", connect_port=parent_port + 1 if parent_port < 65535 else 1)
    try:
        ca = ensure_dev_certificates(tmp_path / "ca", ["localhost"]).ca_file
        env = child_env(parent_port, ca, f"http://127.0.0.1:{proxy.port}")
        config = write_config(tmp_path / "child.json", TO_UPSTREAM, [])
        with HubProcess(tmp_path / "child", config, env) as child:
            line = child.wait_for_line("refused CONNECT", 15)
    finally:
        proxy.stop()
    assert (f"the proxy http://127.0.0.1:{proxy.port} refused CONNECT 127.0.0.1:{parent_port}: "
            "HTTP/1.1 403 Access violation") in line
    assert f"Refused CONNECT method on port {parent_port}" in proxy.log()
