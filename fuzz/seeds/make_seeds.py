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

# What a server says to the client_connection target's five calls (streams
# 1 unary, 3 unary with a deadline, 5 server streaming, 7 client streaming,
# 9 bidi), after its SETTINGS.
server_settings = frame(SETTINGS, 0, 0, b"", struct.pack(
    ">HIHIHIHIHI", 1, 1024, 2, 1 << 20, 3, 16 << 20, 4, 4 << 20, 5, 1 << 14))


def status(code, message=b""):
    entries = [(b":status", str(code).encode())]
    if message:
        entries.append((b":message", message))
    return md(*entries)


def answer(stream, payload=b"1"):
    return frame(HEADERS, MSG | END, stream, status(0), payload)


def stream_answer(stream, *messages):
    out = frame(HEADERS, 0, stream, md((b"x-a", b"b")))
    for m in messages:
        out += frame(DATA, 0, stream, b"", m)
    return out + frame(TRAILERS, END, stream, status(0))


all_answered = (answer(1) + answer(3) + stream_answer(5, b"1", b"2", b"3")
                + frame(WINDOW_UPDATE, 0, 7, b"", struct.pack(">I", 1 << 16))
                + answer(7, b"6") + stream_answer(9, b'"x"', b'"y"'))
server_conversations = {
    "all_answered": server_settings + all_answered,
    "split_unary": server_settings + stream_answer(1, b"1") + all_answered[len(answer(1)):],
    "errors": server_settings + frame(HEADERS, END, 1, status(13, b"boom"))
    + frame(CANCEL, 0, 3, b"", struct.pack(">I", 8))
    + frame(HEADERS, 0, 5, b"") + frame(DATA, END, 5, b"", b"1"),
    "goaway": server_settings + answer(1) + answer(3)
    + frame(GOAWAY, 0, 0, b"", struct.pack(">II", 3, 0) + b"restarting"),
    "control": server_settings + frame(PING, 0, 0, b"", b"12345678")
    + frame(PONG, 0, 0, b"", b"trpcping")
    + frame(WINDOW_UPDATE, 0, 0, b"", struct.pack(">I", 65536))
    + frame(SETTINGS, 0, 0, b"", struct.pack(">HI", 5, 8192)) + all_answered,
    "small_windows": frame(SETTINGS, 0, 0, b"", struct.pack(">HIHI", 2, 8, 3, 16))
    + frame(WINDOW_UPDATE, 0, 0, b"", struct.pack(">I", 16))
    + frame(WINDOW_UPDATE, 0, 7, b"", struct.pack(">I", 8)) + all_answered,
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
for name, wire in server_conversations.items():
    # client_connection: flags (0: no SETTINGS prepended, the seed has its
    # own; 2: close after sending; 4: tiny windows and limits), 8 bytes of
    # write-size seed, the wire.
    write("client_connection", name, bytes([0]) + seed + wire)
    write("client_connection", name + "_eof", bytes([2]) + seed + wire)
    write("client_connection", name + "_tiny", bytes([4]) + seed + wire)
