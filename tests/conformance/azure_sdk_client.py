"""A conformance role played by the azure-iot-device SDK; runs in .venv-azure.

The SDK pins paho-mqtt < 2, so it cannot share the main venv; tests start this
script as a subprocess. Prints one JSON line per event; bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodRequest, MethodResponse


def _client(connection_string: str, ca_file: str) -> IoTHubDeviceClient | IoTHubModuleClient:
    with open(ca_file) as pem:
        ca = pem.read()
    kind = IoTHubModuleClient if "ModuleId=" in connection_string else IoTHubDeviceClient
    # AZURE_SDK_WEBSOCKETS=1: MQTT over WebSocket (the SDK then dials wss://{GatewayHostName}:443).
    websockets = os.environ.get("AZURE_SDK_WEBSOCKETS") == "1"
    return kind.create_from_connection_string(
        connection_string, server_verification_cert=ca, connection_retry=False, keep_alive=30,
        websockets=websockets,
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


def twin(args: argparse.Namespace) -> int:
    """A module that reads its twin, reports properties, prints desired patches and answers
    direct methods (echoing the payload), until ``--count`` patches arrived or the timeout."""
    client = _client(args.connection_string, args.ca_file)
    patches = threading.Event()
    seen = 0
    printing = threading.Lock()

    def on_patch(patch: dict[str, object]) -> None:
        nonlocal seen
        with printing:
            print(json.dumps({"event": "desired", "patch": patch}), flush=True)
            seen += 1
            if seen >= args.count:
                patches.set()

    def on_method(request: MethodRequest) -> None:
        with printing:
            event = {"event": "method", "name": request.name, "payload": request.payload}
            print(json.dumps(event), flush=True)
        client.send_method_response(MethodResponse.create_from_method_request(
            request, 200, {"echo": request.payload, "method": request.name}))

    client.on_twin_desired_properties_patch_received = on_patch
    client.on_method_request_received = on_method
    client.connect()
    got = client.get_twin()
    print(json.dumps({"event": "twin", "twin": got}), flush=True)
    client.patch_twin_reported_properties({"reportedBy": "azure-sdk", "label": args.label})
    after = client.get_twin()
    print(json.dumps({"event": "reported", "twin": after}), flush=True)
    with printing:
        print(json.dumps({"event": "ready"}), flush=True)
    patches.wait(args.timeout) if args.count else time.sleep(0)
    client.shutdown()
    return 0 if patches.is_set() or not args.count else 1


def invoke(args: argparse.Namespace) -> int:
    """Invoke ``--method`` on ``--target`` (d/m) through the hub's HTTPS method API and print the result."""
    # invoke_method works only on a client made from the edge environment: here its local-debug
    # form (EdgeHubConnectionString + EdgeModuleCACertificateFile), which VS Code sets for modules.
    os.environ["EdgeHubConnectionString"] = args.connection_string  # noqa: SIM112 - the SDK's own spelling
    os.environ["EdgeModuleCACertificateFile"] = args.ca_file  # noqa: SIM112 - the SDK's own spelling
    client = IoTHubModuleClient.create_from_edge_environment(connection_retry=False)
    device, _, module_id = args.target.partition("/")
    result = client.invoke_method(
        {"methodName": args.method, "payload": {"n": 1, "label": args.label},
         "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 5},
        device, module_id or None,
    )
    print(json.dumps({"event": "invoked", "result": result}), flush=True)
    client.shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["send", "receive", "twin", "invoke"])
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--output", default="", help="send: the module output to send to")
    parser.add_argument("--message-id-prefix", default="azure-")
    parser.add_argument("--label", default="", help="value of the custom property 'label'")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--target", default="", help="invoke: the d/m whose method to call")
    parser.add_argument("--method", default="echo", help="invoke: the method name")
    args = parser.parse_args()
    started = time.monotonic()
    roles = {"send": send, "receive": receive, "twin": twin, "invoke": invoke}
    code = roles[args.role](args)
    print(json.dumps({"event": "done", "seconds": round(time.monotonic() - started, 3)}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
