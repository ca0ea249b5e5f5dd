"""An outside load tool for `cargo xtask bench --only qos0-raw`: raw MQTT
3.1.1 publishers written without any MQTT library, as issue 26 measured
from outside (pre-built QoS 0 PUBLISH frames, 64-byte payloads, several
publishers, one subscriber), so the proxy's cost per message is checked
with a load shape other than mqtt-bench's.

    python3 raw-qos0.py --port P [--username U] [--publishers 4]
                        [--messages 1000000] [--payload 64] [--timeout 120]

Prints one JSON line: {"scenario", "rate" (messages/s the subscriber
received), "received", "sent", "seconds"}.
"""

import argparse
import json
import socket
import struct
import threading
import time

TOPIC = b"bench/raw"


def remaining(length):
    out = bytearray()
    while True:
        byte = length % 128
        length //= 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def connect(port, client_id, username):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    flags = 0x02 | (0x80 if username else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack(">H", 60)
    body += struct.pack(">H", len(client_id)) + client_id
    if username:
        body += struct.pack(">H", len(username)) + username
    sock.sendall(b"\x10" + remaining(len(body)) + body)
    connack = recv_exactly(sock, 4)
    if connack[3] != 0:
        raise SystemExit(f"CONNACK {connack.hex()} for {client_id!r}")
    return sock


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("connection closed")
        data += chunk
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username", default="")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0)
    opts = parser.parse_args()
    username = opts.username.encode()
    run = str(time.monotonic_ns())[-6:].encode()

    subscriber = connect(opts.port, b"raw-sub-" + run, username)
    subscribe = struct.pack(">H", 1) + struct.pack(">H", len(TOPIC)) + TOPIC + b"\x00"
    subscriber.sendall(b"\x82" + remaining(len(subscribe)) + subscribe)
    recv_exactly(subscriber, 5)

    body = struct.pack(">H", len(TOPIC)) + TOPIC + b"x" * opts.payload
    frame = b"\x30" + remaining(len(body)) + body
    per = opts.messages // opts.publishers
    batch = 512
    publishers = [
        connect(opts.port, b"raw-pub-%d-" % i + run, username) for i in range(opts.publishers)
    ]
    chunk = frame * batch

    def publish(sock):
        sent = 0
        while sent + batch <= per:
            sock.sendall(chunk)
            sent += batch
        if per - sent:
            sock.sendall(frame * (per - sent))

    expected = per * opts.publishers * len(frame)
    threads = [threading.Thread(target=publish, args=(s,)) for s in publishers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    received = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    subscriber.settimeout(5.0)
    deadline = started + opts.timeout
    while received < expected and time.monotonic() < deadline:
        try:
            n = subscriber.recv_into(view)
        except socket.timeout:
            break
        if not n:
            break
        received += n
    seconds = time.monotonic() - started
    for thread in threads:
        thread.join()
    messages = received // len(frame)
    print(json.dumps({
        "scenario": "qos0-raw",
        "rate": messages / seconds if seconds > 0 else 0.0,
        "received": messages,
        "sent": per * opts.publishers,
        "seconds": seconds,
    }))


if __name__ == "__main__":
    main()
