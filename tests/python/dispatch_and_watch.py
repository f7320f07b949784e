#!/usr/bin/env python3
"""A second-language client built from proto/ alone.

Generates Python stubs from the .proto files with grpcio-tools into a
temporary directory, then, over TLS with a bearer token, dispatches a
`sleep` task and follows it with WatchTask until it is COMPLETED. Also
checks that a call without the token is refused with UNAUTHENTICATED.

Settings (environment):
  PULP_ADDRESS   host:port of the scheduler (TLS)
  PULP_TLS_CA    PEM file of the CA that signed the scheduler's certificate
  PULP_TOKEN     a client bearer token
  PULP_PROTO_DIR the repository's proto/ directory
  PULP_TLS_NAME  the name to check the certificate for (default: localhost)

Exit status 0 on success; the failure is printed otherwise.
"""

import importlib
import os
import pathlib
import sys
import tempfile


def generate(proto_dir: pathlib.Path, out: pathlib.Path) -> None:
    from grpc_tools import protoc
    import grpc_tools

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")


def main() -> int:
    address = os.environ["PULP_ADDRESS"]
    ca = pathlib.Path(os.environ["PULP_TLS_CA"]).read_bytes()
    token = os.environ["PULP_TOKEN"]
    proto_dir = pathlib.Path(os.environ["PULP_PROTO_DIR"]).resolve()
    name = os.environ.get("PULP_TLS_NAME", "localhost")

    import grpc
    from google.protobuf import struct_pb2

    with tempfile.TemporaryDirectory() as out:
        generate(proto_dir, pathlib.Path(out))
        sys.path.insert(0, out)
        tasks_pb2 = importlib.import_module("pulp.tasking.v1.tasks_pb2")
        tasks_grpc = importlib.import_module("pulp.tasking.v1.tasks_pb2_grpc")

        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        options = [("grpc.ssl_target_name_override", name)]
        with grpc.secure_channel(address, credentials, options=options) as channel:
            stub = tasks_grpc.TasksStub(channel)
            kwargs = struct_pb2.Struct()
            kwargs.update({"seconds": 0.2})
            request = tasks_pb2.DispatchRequest(func="sleep", kwargs=kwargs)

            try:
                stub.Dispatch(request, timeout=30)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAUTHENTICATED:
                    print(f"without a token: expected UNAUTHENTICATED, got {err.code()}")
                    return 1
            else:
                print("without a token: the dispatch was accepted")
                return 1

            metadata = [("authorization", f"Bearer {token}")]
            task = stub.Dispatch(request, metadata=metadata, timeout=30)
            print(f"dispatched {task.id} ({tasks_pb2.TaskState.Name(task.state)})")
            seen = []
            last = None
            for snapshot in stub.WatchTask(
                tasks_pb2.WatchTaskRequest(id=task.id), metadata=metadata, timeout=60
            ):
                state = tasks_pb2.TaskState.Name(snapshot.state)
                if not seen or seen[-1] != state:
                    seen.append(state)
                last = snapshot
            print("states: " + " -> ".join(seen))
            if last is None or last.state != tasks_pb2.COMPLETED:
                print(f"the task did not complete: {last}")
                return 1
    print("python client: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
