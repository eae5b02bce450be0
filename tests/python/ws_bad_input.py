"""Raw WebSocket sessions against a running mk8s API server, over TLS sockets (no client
library would send this): a ping on an exec session (`v5.channel.k8s.io`) must get its pong;
bad input: an exec upgrade offering only an unknown subprotocol, garbage bytes after an exec
upgrade, and garbage (non-SPDY) payload inside kubectl's port-forward tunnel
(`SPDY/3.1+portforward.k8s.io`); all on the pod `web` in `default`.

Usage: ws_bad_input.py PORT CA_CRT CLIENT_CRT CLIENT_KEY
Prints one line per case: its name, the status line of the upgrade answer and, after a 101,
whether the server ended that session (`closed`) within 15 seconds or not (`open`).
"""
import base64
import os
import socket
import ssl
import struct
import sys

PORT, CA, CERT, KEY = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
EXEC = "/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true"
FORWARD = "/api/v1/namespaces/default/pods/web/portforward"


def upgrade(path, protocol):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.load_cert_chain(CERT, KEY)
    raw = socket.create_connection(("127.0.0.1", int(PORT)), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
               "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(1)
        if not c:
            break
        head += c
    return s, head.split(b"\r\n")[0].decode()


def closed_within(s, secs):
    s.settimeout(secs)
    try:
        while s.recv(4096):
            pass
        return "closed"
    except socket.timeout:
        return "open"
    except (ssl.SSLError, ConnectionResetError):
        return "closed"


def masked(opcode, payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def read_exact(s, n):
    data = b""
    while len(data) < n:
        c = s.recv(n - len(data))
        if not c:
            raise EOFError("connection closed")
        data += c
    return data


s, status = upgrade(EXEC, "v5.channel.k8s.io")
if status.split(" ")[1] == "101":
    s.settimeout(15)
    s.sendall(masked(0x9, b"are-you-there"))
    head = read_exact(s, 2)
    body = read_exact(s, head[1] & 0x7f)
    status += " pong" if (head[0], body) == (0x8A, b"are-you-there") else f" {head!r} {body!r}"
print("ping", status)
s.close()


s, status = upgrade(EXEC, "nonsense.k8s.io")
print("unknown-subprotocol", status)
s.close()

s, status = upgrade(EXEC, "v5.channel.k8s.io")
if status.split(" ")[1] == "101":
    s.sendall(b"\xff" * 64)
    status += " " + closed_within(s, 15)
print("garbage-websocket", status)
s.close()

s, status = upgrade(FORWARD, "SPDY/3.1+portforward.k8s.io")
if status.split(" ")[1] == "101":
    # A control frame of no known type: a SPDY/3 peer cannot go on after it.
    s.sendall(masked(0x2, b"\x80\x03\x7f\xff\x00\x00\x00\x08garbage!"))
    status += " " + closed_within(s, 15)
print("garbage-spdy", status)
s.close()
