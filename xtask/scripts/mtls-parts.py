#!/usr/bin/env python3
"""What each part of a mutual-TLS handshake costs the front process, the
proxy's and HAProxy's, measured one front at a time.

    cargo xtask bench --only mtls --quick     # makes target/bench/mtls/
    xtask/scripts/mtls-parts.py [ecdsa|rsa] [CONNECTS] [ROUNDS]

Needs what `cargo xtask bench --only mtls` left in target/bench/mtls (the
certificates, CRLs, zilla.yaml and haproxy.cfg), the load generator
(target/release/mqtt-bench), mosquitto and haproxy on PATH; ZILLA names the
host to run (default target/release/zilla). Starts mosquitto on a free port,
then for each variant of the bench's configurations one front alone (the
proxy, or HAProxy) on free ports, and measures its CPU seconds (user +
system, /proc) over CONNECTS connects, 32 at once (default 3000), in ROUNDS
runs (default 3; the median is printed, with the rate):

- proxy: as benchmarked; without `revocation: crl`; without the x509 guard
  (`authorization` and the guarded route); without both; server-only TLS
  (no `trust`, no client certificate);
- HAProxy: as benchmarked; `no-tls-tickets`; without the issuer check;
  without `crl-file`; server-only TLS;
- both over plain TCP.

Fronts run one at a time, so the figures are comparable within one run of
the script; on a machine shared with other work they move by 10 to 20 %.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DIR = os.path.join(ROOT, "target/bench/mtls")
LOADGEN = os.path.join(ROOT, "target/release/mqtt-bench")
ZILLA = os.environ.get("ZILLA", os.path.join(ROOT, "target/release/zilla"))
TICKS = os.sysconf("SC_CLK_TCK")
ISSUER_CHECK = '    tcp-request session reject unless { ssl_c_i_dn(CN) -m str "Bench Devices CA" }\n'
GUARD = """      authorization:
        x509_0:
          credentials:
            certificates: pem
    routes:
      - guarded:
          x509_0: [device]
        exit: north_mqtt_server
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def no_crl(text):
    text = text.replace("      revocation: crl\n", "")
    return re.sub(r"      crl: \{store: \w+/crl.pem, type: pem\}\n", "", text)


def proxy_variants(yaml, broker):
    """(name, yaml, key's listener binding or plain, client certificate?)"""
    yaml = re.sub(r"(south_tcp_client:(?:\n.*)*?\n      port: )\d+", rf"\g<1>{broker}", yaml)
    no_guard = yaml.replace(GUARD, "    exit: north_mqtt_server\n")
    server_only = no_crl(no_guard).replace("      trust: [ca]\n      mutual: required\n", "")
    return [
        ("as benchmarked", yaml, True),
        ("without revocation: crl", no_crl(yaml), True),
        ("without the x509 guard", no_guard, True),
        ("without both", no_crl(no_guard), True),
        ("server-only TLS", server_only, False),
    ]


def haproxy_variants(cfg, broker):
    cfg = re.sub(r"server broker 127.0.0.1:\d+", f"server broker 127.0.0.1:{broker}", cfg)
    cfg = re.sub(r"frontend mtls_\w+_no_tickets\n(?:    .*\n)*", "", cfg)
    server_only = re.sub(r" ca-file \S+ verify required crl-file \S+", "", cfg)
    return [
        ("as benchmarked", cfg, True),
        ("no-tls-tickets", re.sub(r"(crl-file \S+)", r"\1 no-tls-tickets", cfg), True),
        ("without the issuer check", cfg.replace(ISSUER_CHECK, ""), True),
        ("without crl-file", re.sub(r" crl-file \S+", "", cfg), True),
        ("server-only TLS", server_only.replace(ISSUER_CHECK, ""), False),
    ]


def with_ports(text, pattern):
    """Every listening port matched by `pattern` (group 1) replaced by a free one."""
    ports = []

    def replace(match):
        ports.append(free_port())
        start, end = match.span(1)
        whole = match.group(0)
        offset = match.start(0)
        return whole[: start - offset] + str(ports[-1]) + whole[end - offset:]

    return re.sub(pattern, replace, text), ports


def measure(front, port, args, connects, rounds):
    subprocess.run([LOADGEN, "connect", "--port", str(port), "--connections", "300"] + args,
                   capture_output=True, check=True)
    runs = []
    for _ in range(rounds):
        before = cpu(front.pid)
        out = subprocess.run([LOADGEN, "connect", "--port", str(port), "--connections",
                              str(connects), "--concurrency", "32"] + args,
                             capture_output=True, text=True, check=True)
        spent = cpu(front.pid) - before
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["failures"]:
            sys.exit(f"failures: {result}")
        runs.append((spent / connects * 1000, result["rate"]))
    runs.sort()
    return runs[len(runs) // 2]


def main():
    key = sys.argv[1] if len(sys.argv) > 1 else "ecdsa"
    connects = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    work = os.path.join(DIR, "parts")
    os.makedirs(work, exist_ok=True)
    broker = free_port()
    with open(os.path.join(work, "mosquitto.conf"), "w") as f:
        f.write(f"listener {broker} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n")
    mosquitto = subprocess.Popen(["mosquitto", "-c", os.path.join(work, "mosquitto.conf")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tls = ["--tls-ca", f"{DIR}/{key}/ca.pem", "--tls-server-name", "localhost"]
    cert = ["--tls-cert", f"{DIR}/{key}/client.crt", "--tls-key", f"{DIR}/{key}/client.key"]
    rows = []
    try:
        wait_port(broker)
        yaml = open(os.path.join(DIR, "zilla.yaml")).read()
        cfg = open(os.path.join(DIR, "haproxy.cfg")).read()
        fronts = [("proxy", v) for v in proxy_variants(yaml, broker)]
        fronts += [("haproxy", v) for v in haproxy_variants(cfg, broker)]
        for index, (front, (variant, text, client_cert)) in enumerate(fronts + [
                ("proxy", ("plain TCP", proxy_variants(yaml, broker)[0][1], None)),
                ("haproxy", ("plain TCP", haproxy_variants(cfg, broker)[0][1], None))]):
            if front == "proxy":
                text, _ = with_ports(text, r"host: 127.0.0.1, port: (0)")
                # The listeners in the order the configuration names them.
                names = re.findall(r"  (\w+)_tcp_server:\n    type: tcp\n    kind: server\n", text)
                ports = dict(zip(names, re.findall(r"host: 127.0.0.1, port: (\d+)", text)))
                port = int(ports[key if client_cert is not None else "plain"])
                path = os.path.join(DIR, f"parts-{index}.yaml")
                command = [ZILLA, "start", "-c", path]
            else:
                text, _ = with_ports(text, r"bind 127.0.0.1:(\d+)")
                section = f"frontend mtls_{key}\n" if client_cert is not None else "frontend plain\n"
                port = int(re.search(re.escape(section) + r"    bind 127.0.0.1:(\d+)", text).group(1))
                path = os.path.join(work, f"haproxy-{index}.cfg")
                command = ["haproxy", "-db", "-f", path]
            with open(path, "w") as f:
                f.write(text)
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(port)
                args = [] if client_cert is None else tls + (cert if client_cert else [])
                ms, rate = measure(process, port, args, connects, rounds)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait()
            rows.append((front, variant, ms, rate))
            print(f"{front:8} {variant:26} {ms:.3f} ms/connect {rate:6.0f}/s", flush=True)
    finally:
        mosquitto.terminate()
        mosquitto.wait()
    print(f"\n| front | {key} | front CPU ms per connect | connects/s |\n|---|---|---:|---:|")
    for front, variant, ms, rate in rows:
        print(f"| {front} | {variant} | {ms:.3f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
