"""Twin change notifications: the message a reported-properties change becomes, for routes.

Builds a Message only (the hub ingests it); the marker is edgeHub's ``messageType`` system
property, read by edgehub.routing to give the source ``/twinChangeNotifications``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from edgehub.message import Identity, Message, SystemProperty
from edgehub.twins.document import dumps

EDGE_HUB_MODULE: Final = "$edgeHub"
MESSAGE_TYPE: Final = "messageType"
TWIN_CHANGE_NOTIFICATION: Final = "twinChangeNotification"
"""edgeHub Core Constants.TwinChangeNotificationMessageType and ...MessageSchema."""
REPORTER_DEVICE_ID: Final = "rpSenderDeviceId"
REPORTER_MODULE_ID: Final = "rpSenderModuleId"
"""edgeHub SystemProperties.RpConnection{Device,Module}IdInternal: who reported."""


def twin_change_message(
    identity: Identity, patch: Mapping[str, Any], version: int, *, edge_device_id: str, enqueued_ms: int = 0,
) -> Message:
    """The notification of ``identity``'s reported ``patch`` that made ``version``.

    System properties as edgeHub's DeviceMessageHandler.UpdateReportedPropertiesAsync sets
    them: ``messageType`` and ``messageSchema`` twinChangeNotification, sent by
    ``{edge_device_id}/$edgeHub``, the reporter in rpSenderDeviceId/rpSenderModuleId.
    The body has IoT Hub's twin change event shape, ``{"version": n, "properties":
    {"reported": patch}}`` (edgeHub forwards the bare patch, so its TWIN_CHANGE_INCLUDES
    paths, which start ``properties.reported.``, could never match), as JSON.
    """
    system = {
        MESSAGE_TYPE: TWIN_CHANGE_NOTIFICATION,
        SystemProperty.MESSAGE_SCHEMA: TWIN_CHANGE_NOTIFICATION,
        SystemProperty.CONTENT_TYPE: "application/json",
        SystemProperty.CONTENT_ENCODING: "utf-8",
        SystemProperty.CONNECTION_DEVICE_ID: edge_device_id,
        SystemProperty.CONNECTION_MODULE_ID: EDGE_HUB_MODULE,
        REPORTER_DEVICE_ID: identity.device_id,
    }
    if identity.module_id is not None:
        system[REPORTER_MODULE_ID] = identity.module_id
    body = dumps({"version": version, "properties": {"reported": dict(patch)}})
    return Message(body, {}, system, enqueued_ms)
