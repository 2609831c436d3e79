"""The MQTT 3.1.1 / 5.0 wire format shared by the server head and the upstream client: packets and codec.

Sans-I/O: bytes in, packet values out and back; no sockets, no asyncio, no session rules.
"""
