#!/usr/bin/env python3
"""A trpc wire-protocol v1 client in Python, written from docs/PROTOCOL.md alone
(without reading the Rust sources), to prove the document is enough to
interoperate. `integration/tests/interop_python.rs` runs `check_echo.py`, which
drives a real trpc server with it, as part of `make test`.

Standard library only. Implements: framing (§1), SETTINGS handshake (§3),
metadata blocks (§4), unary calls incl. the split form (§5.2), :timeout and
local deadline + CANCEL (§5.3), WINDOW_UPDATE credit for DATA (§5.4),
PING/PONG (§5.5), GOAWAY (§5.6).
"""
import json
import os
import socket
import struct
import time

MAGIC = b"tR"
VERSION = 1

SETTINGS, HEADERS, DATA, TRAILERS, CANCEL, PING, PONG, GOAWAY, WINDOW_UPDATE = range(9)
TYPE_NAMES = ["SETTINGS", "HEADERS", "DATA", "TRAILERS", "CANCEL", "PING", "PONG",
              "GOAWAY", "WINDOW_UPDATE"]
CONTROL = {SETTINGS, CANCEL, PING, PONG, GOAWAY, WINDOW_UPDATE}

END_STREAM, MESSAGE, COMPRESSED = 0x01, 0x02, 0x04

S_MAX_CONCURRENT_STREAMS = 1
S_INITIAL_STREAM_WINDOW = 2
S_INITIAL_CONNECTION_WINDOW = 3
S_MAX_MESSAGE_SIZE = 4
S_MAX_METADATA_SIZE = 5
SETTINGS_DEFAULTS = {
    S_MAX_CONCURRENT_STREAMS: None,  # unlimited
    S_INITIAL_STREAM_WINDOW: 1 << 20,
    S_INITIAL_CONNECTION_WINDOW: 16 << 20,
    S_MAX_MESSAGE_SIZE: 4 << 20,
    S_MAX_METADATA_SIZE: 16 << 10,
}

STATUS_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]
GOAWAY_NAMES = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
                "FRAME_SIZE_ERROR", "ENHANCE_YOUR_CALM", "TIMEOUT"]

CONTROL_MAX = 16 * 1024


def status_name(code):
    return STATUS_NAMES[code] if 0 <= code <= 16 else "UNKNOWN"


class ProtocolError(Exception):
    pass


class ConnectionClosed(Exception):
    pass


class GoAway(Exception):
    def __init__(self, last, code, text):
        super().__init__(f"GOAWAY last={last} code={code}({GOAWAY_NAMES[code] if code < 7 else code}) {text!r}")
        self.last, self.code, self.text = last, code, text


# ---------------------------------------------------------------- encoding

def encode_frame(ftype, flags, stream_id, metadata=b"", payload=b"", magic=MAGIC, version=VERSION,
                 payload_len=None):
    if len(metadata) >= 1 << 24:
        raise ValueError("metadata block too large")
    plen = len(payload) if payload_len is None else payload_len
    ml = len(metadata)
    hdr = magic + bytes([version, ftype, flags, (ml >> 16) & 0xFF, (ml >> 8) & 0xFF, ml & 0xFF])
    hdr += struct.pack(">II", stream_id, plen)
    assert len(hdr) == 16
    return hdr + metadata + payload


def encode_varint(n):
    if not 0 <= n < 1 << 32:
        raise ValueError("varint out of range")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf, pos):
    n = 0
    shift = 0
    for i in range(5):
        if pos >= len(buf):
            raise ProtocolError("truncated varint")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            if n >= 1 << 32:
                raise ProtocolError("varint >= 2^32")
            return n, pos
        shift += 7
    raise ProtocolError("varint longer than 5 bytes")


def encode_metadata(entries):
    """entries: list of (key, value) with str key and str/bytes value."""
    out = bytearray()
    for k, v in entries:
        kb = k.encode("ascii")
        if not 1 <= len(kb) <= 255:
            raise ValueError("bad key length")
        vb = v if isinstance(v, (bytes, bytearray)) else str(v).encode("utf-8")
        out.append(len(kb))
        out += kb
        out += encode_varint(len(vb))
        out += vb
    return bytes(out)


def decode_metadata(buf):
    entries = []
    pos = 0
    while pos < len(buf):
        kl = buf[pos]
        pos += 1
        if kl == 0:
            raise ProtocolError("empty metadata key")
        if pos + kl > len(buf):
            raise ProtocolError("metadata key overruns block")
        key = bytes(buf[pos:pos + kl]).decode("ascii")
        pos += kl
        vl, pos = decode_varint(buf, pos)
        if pos + vl > len(buf):
            raise ProtocolError("metadata value overruns block")
        val = bytes(buf[pos:pos + vl])
        pos += vl
        if not key.endswith("-bin") and key != ":details":
            val = val.decode("utf-8")
        entries.append((key, val))
    return entries


def encode_settings(d):
    return b"".join(struct.pack(">HI", k, v) for k, v in d.items())


def decode_settings(payload):
    if len(payload) % 6:
        raise ProtocolError("SETTINGS length not a multiple of 6")
    return {k: v for k, v in (struct.unpack_from(">HI", payload, i) for i in range(0, len(payload), 6))}


class Frame:
    __slots__ = ("type", "flags", "stream_id", "metadata", "payload", "raw_meta")

    def __init__(self, ftype, flags, stream_id, raw_meta, payload):
        self.type, self.flags, self.stream_id = ftype, flags, stream_id
        self.raw_meta, self.payload = raw_meta, payload
        self.metadata = decode_metadata(raw_meta) if ftype in (HEADERS, TRAILERS) else []

    def __repr__(self):
        name = TYPE_NAMES[self.type] if self.type < len(TYPE_NAMES) else f"type{self.type}"
        return (f"<{name} sid={self.stream_id} flags={self.flags:#x} md={self.metadata} "
                f"payload={bytes(self.payload)[:80]!r}>")


class Result:
    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.code = None
        self.message = ""
        self.details = None
        self.refused = False
        self.headers = []      # response metadata (user keys)
        self.trailers = []     # trailer metadata
        self.messages = []     # decoded response messages
        self.done = False
        self.cancelled_by_server = False

    @property
    def status(self):
        return status_name(self.code) if self.code is not None else None

    def __repr__(self):
        return (f"Result(sid={self.stream_id}, status={self.status}({self.code}), msg={self.message!r}, "
                f"messages={self.messages}, headers={self.headers}, trailers={self.trailers}, "
                f"refused={self.refused})")


# ---------------------------------------------------------------- connection

class Connection:
    def __init__(self, host, port, settings=None, timeout=10.0, handshake=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.my_settings = settings if settings is not None else {
            S_MAX_MESSAGE_SIZE: 4 << 20, S_MAX_METADATA_SIZE: 16 << 10}
        self.peer_settings = dict(SETTINGS_DEFAULTS)
        self.next_sid = 1
        self.max_opened = 0
        self.calls = {}            # sid -> Result (open)
        self.goaway = None
        self.pongs = []
        self.log = []              # every received frame
        self.closed = False
        self.conn_recv_window = self.my_settings.get(S_INITIAL_CONNECTION_WINDOW, 16 << 20)
        if handshake:
            self.handshake()

    # --- raw I/O
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, ftype, flags, sid, metadata=b"", payload=b""):
        self.send_raw(encode_frame(ftype, flags, sid, metadata, payload))

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("deadline")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = True
                raise ConnectionClosed(f"EOF with {len(self.buf)} buffered bytes: {bytes(self.buf)[:64]!r}")
            self.buf += chunk

    def _skip(self, n, deadline):
        while n:
            if not self.buf:
                self._fill(1, deadline)
            k = min(n, len(self.buf))
            del self.buf[:k]
            n -= k

    def read_frame(self, deadline=None):
        self._fill(16, deadline)
        h = self.buf[:16]
        if bytes(h[0:2]) != MAGIC:
            raise ProtocolError(f"bad magic {bytes(h)!r}")
        if h[2] != VERSION:
            raise ProtocolError(f"bad version {h[2]}")
        ftype, flags = h[3], h[4]
        mlen = (h[5] << 16) | (h[6] << 8) | h[7]
        sid, plen = struct.unpack(">II", bytes(h[8:16]))
        if ftype in CONTROL and (mlen != 0 or plen > CONTROL_MAX):
            raise ProtocolError("malformed control frame")
        if ftype not in CONTROL and (mlen > self.my_settings.get(S_MAX_METADATA_SIZE, 16 << 10) or
                                     plen > self.my_settings.get(S_MAX_MESSAGE_SIZE, 4 << 20)):
            # §6: stream error. Discard the bytes unbuffered, fail the call, send CANCEL.
            del self.buf[:16]
            self._skip(mlen + plen, deadline)
            r = self.calls.get(sid)
            if r is not None:
                r.code, r.message = 8, f"frame over our limits (metadata {mlen}, payload {plen})"
                self._finish(r)
                self.cancel(sid, 8)
            f = Frame(255, flags, sid, b"", b"")  # placeholder, ignored by dispatch
            self.log.append(f)
            return f
        self._fill(16 + mlen + plen, deadline)
        raw = bytes(self.buf[16:16 + mlen + plen])
        del self.buf[:16 + mlen + plen]
        f = Frame(ftype, flags, sid, raw[:mlen], raw[mlen:])
        self.log.append(f)
        return f

    # --- handshake
    def handshake(self):
        self.send_frame(SETTINGS, 0, 0, b"", encode_settings(self.my_settings))
        f = self.read_frame(time.monotonic() + 10)
        if f.type == GOAWAY:
            self._on_goaway(f)
            raise self.goaway
        if f.type != SETTINGS:
            raise ProtocolError(f"first frame not SETTINGS: {f}")
        self.peer_settings.update(decode_settings(f.payload))
        return self.peer_settings

    # --- frame dispatch
    def _on_goaway(self, f):
        p = f.payload
        last, code = struct.unpack(">II", p[:8])
        self.goaway = GoAway(last, code, p[8:].decode("utf-8", "replace"))
        # fail streams above `last` as refused
        for sid, r in list(self.calls.items()):
            if sid > last:
                r.code, r.message, r.refused, r.done = 14, "refused by GOAWAY", True, True
                del self.calls[sid]

    def dispatch(self, f):
        t = f.type
        if t == SETTINGS:
            self.peer_settings.update(decode_settings(f.payload))
        elif t == PING:
            self.send_frame(PONG, 0, 0, b"", f.payload)
        elif t == PONG:
            self.pongs.append(bytes(f.payload))
        elif t == GOAWAY:
            self._on_goaway(f)
        elif t == WINDOW_UPDATE:
            pass  # we send no streaming DATA
        elif t in (HEADERS, DATA, TRAILERS, CANCEL):
            r = self.calls.get(f.stream_id)
            if r is None:
                return  # unknown/closed stream: ignore
            if t == CANCEL:
                r.code = struct.unpack(">I", f.payload[:4])[0] if len(f.payload) >= 4 else 1
                r.message = "cancelled by server"
                r.cancelled_by_server = True
                self._finish(r)
                return
            if t in (HEADERS, TRAILERS):
                pseudo = {}
                user = []
                for k, v in f.metadata:
                    if k.startswith(":"):
                        pseudo.setdefault(k, v)
                    else:
                        user.append((k, v))
                if t == HEADERS:
                    r.headers += user
                else:
                    r.trailers += user
                if ":status" in pseudo:
                    r.code = int(pseudo[":status"])
                    r.message = pseudo.get(":message", "")
                    r.details = pseudo.get(":details")
                    r.refused = pseudo.get(":refused") == "1"
            if (t == HEADERS and f.flags & MESSAGE) or t == DATA:
                try:
                    r.messages.append(json.loads(bytes(f.payload).decode("utf-8")) if f.payload else None)
                except ValueError:
                    r.code, r.message = 13, "undecodable response payload"
                    self._finish(r)
                    return
                if t == DATA and f.payload:
                    self.send_frame(WINDOW_UPDATE, 0, f.stream_id, b"", struct.pack(">I", len(f.payload)))
                    self.send_frame(WINDOW_UPDATE, 0, 0, b"", struct.pack(">I", len(f.payload)))
            if f.flags & END_STREAM or t == TRAILERS:
                if r.code is None:
                    r.code, r.message = 13, "stream ended without a status"
                self._finish(r)
        # unknown types skipped

    def _finish(self, r):
        r.done = True
        self.calls.pop(r.stream_id, None)

    def pump(self, deadline=None):
        f = self.read_frame(deadline)
        self.dispatch(f)
        return f

    # --- calls
    def start_call(self, path, request, metadata=(), timeout=None, sid=None, raw_payload=None,
                   flags=MESSAGE | END_STREAM):
        """Send a unary call; return its Result (filled in by pump)."""
        if self.goaway is not None:
            raise self.goaway
        if sid is None:
            sid = self.next_sid
            self.next_sid += 2
        md = [(":path", path)]
        if timeout is not None:
            md.append((":timeout", str(int(timeout * 1_000_000))))
        md += list(metadata)
        if raw_payload is None:
            raw_payload = json.dumps(request, separators=(",", ":")).encode()
        if len(raw_payload) > self.peer_settings[S_MAX_MESSAGE_SIZE]:
            r = Result(sid)
            r.code, r.message, r.done = 8, "message over peer's MAX_MESSAGE_SIZE (not sent)", True
            return r
        r = Result(sid)
        r.deadline = time.monotonic() + timeout if timeout is not None else None
        self.calls[sid] = r
        self.max_opened = max(self.max_opened, sid)
        self.send_frame(HEADERS, flags, sid, encode_metadata(md), raw_payload)
        return r

    def wait(self, *results, overall=30.0):
        end = time.monotonic() + overall
        while not all(r.done for r in results):
            dls = [r.deadline for r in results if not r.done and getattr(r, "deadline", None)]
            dl = min(dls + [end])
            try:
                self.pump(dl)
            except socket.timeout:
                now = time.monotonic()
                for r in results:
                    if not r.done and getattr(r, "deadline", None) and now >= r.deadline:
                        r.code, r.message = 4, "local deadline"
                        self.cancel(r.stream_id, 1)
                        self._finish(r)
                if now >= end:
                    raise
            except ConnectionClosed:
                for r in results:
                    if not r.done:
                        r.code, r.message = 14, "connection closed"
                        self._finish(r)
        return results

    def call(self, path, request, metadata=(), timeout=None, **kw):
        r = self.start_call(path, request, metadata, timeout, **kw)
        if not r.done:
            self.wait(r)
        return r

    def cancel(self, sid, code=1):
        self.send_frame(CANCEL, 0, sid, b"", struct.pack(">I", code))
        self.calls.pop(sid, None)

    def ping(self, data=None, timeout=5.0):
        data = data or os.urandom(8)
        self.send_frame(PING, 0, 0, b"", data)
        end = time.monotonic() + timeout
        while data not in self.pongs:
            self.pump(end)
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


if __name__ == "__main__":
    import sys
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7345").rsplit(":", 1)
    c = Connection(host, int(port))
    print("server settings:", c.peer_settings)
    print(c.call("echo.Echo/Say", {"message": "hello"}, timeout=1.0))
