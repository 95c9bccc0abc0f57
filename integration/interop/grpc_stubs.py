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


def _generate(out_dir):
    """Generates the stubs into a private directory, then moves each file
    into place (atomic renames, the marker last), under a lock: processes
    started together (tests run in parallel) never import a half-written
    module."""
    import fcntl
    import shutil
    import tempfile
    from grpc_tools import protoc
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _stale(out_dir):
            return  # another process made them meanwhile
        tmp = tempfile.mkdtemp(dir=out_dir, prefix=".gen-")
        try:
            args = ["protoc", "-I" + PROTO_ROOT, "--python_out=" + tmp,
                    "--grpc_python_out=" + tmp] + PROTOS
            if protoc.main(args) != 0:
                raise SystemExit("grpc_tools.protoc failed")
            src = os.path.join(tmp, "grpc", "testing")
            dst = os.path.join(out_dir, "grpc", "testing")
            os.makedirs(dst, exist_ok=True)
            names = sorted(os.listdir(src), key=lambda n: n == "test_pb2_grpc.py")
            for name in names:
                os.replace(os.path.join(src, name), os.path.join(dst, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def load():
    out_dir = os.environ.get("GRPC_STUBS_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(sys.executable)), "interop-stubs")
    if _stale(out_dir):
        _generate(out_dir)
    pkg = types.ModuleType("grpc.testing")
    pkg.__path__ = [os.path.join(out_dir, "grpc", "testing")]
    sys.modules["grpc.testing"] = pkg
    grpc.testing = pkg
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc
    return empty_pb2, messages_pb2, test_pb2_grpc
