"""The atheris harness of the MQTT codec and the head's session (``make fuzz``).

Feeds arbitrary bytes to ``edgehub.mqtt.decode.Decoder`` (both protocol levels, split at an
arbitrary point) and to a server-side ``MqttSession``; MqttError is the only failure allowed,
anything else is a crash. Where atheris is not installed, a Hypothesis loop runs the same target.
"""

from __future__ import annotations

import sys

from edgehub.heads.mqtt.policy import ConnectRequest
from edgehub.heads.mqtt.session import MqttSession
from edgehub.heads.mqtt.sessions import SessionTable
from edgehub.message import Identity
from edgehub.mqtt.decode import Decoder
from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import MQTT_5, MQTT_311, Connect
from edgehub.mqtt.wire import MqttError

CONNECTS = {version: encode(Connect(version, "edge/filter", True, 30, "u", b"secret"), version)
            for version in (MQTT_311, MQTT_5)}


def _authenticate(request: ConnectRequest) -> Identity:
    return Identity.parse(request.client_id)


def one_input(data: bytes) -> None:
    """The fuzz target: never raises anything but MqttError from the decoder."""
    if not data:
        return
    version = MQTT_5 if data[0] & 1 else MQTT_311
    split = data[0] % (len(data) + 1)
    decoder = Decoder(max_packet_size=1 << 16, version=version)
    try:
        decoder.feed(data[1:split])
        decoder.feed(data[split:])
    except MqttError:
        pass
    # The session: raw bytes first, and after a valid CONNECT (it must turn any error into a close).
    for prefix in (b"", CONNECTS[version]):
        session = MqttSession(_authenticate, SessionTable(10), 0.0)
        session.receive_data(prefix + data[1:split], 1.0)
        session.receive_data(data[split:], 2.0)
        session.data_to_send()
        session.tick(100.0)


def main() -> None:
    try:
        import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]  # x86_64 dev extra only
    except ImportError:
        from hypothesis import given, settings
        from hypothesis import strategies as st

        print("atheris is not installed: running the Hypothesis fallback (100,000 examples)")

        @settings(max_examples=100_000, deadline=None, database=None)
        @given(st.binary(max_size=4096))
        def run(data: bytes) -> None:
            one_input(data)

        run()
        return
    atheris.instrument_all()  # coverage feedback for every module imported so far (the codec, the session)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
