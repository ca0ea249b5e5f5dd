"""Eclipse paho-mqtt as a device with a client certificate
(examples/mqtt.proxy.x509): its client id is the certificate's CN
(--identity) and it may use only devices/<identity>/#. Checks, over MQTT/TLS
or secure WebSocket:

  connect          MQTT 5: an empty client id is assigned the identity
                   (CONNACK Assigned Client Identifier); 3.1.1: the identity
  subscribe        devices/<identity>/# is granted QoS 1
  subscribe_other  devices/<other>/# is refused: 0x87 (3.1.1: 0x80)
  publish          QoS 1 to devices/<identity>/telemetry, acknowledged and
                   received back on the subscription
  publish_other    QoS 1 to devices/<other>/telemetry: MQTT 5 PUBACK 0x87;
                   3.1.1 has no code: acknowledged (and dropped by the proxy,
                   which the test checks with a subscriber of its own)
  marker           QoS 1 to devices/<identity>/marker, received back: sent
                   after the refused publish, so a subscriber of devices/#
                   that gets it would have got that one first
  client_id        another connection with the certificate and client id
                   <other> is refused: "Client identifier not valid" (5.0:
                   0x85; paho reports 3.1.1's return code 2 by that name)
  disconnect       a clean DISCONNECT

    python device.py --url mqtts://localhost:8883 --protocol 4|5 --ca ca.pem
                     --cert device.pem --key device.key
                     --identity device-1 --other device-2 [--timeout-ms 30000]
    python device.py --url wss://localhost:7143/mqtt ... (secure WebSocket)

Prints one JSON line per check ({"check", "ok", "detail"}; a failure adds
"error" and "code") and a last line {"done": true, "ok": ...}; stops at the
first failing check. Exit code 0 when every check passed, 1 when one failed,
2 on bad arguments, 3 on the overall timeout.
"""

import argparse
import json
import os
import sys
import threading
import traceback
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

STEP_S = 10.0
PORTS = {"mqtts": 8883, "wss": 443}


def report(line):
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--protocol", type=int, choices=[4, 5], required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--other", required=True)
    parser.add_argument("--timeout-ms", type=int, default=30000)
    try:
        opts = parser.parse_args()
    except SystemExit:
        report({"check": "arguments", "ok": False, "detail": " ".join(sys.argv[1:])})
        raise
    url = urllib.parse.urlsplit(opts.url)
    if url.scheme not in PORTS:
        report({"check": "arguments", "ok": False, "detail": f"not mqtts:// or wss://: {opts.url}"})
        sys.exit(2)
    opts.scheme = url.scheme
    opts.host = url.hostname
    opts.port = url.port or PORTS[url.scheme]
    opts.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return opts


OPTS = parse_args()
V5 = OPTS.protocol == 5
IDENTITY = OPTS.identity
OTHER = OPTS.other


class Failed(Exception):
    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def expect(condition, message, code=None):
    if not condition:
        raise Failed(message, code)


class Device:
    """A paho client with the certificate, whose callbacks feed conditions."""

    def __init__(self, client_id):
        self.client_id = client_id
        kwargs = {} if V5 else {"clean_session": True}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if V5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            transport="websockets" if OPTS.scheme == "wss" else "tcp",
            **kwargs,
        )
        if OPTS.scheme == "wss":
            self.client.ws_set_options(path=OPTS.path)
        self.client.tls_set(ca_certs=OPTS.ca, certfile=OPTS.cert, keyfile=OPTS.key)
        self.lock = threading.Condition()
        self.connack = None
        self.connack_properties = None
        self.subacks = {}
        self.pubacks = {}
        self.messages = []
        self.disconnected = None
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        connect_kwargs = {"clean_start": True} if V5 else {}
        self.client.connect(OPTS.host, OPTS.port, keepalive=30, **connect_kwargs)
        self.client.loop_start()
        self.wait(f"CONNACK for {client_id!r}", lambda: self.connack)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.connack = reason_code
            self.connack_properties = properties
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.lock:
            self.subacks[mid] = [code.value for code in reason_codes]
            self.lock.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.pubacks[mid] = reason_code
            self.lock.notify_all()

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append(message)
            self.lock.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.disconnected = reason_code
            self.lock.notify_all()

    def wait(self, what, condition):
        with self.lock:
            found = self.lock.wait_for(condition, timeout=STEP_S)
        expect(found is not None and found is not False, f"timed out after {STEP_S} s waiting for {what}")
        return found

    def subscribe(self, topic):
        result, mid = self.client.subscribe(topic, qos=1)
        expect(result == mqtt.MQTT_ERR_SUCCESS, f"SUBSCRIBE not sent: {result}")
        return self.wait(f"SUBACK for {topic}", lambda: self.subacks.get(mid))

    def publish(self, topic, payload):
        info = self.client.publish(topic, payload, qos=1)
        return self.wait(f"PUBACK for {topic}", lambda: self.pubacks.get(info.mid))

    def next_message(self, topic):
        def take():
            for index, message in enumerate(self.messages):
                if message.topic == topic:
                    return self.messages.pop(index)
            return None

        return self.wait(f"a message on {topic}", take)

    def disconnect(self):
        self.client.disconnect()
        self.wait(f"{self.client_id} to disconnect", lambda: self.disconnected is not None)
        self.client.loop_stop()

    def close(self):
        self.client.loop_stop()


device = {}


def check_connect():
    session = Device("" if V5 else IDENTITY)
    device["session"] = session
    expect(not session.connack.is_failure, f"CONNACK {session.connack}", session.connack.value)
    if V5:
        assigned = getattr(session.connack_properties, "AssignedClientIdentifier", None)
        expect(assigned == IDENTITY, f"assigned client id {assigned!r}, not {IDENTITY!r}")
        return f"empty client id assigned {assigned!r} over {OPTS.url}"
    return f"connected as {IDENTITY} over {OPTS.url}"


def check_subscribe():
    granted = device["session"].subscribe(f"devices/{IDENTITY}/#")
    expect(granted == [1], f"granted {granted}")
    return f"devices/{IDENTITY}/# granted QoS 1"


def check_subscribe_other():
    granted = device["session"].subscribe(f"devices/{OTHER}/#")
    expected = 0x87 if V5 else 0x80
    expect(granted == [expected], f"SUBACK {granted}, not [{expected}]")
    return f"devices/{OTHER}/# refused with SUBACK {granted[0]}"


def check_publish():
    topic = f"devices/{IDENTITY}/telemetry"
    ack = device["session"].publish(topic, b"21.5")
    expect(not ack.is_failure, f"PUBACK {ack} ({ack.value})", ack.value)
    message = device["session"].next_message(topic)
    expect(message.payload == b"21.5", f"received {message.payload!r}")
    return f"published to {topic} and received it back"


def check_publish_other():
    topic = f"devices/{OTHER}/telemetry"
    ack = device["session"].publish(topic, b"forged")
    if V5:
        expect(ack.value == 0x87, f"PUBACK {ack} ({ack.value}), not 135", ack.value)
        return f"PUBACK {ack.value} ({ack}) for {topic}"
    expect(not ack.is_failure, f"PUBACK {ack}")
    return f"PUBACK (3.1.1 has no reason code) for {topic}"


def check_marker():
    topic = f"devices/{IDENTITY}/marker"
    ack = device["session"].publish(topic, b"marker")
    expect(not ack.is_failure, f"PUBACK {ack} ({ack.value})", ack.value)
    device["session"].next_message(topic)
    return f"published to {topic} and received it back"


def check_client_id():
    other = Device(OTHER)
    other.close()
    code = other.connack
    expect(code.is_failure, f"client id {OTHER} was accepted")
    expect(str(code) == "Client identifier not valid", f"CONNACK {code} ({code.value})", code.value)
    return f"client id {OTHER} refused: {code} ({code.value})"


def check_disconnect():
    device["session"].disconnect()
    return "disconnected"


def main():
    timer = threading.Timer(OPTS.timeout_ms / 1000, overall_timeout)
    timer.daemon = True
    timer.start()
    checks = [
        ("connect", check_connect),
        ("subscribe", check_subscribe),
        ("subscribe_other", check_subscribe_other),
        ("publish", check_publish),
        ("publish_other", check_publish_other),
        ("marker", check_marker),
        ("client_id", check_client_id),
        ("disconnect", check_disconnect),
    ]
    ok = True
    for name, run in checks:
        try:
            report({"check": name, "ok": True, "detail": run()})
        except Exception as error:  # noqa: BLE001 - every failure is reported
            detail = str(error) if isinstance(error, Failed) else traceback.format_exc()
            code = error.code if isinstance(error, Failed) else None
            report({"check": name, "ok": False, "detail": detail, "error": str(error), "code": code})
            ok = False
            break
    report({"done": True, "ok": ok})
    sys.stdout.flush()
    # Client threads left running after a failure must not keep the process
    # alive.
    os._exit(0 if ok else 1)


def overall_timeout():
    report(
        {
            "check": "timeout",
            "ok": False,
            "detail": f"the paho-mqtt device script did not finish within {OPTS.timeout_ms} ms",
        }
    )
    os._exit(3)


if __name__ == "__main__":
    main()
