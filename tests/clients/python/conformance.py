"""Eclipse paho-mqtt against an MQTT server (the proxy, in the tests): connect,
subscribe, publish and receive at QoS 0/1/2, a retained message for a late
subscriber, a will published when a client drops without DISCONNECT, user
properties (MQTT 5 only), and a clean disconnect.

    python conformance.py --port 1883 --protocol 4|5 [--host 127.0.0.1]
                          [--prefix zilla-test] [--timeout-ms 30000]
    python conformance.py --url ws://127.0.0.1:7114/mqtt?access_token=... --protocol 4|5
                          [--ca test-ca.pem] [--username 'Bearer ...'] [...]

--url connects over WebSocket (ws://, wss://: paho's transport="websockets"
with the URL's path and query) or TLS (mqtts://) instead of TCP to
--host:--port; --ca trusts a CA (PEM) for wss:// and mqtts://; --username is
sent in CONNECT, with --password when given. Prints one JSON line per check ({"check", "ok", "detail"}; a
failure adds "error", its message, and "code", the CONNACK reason code when
the server refused the CONNECT) and a last line {"done": true, "ok": ...};
stops at the first failing check. Exit code 0 when every check passed, 1 when
one failed, 2 on bad arguments, 3 on the overall timeout.
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time
import traceback
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

STEP_S = 10.0


def report(line):
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--url", default="")
    parser.add_argument("--ca", default="")
    parser.add_argument("--username", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--protocol", type=int, choices=[4, 5], required=True)
    parser.add_argument("--prefix", default="zilla-test")
    parser.add_argument("--timeout-ms", type=int, default=30000)
    try:
        opts = parser.parse_args()
        if not opts.port and not opts.url:
            parser.error("--port (or --url) is required")
        return opts
    except SystemExit:
        report({"check": "arguments", "ok": False, "detail": " ".join(sys.argv[1:])})
        raise


class Target:
    """Where to connect: --url, or MQTT over TCP to --host:--port."""

    DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}

    def __init__(self, opts):
        if not opts.url:
            self.scheme, self.host, self.port, self.path = "mqtt", opts.host, opts.port, None
            return
        url = urllib.parse.urlsplit(opts.url)
        if url.scheme not in self.DEFAULT_PORTS:
            report({"check": "arguments", "ok": False, "detail": f"unsupported URL scheme in {opts.url}"})
            sys.exit(2)
        self.scheme = url.scheme
        self.host = url.hostname
        self.port = url.port or self.DEFAULT_PORTS[url.scheme]
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")

    @property
    def websockets(self):
        return self.scheme in ("ws", "wss")

    @property
    def tls(self):
        return self.scheme in ("wss", "mqtts")


OPTS = parse_args()
TARGET = Target(OPTS)
V5 = OPTS.protocol == 5
PROTOCOL = mqtt.MQTTv5 if V5 else mqtt.MQTTv311
PREFIX = OPTS.prefix


def overall_timeout():
    report(
        {
            "check": "timeout",
            "ok": False,
            "detail": f"the paho-mqtt conformance script did not finish within {OPTS.timeout_ms} ms",
        }
    )
    os._exit(3)


class Failed(Exception):
    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def expect(condition, message, code=None):
    if not condition:
        raise Failed(message, code)


class Session:
    """A paho client whose callbacks feed conditions the checks wait on."""

    def __init__(self, client_id, will=None, background=True):
        self.client_id = client_id
        kwargs = {} if V5 else {"clean_session": True}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=PROTOCOL,
            reconnect_on_failure=False,
            transport="websockets" if TARGET.websockets else "tcp",
            **kwargs,
        )
        if TARGET.websockets:
            self.client.ws_set_options(path=TARGET.path)
        if TARGET.tls:
            self.client.tls_set(ca_certs=OPTS.ca or None)
        if OPTS.username:
            self.client.username_pw_set(OPTS.username, OPTS.password or None)
        self.lock = threading.Condition()
        self.connack = None
        self.subacks = {}
        self.messages = []
        self.disconnected = None
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        if will is not None:
            self.client.will_set(**will)
        connect_kwargs = {"clean_start": True} if V5 else {}
        self.client.connect(TARGET.host, TARGET.port, keepalive=30, **connect_kwargs)
        if background:
            self.client.loop_start()
            self.wait("CONNACK", lambda: self.connack)
        else:
            deadline = time.monotonic() + STEP_S
            while self.connack is None:
                expect(time.monotonic() < deadline, f"no CONNACK for {client_id} within {STEP_S} s")
                self.client.loop(timeout=0.1)
        expect(
            not self.connack.is_failure,
            f"CONNACK {self.connack} ({self.connack.value}) for {client_id}",
            self.connack.value,
        )

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.connack = reason_code
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.lock:
            self.subacks[mid] = [code.value for code in reason_codes]
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

    def subscribe(self, topic, qos):
        result, mid = self.client.subscribe(topic, qos=qos)
        expect(result == mqtt.MQTT_ERR_SUCCESS, f"SUBSCRIBE not sent: {result}")
        return self.wait(f"SUBACK for {topic}", lambda: self.subacks.get(mid))

    def publish(self, topic, payload, qos, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=STEP_S)
        expect(info.is_published(), f"the QoS {qos} publish to {topic} did not complete in {STEP_S} s")

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


clients = {}


def check_connect():
    clients["sub"] = Session(f"{PREFIX}-sub")
    clients["pub"] = Session(f"{PREFIX}-pub")
    return f"protocol {OPTS.protocol}, two clients connected"


def check_subscribe():
    granted = clients["sub"].subscribe(f"{PREFIX}/qos/#", 2)
    expect(granted == [2], f"granted {granted}")
    return "granted QoS 2"


def check_publish(qos):
    def run():
        topic = f"{PREFIX}/qos/{qos}"
        payload = f"qos {qos} from paho-mqtt".encode()
        clients["pub"].publish(topic, payload, qos)
        message = clients["sub"].next_message(topic)
        expect(message.payload == payload, f"payload {message.payload!r}")
        expect(message.qos == qos, f"received at QoS {message.qos}")
        return f"received at QoS {qos}"

    return run


def check_retained():
    topic = f"{PREFIX}/retained"
    clients["pub"].publish(topic, b"kept", 1, retain=True)
    late = Session(f"{PREFIX}-late")
    late.subscribe(topic, 1)
    message = late.next_message(topic)
    expect(message.payload == b"kept", f"payload {message.payload!r}")
    expect(message.retain, "the retain flag is set for a late subscriber")
    late.disconnect()
    # Clear it, so that the broker keeps nothing from this run.
    clients["pub"].publish(topic, b"", 1, retain=True)
    return "a late subscriber got the retained message with the retain flag"


def check_will():
    topic = f"{PREFIX}/will"
    clients["sub"].subscribe(topic, 1)
    doomed = Session(
        f"{PREFIX}-will",
        will={"topic": topic, "payload": b"gone", "qos": 1, "retain": False},
        background=False,
    )
    # Reset the connection (SO_LINGER 0): no DISCONNECT, not even a FIN (nor
    # a WebSocket close frame or a TLS close_notify).
    sock = doomed.client.socket()
    sock = getattr(sock, "_socket", sock)  # under paho's WebSocket wrapper
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    message = clients["sub"].next_message(topic)
    expect(message.payload == b"gone", f"payload {message.payload!r}")
    return "the will arrived after the connection was reset"


def check_user_properties():
    topic = f"{PREFIX}/qos/properties"
    user_properties = [("tenant", "acme"), ("repeated", "one"), ("repeated", "two")]
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = user_properties
    properties.ContentType = "text/plain"
    clients["pub"].publish(topic, b"with properties", 1, properties=properties)
    message = clients["sub"].next_message(topic)
    got = getattr(message.properties, "UserProperty", None)
    expect(got == user_properties, f"user properties {got}")
    content_type = getattr(message.properties, "ContentType", None)
    expect(content_type == "text/plain", f"content type {content_type}")
    return "user properties (one repeated) and content type arrived in order"


def check_disconnect():
    clients["sub"].disconnect()
    clients["pub"].disconnect()
    return "both clients sent DISCONNECT"


def main():
    timer = threading.Timer(OPTS.timeout_ms / 1000, overall_timeout)
    timer.daemon = True
    timer.start()
    checks = [
        ("connect", check_connect),
        ("subscribe", check_subscribe),
        ("publish_qos0", check_publish(0)),
        ("publish_qos1", check_publish(1)),
        ("publish_qos2", check_publish(2)),
        ("retained", check_retained),
        ("will", check_will),
    ]
    if V5:
        checks.append(("user_properties", check_user_properties))
    checks.append(("disconnect", check_disconnect))
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
    # Daemon threads of clients left connected after a failure must not keep
    # the process alive.
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    main()
