#!/usr/bin/env python3
"""Drives a trpc server with the pure-Python client of trpc_wire.py (written from
docs/PROTOCOL.md alone) and asserts the documented behaviour.

Usage: check_echo.py HOST:PORT

The server must serve (JSON): echo.Echo/Say {"message"} echoed back,
echo.Echo/Sleep {"millis"}, echo.Echo/Fail {"code", "message"}, echo.Echo/Panic.
Exits 0 when every check holds; prints each check as it passes.
"""
import socket
import struct
import sys
import time

from trpc_wire import (CANCEL, GOAWAY, GOAWAY_NAMES, PING, Connection,
                       encode_frame)

HOST, PORT = sys.argv[1].rsplit(":", 1)
PORT = int(PORT)


def ok(name):
    print(f"ok  {name}", flush=True)


def expect(result, code, text=""):
    assert result.code == code, f"expected code {code}, got {result}"
    assert text in result.message, f"expected {text!r} in the message, got {result}"


def goaway_after(conn, secs=5.0):
    """Reads until the server's GOAWAY; returns (last stream id, code name, text)."""
    end = time.monotonic() + secs
    while True:
        f = conn.read_frame(end)
        if f.type == GOAWAY:
            last, code = struct.unpack(">II", f.payload[:8])
            return last, GOAWAY_NAMES[code], f.payload[8:].decode("utf-8", "replace")


c = Connection(HOST, PORT)
assert c.peer_settings[4] == 4 << 20 and c.peer_settings[5] == 16 << 10, c.peer_settings
ok("handshake: SETTINGS with the documented limits")

r = c.call("echo.Echo/Say", {"message": "hello"}, metadata=[("x-a", "1")], timeout=5.0)
expect(r, 0)
assert r.messages == [{"message": "hello"}], r
ok("unary call: HEADERS with MESSAGE|END_STREAM, one frame back")

r = c.start_call("echo.Echo/Sleep", {"millis": 5000}, timeout=0.2)
r.deadline = None  # let the server enforce it
c.wait(r)
expect(r, 4)
ok(":timeout enforced by the server: DEADLINE_EXCEEDED")

r = c.call("echo.Echo/Say", {"message": "x"}, metadata=[(":timeout", "0")])
expect(r, 4)
ok(":timeout 0: DEADLINE_EXCEEDED without running the handler")

r = c.call("echo.Echo/Fail", {"code": 5, "message": "nope"}, timeout=5.0)
expect(r, 5, "nope")
ok("handler status: NOT_FOUND with its message")

r = c.call("echo.Echo/Panic", {}, timeout=5.0)
expect(r, 13)
r = c.call("echo.Echo/Say", {"message": "after panic"}, timeout=5.0)
expect(r, 0)
ok("panic: INTERNAL, and the connection serves on")

expect(c.call("no.Such/Method", {}, timeout=5.0), 12)
ok("unknown method: UNIMPLEMENTED")

expect(c.call("echo.Echo/Say", None, raw_payload=b'{"message": ', timeout=5.0), 3)
ok("undecodable JSON: INVALID_ARGUMENT")

expect(c.call("echo.Echo/Say", None, raw_payload=b'{"message":"x"}',
              metadata=[(":timeout", "1.5")]), 3)
ok("malformed :timeout: INVALID_ARGUMENT")

slow = c.start_call("echo.Echo/Sleep", {"millis": 300}, timeout=5.0)
fast = c.start_call("echo.Echo/Say", {"message": "second"}, timeout=5.0)
order = []
while not (slow.done and fast.done):
    order.append(c.pump(time.monotonic() + 5).stream_id)
expect(slow, 0)
expect(fast, 0)
assert order.index(fast.stream_id) < order.index(slow.stream_id), order
ok("two calls in flight: answered by stream id, the fast one first")

assert c.ping(b"12345678") == b"12345678"
ok("PING: PONG with the same 8 bytes")

r = c.start_call("echo.Echo/Sleep", {"millis": 5000}, timeout=10.0)
c.send_frame(CANCEL, 0, r.stream_id, b"", b"")
c.calls.pop(r.stream_id, None)
expect(c.call("echo.Echo/Say", {"message": "after cancel"}, timeout=5.0), 0)
ok("CANCEL (empty payload): the connection serves on")
c.close()

# Connection errors, each on a fresh connection, and the server serves on.
c = Connection(HOST, PORT)
c.send_frame(PING, 0, 0, b"", b"123")
last, code, text = goaway_after(c)
assert code == "FRAME_SIZE_ERROR", (code, text)
ok("3-byte PING: GOAWAY(FRAME_SIZE_ERROR)")

s = socket.create_connection((HOST, PORT), timeout=5)
s.sendall(b"hello, not trpc at all")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
s.close()
assert data[:4] == encode_frame(GOAWAY, 0, 0)[:4], data
code = struct.unpack(">I", data[20:24])[0]
assert GOAWAY_NAMES[code] == "PROTOCOL_ERROR", data
ok("bad magic: GOAWAY(PROTOCOL_ERROR) instead of SETTINGS, closed")

c = Connection(HOST, PORT)
expect(c.call("echo.Echo/Say", {"message": "still here"}, timeout=5.0), 0)
c.close()
ok("a fresh connection is served")
print("all checks passed")
