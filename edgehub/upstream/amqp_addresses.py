"""The IoT Hub AMQP link addresses the upstream link attaches (IoT Hub's device endpoints over AMQP).

Pure functions of identities; the message mapping itself is edgehub.amqp.messages (shared with the head).
"""

from __future__ import annotations

from edgehub.message import Identity


def telemetry_address(sender: Identity) -> str:
    """The sender link address of ``sender``'s telemetry: ``/devices/{d}[/modules/{m}]/messages/events``."""
    if sender.module_id:
        return f"/devices/{sender.device_id}/modules/{sender.module_id}/messages/events"
    return f"/devices/{sender.device_id}/messages/events"


def devicebound_address(device_id: str) -> str:
    """The receiver link address of a device's cloud-to-device messages."""
    return f"/devices/{device_id}/messages/devicebound"
