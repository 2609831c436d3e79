"""Twin change notifications: edgeHub's system properties, IoT Hub's body, routed from their source."""

from __future__ import annotations

import json

from edgehub.message import Identity
from edgehub.routing.route import MESSAGE_TYPE, TWIN_CHANGE_MESSAGE_TYPE, parse_route
from edgehub.routing.router import Router
from edgehub.twins import notification
from edgehub.twins.notification import twin_change_message


def test_notification_is_sent_by_the_hub_for_the_reporter() -> None:
    message = twin_change_message(Identity("edge", "filter"), {"a": 1, "b": None}, 5, edge_device_id="edge")
    assert json.loads(message.body) == {"version": 5, "properties": {"reported": {"a": 1, "b": None}}}
    assert message.system_properties == {
        "messageType": "twinChangeNotification", "messageSchema": "twinChangeNotification",
        "contentType": "application/json", "contentEncoding": "utf-8",
        "connectionDeviceId": "edge", "connectionModuleId": "$edgeHub",
        "rpSenderDeviceId": "edge", "rpSenderModuleId": "filter",
    }
    device = twin_change_message(Identity("sensor"), {}, 2, edge_device_id="edge")
    assert "rpSenderModuleId" not in device.system_properties


def test_twins_and_routing_agree_on_the_marker() -> None:
    assert (notification.MESSAGE_TYPE, notification.TWIN_CHANGE_NOTIFICATION) == (
        MESSAGE_TYPE, TWIN_CHANGE_MESSAGE_TYPE,
    )


def test_notification_routes_by_its_reported_paths() -> None:
    route = parse_route(
        'FROM /twinChangeNotifications WHERE TWIN_CHANGE_INCLUDES(properties.reported.a) '
        'INTO BrokeredEndpoint("/modules/watch/inputs/twins")'
    )
    router = Router([route])
    changed = twin_change_message(Identity("edge", "filter"), {"a": 1}, 2, edge_device_id="edge")
    other = twin_change_message(Identity("edge", "filter"), {"b": 1}, 3, edge_device_id="edge")
    assert [match.endpoint for match in router.match(changed)] == ["/modules/watch/inputs/twins"]
    assert router.match(other) == ()
