"""The generic MQTT broker core: topic trie, shared subscriptions, retained messages, wills,
ACLs and per-session queues for plain MQTT topics outside the IoT Hub scheme.

Protocol-free: no packets, no sockets, no asyncio; the MQTT head translates packets to calls
here, and durability goes through the BrokerStore port (edgehub.broker.store).
"""
