"""A conformance role played by the azure-iot-device SDK; runs in .venv-azure.

The SDK pins paho-mqtt < 2, so it cannot share the main venv; tests start this
script as a subprocess. Prints one JSON line per event; bounded in time.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message


def _client(connection_string: str, ca_file: str) -> IoTHubDeviceClient | IoTHubModuleClient:
    with open(ca_file) as pem:
        ca = pem.read()
    kind = IoTHubModuleClient if "ModuleId=" in connection_string else IoTHubDeviceClient
    return kind.create_from_connection_string(
        connection_string, server_verification_cert=ca, connection_retry=False, keep_alive=30
    )


def send(args: argparse.Namespace) -> int:
    client = _client(args.connection_string, args.ca_file)
    client.connect()
    for n in range(args.count):
        message = Message(json.dumps({"n": n, "source": "azure-sdk"}))
        message.content_type = "application/json"
        message.content_encoding = "utf-8"
        message.message_id = f"{args.message_id_prefix}{n}"
        message.custom_properties["seq"] = str(n)
        message.custom_properties["label"] = args.label
        if args.output:
            client.send_message_to_output(message, args.output)
        else:
            client.send_message(message)
        print(json.dumps({"event": "sent", "n": n}), flush=True)
    client.shutdown()
    return 0


def _entry(message: Message) -> dict[str, object]:
    return {
        "event": "received",
        "input": message.input_name,
        "body": message.data.decode() if isinstance(message.data, bytes) else message.data,
        "properties": dict(message.custom_properties),
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "message_id": message.message_id,
    }


def receive(args: argparse.Namespace) -> int:
    """Print each message the ``on_message_received`` handler gets. The SDK runs handlers on a
    pool of 4 threads, so the printed order need not be the arrival order."""
    client = _client(args.connection_string, args.ca_file)
    count = 0
    printing = threading.Lock()
    done = threading.Event()

    def on_message(message: Message) -> None:
        nonlocal count
        with printing:
            print(json.dumps(_entry(message)), flush=True)
            count += 1
            if count >= args.count:
                done.set()

    client.on_message_received = on_message
    client.connect()
    with printing:
        print(json.dumps({"event": "connected"}), flush=True)
    done.wait(args.timeout)
    client.shutdown()
    return 0 if done.is_set() else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["send", "receive"])
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--output", default="", help="send: the module output to send to")
    parser.add_argument("--message-id-prefix", default="azure-")
    parser.add_argument("--label", default="", help="value of the custom property 'label'")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    started = time.monotonic()
    code = send(args) if args.role == "send" else receive(args)
    print(json.dumps({"event": "done", "seconds": round(time.monotonic() - started, 3)}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
