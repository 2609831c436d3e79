"""Module and device twins and direct-method calls, free of any protocol.

Heads (MQTT, HTTP, later AMQP) and the upstream link adapt their wire forms onto these
ports; nothing here knows a topic, a link address or a socket.
"""
