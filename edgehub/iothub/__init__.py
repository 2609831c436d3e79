"""The IoT Hub wire conventions both sides of the hub speak: MQTT topic shapes and property bags.

Pure value work shared by the MQTT head (clients below) and the upstream link (the parent above); no I/O.
"""
