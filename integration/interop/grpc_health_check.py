#!/usr/bin/env python3
"""Checks a server's grpc.health.v1.Health with grpcio-health-checking's own
stubs (a stock gRPC health client).

Usage: grpc_health_check.py HOST:PORT SERVICE=EXPECTED... [--unknown NAME]
  SERVICE=EXPECTED: Check(SERVICE) must answer EXPECTED (SERVING, NOT_SERVING);
  Watch(SERVICE) must stream EXPECTED first. --unknown NAME: Check(NAME) must
  fail with NOT_FOUND. Prints "ok ..." per check, "all health checks passed".
"""
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    target, *args = sys.argv[1:]
    unknown = []
    expect = []
    it = iter(args)
    for a in it:
        if a == "--unknown":
            unknown.append(next(it))
        else:
            svc, want = a.split("=", 1)
            expect.append((svc, want))
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for svc, want in expect:
            r = stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=10)
            got = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            assert got == want, f"Check({svc!r}) = {got}, expected {want}"
            print(f"ok Check({svc!r}) = {got}", flush=True)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=svc), timeout=10)
            first = next(watch)
            got = health_pb2.HealthCheckResponse.ServingStatus.Name(first.status)
            assert got == want, f"Watch({svc!r}) first = {got}, expected {want}"
            watch.cancel()
            print(f"ok Watch({svc!r}) starts with {got}", flush=True)
        for svc in unknown:
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, f"Check({svc!r}): {e.code()}"
                print(f"ok Check({svc!r}) = NOT_FOUND", flush=True)
            else:
                raise AssertionError(f"Check({svc!r}) succeeded")
    print("all health checks passed", flush=True)


if __name__ == "__main__":
    main()
