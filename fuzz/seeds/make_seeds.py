#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets (fuzz/seeds/<target>/): valid
conversations that the fuzzer mutates, so that it starts deep inside the
protocol. Run from anywhere: python3 fuzz/seeds/make_seeds.py"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(kind, flags, stream, metadata=b"", payload=b""):
    return (b"tR\x01" + bytes([kind, flags]) + len(metadata).to_bytes(3, "big")
            + struct.pack(">II", stream, len(payload)) + metadata + payload)


def md(*entries):
    out = b""
    for k, v in entries:
        out += bytes([len(k)]) + k
        n = len(v)
        while n >= 0x80:
            out += bytes([(n & 0x7F) | 0x80])
            n >>= 7
        out += bytes([n]) + v
    return out


SETTINGS, HEADERS, DATA, TRAILERS, CANCEL, PING, PONG, GOAWAY, WINDOW_UPDATE = range(9)
END, MSG = 0x01, 0x02
settings = frame(SETTINGS, 0, 0, b"", struct.pack(">HIHI", 4, 1 << 20, 5, 1 << 14))


def call(stream, method, flags, payload=b"", extra=()):
    return frame(HEADERS, flags, stream, md((b":path", method), *extra), payload)


conversations = {
    "unary": settings + call(1, b"f.F/Echo", MSG | END, b'{"a":1}')
    + call(3, b"f.F/Echo", MSG | END, b"[1,2]", [(b":timeout", b"100000")]),
    "server_stream": settings + call(1, b"f.F/Range", MSG | END, b"5")
    + frame(WINDOW_UPDATE, 0, 1, b"", struct.pack(">I", 1000)),
    "client_stream": settings + call(1, b"f.F/Sum", 0)
    + frame(DATA, 0, 1, b"", b"1") + frame(DATA, 0, 1, b"", b"2")
    + frame(DATA, END, 1, b"", b"3"),
    "bidi": settings + call(1, b"f.F/Bidi", MSG, b'"x"')
    + frame(DATA, 0, 1, b"", b'"y"') + frame(TRAILERS, END, 1),
    "cancel": settings + call(1, b"f.F/Sleep", MSG | END, b"1")
    + frame(CANCEL, 0, 1, b"", struct.pack(">I", 1))
    + call(3, b"f.F/Sleep", MSG | END, b"2"),
    "control": settings + frame(PING, 0, 0, b"", b"12345678")
    + frame(PONG, 0, 0, b"", b"trpcping")
    + frame(WINDOW_UPDATE, 0, 0, b"", struct.pack(">I", 65536))
    + frame(GOAWAY, 0, 0, b"", struct.pack(">II", 0, 0) + b"bye"),
    "metadata": settings + call(1, b"f.F/Echo", MSG | END | 0x04, b"{}",
                                [(b"x-a", b"b"), (b"x-bin", b"\xff\x00"),
                                 (b"trpc-codec", b"json"), (b"trpc-encoding", b"gzip")]),
}

def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

seed = b"\x2a\x00\x00\x00\x00\x00\x00\x00"
for name, wire in conversations.items():
    # server_connection: flags (0: no SETTINGS prepended, the seed has its
    # own; 2: close after sending), 8 bytes of write-size seed, the wire.
    write("server_connection", name, bytes([0]) + seed + wire)
    write("server_connection", name + "_eof", bytes([2]) + seed + wire)
    # frame_decoder: limits pick, 8 bytes of chunk seed, the wire.
    write("frame_decoder", name, bytes([0]) + seed + wire)
    write("frame_decoder", name + "_small", bytes([1]) + seed + wire)
