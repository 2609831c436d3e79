"""The HTTP head (aiohttp): MQTT over WebSocket at /$iothub/websocket, edgeHub's direct-method
API, REST telemetry, health, readiness, /stats and /metrics.

Nothing here is imported unless ``httpSettings__enabled`` is true (aiohttp included).
"""
