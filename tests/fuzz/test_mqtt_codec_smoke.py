"""The bounded smoke run of the codec fuzz target in ``make test`` (``make fuzz`` runs atheris)."""

from __future__ import annotations

import random

from edgehub.mqtt.encode import encode
from edgehub.mqtt.packets import MQTT_5, Publish, Subscribe, Subscription
from tests.fuzz.mqtt_codec import CONNECTS, one_input


def test_random_and_mutated_bytes_never_crash_the_codec_or_the_session() -> None:
    rng = random.Random(15)
    seeds = [*CONNECTS.values(), encode(Publish("devices/edge/modules/filter/messages/events/", b"x", 1,
                                                packet_id=3), MQTT_5),
             encode(Subscribe(2, (Subscription("devices/edge/modules/filter/inputs/#", 1),)))]
    for n in range(3000):
        if n % 2:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            one_input(bytes([rng.randrange(256)]) + bytes(data))
        else:
            one_input(rng.randbytes(rng.randint(0, 300)))
