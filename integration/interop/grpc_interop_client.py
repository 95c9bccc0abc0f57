#!/usr/bin/env python3
"""The gRPC interop suite's client test cases with Python grpcio, written
from the suite's documented case semantics, for a trpc server to answer.

Usage: grpc_interop_client.py --server_host H --server_port N --test_case NAME|all
Exits 0 only when every case passes; prints "ok    CASE" for each.
"""
import argparse
import gzip
import queue
import sys
import threading

import grpc

import grpc_stubs

empty_pb2, messages_pb2, test_pb2_grpc = grpc_stubs.load()
m = messages_pb2

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CASES = [
    "empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
    "empty_stream", "custom_metadata", "status_code_and_message", "special_status_message",
    "unimplemented_method", "unimplemented_service", "cancel_after_begin",
    "cancel_after_first_response", "timeout_on_sleeping_server", "client_compressed_unary",
    "server_compressed_unary",
]
SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def zeros(n):
    return m.Payload(body=b"\0" * n)


def check_zeros(payload, n):
    check(len(payload.body) == n and payload.body == b"\0" * n,
          f"expected {n} zero bytes, got {len(payload.body)} bytes")


def expect_code(fn, code, message=None):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"expected {code}, got {e.code()}: {e.details()}")
        if message is not None:
            check(e.details() == message, f"expected message {message!r}, got {e.details()!r}")
        return
    raise Failed(f"expected {code}, the call succeeded")


def large():
    return m.SimpleRequest(response_size=314159, payload=zeros(271828))


def ping(resp, req):
    return m.StreamingOutputCallRequest(
        response_parameters=[m.ResponseParameters(size=resp)], payload=zeros(req))


class Feed:
    """A request iterator fed from the test."""

    def __init__(self):
        self.q = queue.Queue()

    def send(self, msg):
        self.q.put(msg)

    def close(self):
        self.q.put(None)

    def __iter__(self):
        return self

    def __next__(self):
        msg = self.q.get()
        if msg is None:
            raise StopIteration
        return msg


def empty_unary(stub, ch):
    r = stub.EmptyCall(empty_pb2.Empty())
    check(r == empty_pb2.Empty(), "non-empty reply")


def large_unary(stub, ch):
    check_zeros(stub.UnaryCall(large()).payload, 314159)


def client_streaming(stub, ch):
    sizes = [27182, 8, 1828, 45904]
    r = stub.StreamingInputCall(iter(m.StreamingInputCallRequest(payload=zeros(n)) for n in sizes))
    check(r.aggregated_payload_size == 74922, f"aggregated size {r.aggregated_payload_size}")


def server_streaming(stub, ch):
    sizes = [31415, 9, 2653, 58979]
    req = m.StreamingOutputCallRequest(response_parameters=[m.ResponseParameters(size=n) for n in sizes])
    got = [len(r.payload.body) for r in stub.StreamingOutputCall(req)]
    check(got == sizes, f"reply sizes {got}")


def ping_pong(stub, ch):
    feed = Feed()
    replies = stub.FullDuplexCall(feed)
    for resp, req in [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]:
        feed.send(ping(resp, req))
        check_zeros(next(replies).payload, resp)
    feed.close()
    check(next(replies, None) is None, "more replies than asked")


def empty_stream(stub, ch):
    check(list(stub.FullDuplexCall(iter([]))) == [], "a reply to nothing")


def custom_metadata(stub, ch):
    md = ((ECHO_INITIAL, "test_initial_metadata_value"), (ECHO_TRAILING, b"\xab\xab\xab"))

    def check_md(initial, trailing):
        initial, trailing = dict(initial), dict(trailing)
        check(initial.get(ECHO_INITIAL) == "test_initial_metadata_value", f"initial {initial}")
        check(trailing.get(ECHO_TRAILING) == b"\xab\xab\xab", f"trailing {trailing}")

    r, call = stub.UnaryCall.with_call(large(), metadata=md)
    check_zeros(r.payload, 314159)
    check_md(call.initial_metadata(), call.trailing_metadata())
    call = stub.FullDuplexCall(iter([ping(314159, 271828)]), metadata=md)
    replies = list(call)
    check(len(replies) == 1, f"{len(replies)} replies")
    check_zeros(replies[0].payload, 314159)
    check_md(call.initial_metadata(), call.trailing_metadata())


def _status_case(stub, message, duplex):
    status = m.EchoStatus(code=2, message=message)
    expect_code(lambda: stub.UnaryCall(m.SimpleRequest(response_status=status)),
                grpc.StatusCode.UNKNOWN, message)
    if duplex:
        req = m.StreamingOutputCallRequest(response_status=status)
        expect_code(lambda: list(stub.FullDuplexCall(iter([req]))), grpc.StatusCode.UNKNOWN, message)


def status_code_and_message(stub, ch):
    _status_case(stub, "test status message", True)


def special_status_message(stub, ch):
    _status_case(stub, SPECIAL, False)


def unimplemented_method(stub, ch):
    expect_code(lambda: stub.UnimplementedCall(empty_pb2.Empty()), grpc.StatusCode.UNIMPLEMENTED)


def unimplemented_service(stub, ch):
    other = test_pb2_grpc.UnimplementedServiceStub(ch)
    expect_code(lambda: other.UnimplementedCall(empty_pb2.Empty()), grpc.StatusCode.UNIMPLEMENTED)


def cancel_after_begin(stub, ch):
    feed = Feed()
    fut = stub.StreamingInputCall.future(feed)
    fut.cancel()
    feed.close()
    check(fut.cancelled(), "the call was not cancelled")
    check(fut.code() == grpc.StatusCode.CANCELLED, f"code {fut.code()}")


def cancel_after_first_response(stub, ch):
    feed = Feed()
    call = stub.FullDuplexCall(feed)
    feed.send(ping(31415, 27182))
    check_zeros(next(call).payload, 31415)
    call.cancel()
    feed.close()
    expect_code(lambda: next(call), grpc.StatusCode.CANCELLED)


def timeout_on_sleeping_server(stub, ch):
    feed = Feed()
    call = stub.FullDuplexCall(feed, timeout=0.001)
    feed.send(ping(31415, 27182))
    try:
        expect_code(lambda: list(call), grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        feed.close()


def client_compressed_unary(stub, ch):
    def req(expect):
        r = large()
        r.expect_compressed.value = expect
        return r
    expect_code(lambda: stub.UnaryCall(req(True)), grpc.StatusCode.INVALID_ARGUMENT)
    check_zeros(stub.UnaryCall(req(True), compression=grpc.Compression.Gzip).payload, 314159)
    check_zeros(stub.UnaryCall(req(False)).payload, 314159)


def server_compressed_unary(stub, ch, target):
    # grpcio does not tell whether a reply was compressed: this channel keeps
    # replies as they arrived, and the deserializer inflates gzip itself.
    seen = {}

    def read(raw):
        seen["compressed"] = raw[:2] == b"\x1f\x8b"
        return m.SimpleResponse.FromString(gzip.decompress(raw) if seen["compressed"] else raw)

    with grpc.insecure_channel(target, options=[("grpc.per_message_decompression", 0)]) as raw_ch:
        call = raw_ch.unary_unary("/grpc.testing.TestService/UnaryCall",
                                  request_serializer=m.SimpleRequest.SerializeToString,
                                  response_deserializer=read)
        for compressed in (True, False):
            r = large()
            r.response_compressed.value = compressed
            check_zeros(call(r).payload, 314159)
            check(seen["compressed"] == compressed,
                  f"asked for a compressed reply: {compressed}; compressed: {seen['compressed']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server_host", default="127.0.0.1")
    ap.add_argument("--server_port", type=int, required=True)
    ap.add_argument("--test_case", default="all")
    args = ap.parse_args()
    target = f"{args.server_host}:{args.server_port}"
    cases = CASES if args.test_case == "all" else args.test_case.split(",")
    failed = 0
    with grpc.insecure_channel(target) as ch:
        stub = test_pb2_grpc.TestServiceStub(ch)
        for case in cases:
            fn = globals().get(case)
            if case not in CASES or fn is None:
                print(f"FAIL  {case}: unknown test case", flush=True)
                failed += 1
                continue
            try:
                if case == "server_compressed_unary":
                    fn(stub, ch, target)
                else:
                    fn(stub, ch)
                print(f"ok    {case}", flush=True)
            except (Failed, grpc.RpcError, StopIteration) as e:
                print(f"FAIL  {case}: {type(e).__name__}: {e}", flush=True)
                failed += 1
    if failed:
        print(f"{failed} case(s) failed", flush=True)
        sys.exit(1)
    print(f"all {len(cases)} cases passed", flush=True)


if __name__ == "__main__":
    main()
