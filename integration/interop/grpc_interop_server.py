#!/usr/bin/env python3
"""grpc.testing.TestService with Python grpcio, written from the interop
suite's documented case semantics, for trpc's gRPC client to call.

Usage: grpc_interop_server.py --port N   (prints "listening N" when ready;
runs until stdin closes)

grpcio does not tell a handler whether a request message arrived
compressed, which the `expect_compressed` checks need: the server turns
grpc-core's per-message decompression off and its deserializers inflate gzip
messages themselves (a gzip stream starts 1f 8b, which no protobuf message
here can), so each handler knows.
"""
import argparse
import gzip
import sys
import time
from concurrent import futures

import grpc

import grpc_stubs

empty_pb2, messages_pb2, test_pb2_grpc = grpc_stubs.load()

SERVICE = "grpc.testing.TestService"
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CODES = {c.value[0]: c for c in grpc.StatusCode}


class Received:
    """A request message and whether it arrived compressed."""

    def __init__(self, msg, compressed):
        self.msg = msg
        self.compressed = compressed


def reader(cls):
    def read(raw):
        compressed = raw[:2] == b"\x1f\x8b"
        if compressed:
            raw = gzip.decompress(raw)
        return Received(cls.FromString(raw), compressed)
    return read


def payload(size):
    return messages_pb2.Payload(body=b"\0" * size)


def echo_metadata(context):
    md = dict(context.invocation_metadata())
    if ECHO_INITIAL in md:
        context.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
    if ECHO_TRAILING in md:
        context.set_trailing_metadata(((ECHO_TRAILING, md[ECHO_TRAILING]),))


def check_status(msg, context):
    if msg.HasField("response_status") and msg.response_status.code != 0:
        code = CODES.get(msg.response_status.code, grpc.StatusCode.UNKNOWN)
        context.abort(code, msg.response_status.message)


def check_compressed(r, context):
    if r.msg.HasField("expect_compressed") and r.msg.expect_compressed.value != r.compressed:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"expected a {'compressed' if r.msg.expect_compressed.value else 'plain'} request")


def empty_call(r, context):
    echo_metadata(context)
    return empty_pb2.Empty()


def unary_call(r, context):
    echo_metadata(context)
    check_compressed(r, context)
    check_status(r.msg, context)
    if r.msg.HasField("response_compressed"):
        context.set_compression(grpc.Compression.Gzip if r.msg.response_compressed.value
                                else grpc.Compression.NoCompression)
    return messages_pb2.SimpleResponse(payload=payload(r.msg.response_size))


def respond(msg):
    for p in msg.response_parameters:
        if p.interval_us:
            time.sleep(p.interval_us / 1e6)
        yield messages_pb2.StreamingOutputCallResponse(payload=payload(p.size))


def streaming_output_call(r, context):
    echo_metadata(context)
    yield from respond(r.msg)
    check_status(r.msg, context)


def streaming_input_call(requests, context):
    echo_metadata(context)
    total = 0
    for r in requests:
        check_compressed(r, context)
        total += len(r.msg.payload.body)
    return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)


def full_duplex_call(requests, context):
    echo_metadata(context)
    for r in requests:
        check_status(r.msg, context)
        yield from respond(r.msg)


def half_duplex_call(requests, context):
    echo_metadata(context)
    for m in [r.msg for r in requests]:
        check_status(m, context)
        yield from respond(m)


def handlers():
    m = messages_pb2
    out = lambda cls: cls.SerializeToString  # noqa: E731
    return grpc.method_handlers_generic_handler(SERVICE, {
        "EmptyCall": grpc.unary_unary_rpc_method_handler(
            empty_call, reader(empty_pb2.Empty), out(empty_pb2.Empty)),
        "UnaryCall": grpc.unary_unary_rpc_method_handler(
            unary_call, reader(m.SimpleRequest), out(m.SimpleResponse)),
        "CacheableUnaryCall": grpc.unary_unary_rpc_method_handler(
            unary_call, reader(m.SimpleRequest), out(m.SimpleResponse)),
        "StreamingOutputCall": grpc.unary_stream_rpc_method_handler(
            streaming_output_call, reader(m.StreamingOutputCallRequest),
            out(m.StreamingOutputCallResponse)),
        "StreamingInputCall": grpc.stream_unary_rpc_method_handler(
            streaming_input_call, reader(m.StreamingInputCallRequest),
            out(m.StreamingInputCallResponse)),
        "FullDuplexCall": grpc.stream_stream_rpc_method_handler(
            full_duplex_call, reader(m.StreamingOutputCallRequest),
            out(m.StreamingOutputCallResponse)),
        "HalfDuplexCall": grpc.stream_stream_rpc_method_handler(
            half_duplex_call, reader(m.StreamingOutputCallRequest),
            out(m.StreamingOutputCallResponse)),
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[handlers()],
                         options=[("grpc.per_message_decompression", 0)])
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"listening {port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop(0)


if __name__ == "__main__":
    main()
