"""AMQP 1.0 glue around python-qpid-proton's engine, shared by the AMQP head and the upstream client.

Sans-I/O only: bytes in, bytes out, proton events to a handler; no asyncio, sockets or ssl here.
"""
