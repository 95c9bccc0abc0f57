"""Generates (once) and imports the Python stubs of proto/grpc/testing/*.proto
(trpc's own interop .proto files) with grpcio-tools.

The generated modules live in package ``grpc.testing``, inside grpcio's own
``grpc`` package namespace; they are generated into GRPC_STUBS_DIR (default:
a directory next to the venv) and mounted as ``grpc.testing``.
"""
import os
import sys
import types

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "proto")
PROTOS = ["grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto"]


def _stale(out_dir):
    newest = max(os.path.getmtime(os.path.join(PROTO_ROOT, p)) for p in PROTOS)
    marker = os.path.join(out_dir, "grpc", "testing", "test_pb2_grpc.py")
    return not os.path.exists(marker) or os.path.getmtime(marker) < newest


def load():
    out_dir = os.environ.get("GRPC_STUBS_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(sys.executable)), "interop-stubs")
    if _stale(out_dir):
        from grpc_tools import protoc
        os.makedirs(out_dir, exist_ok=True)
        args = ["protoc", "-I" + PROTO_ROOT, "--python_out=" + out_dir,
                "--grpc_python_out=" + out_dir] + PROTOS
        if protoc.main(args) != 0:
            raise SystemExit("grpc_tools.protoc failed")
    pkg = types.ModuleType("grpc.testing")
    pkg.__path__ = [os.path.join(out_dir, "grpc", "testing")]
    sys.modules["grpc.testing"] = pkg
    grpc.testing = pkg
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
    return empty_pb2, messages_pb2, test_pb2_grpc
