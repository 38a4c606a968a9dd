"""A stand-in for the `firecracker` binary (and the `jailer` in front of it) where there is no KVM.

It boots nothing. It serves Firecracker's REST API on a Unix socket and checks every request
against Firecracker's own API description, `fixtures/firecracker/firecracker-api.yaml`
(Swagger 2.0, from the firecracker-microvm/firecracker repository):

- method and path must be an operation in `paths` (path parameters matched), else 400;
- a JSON body must validate, with jsonschema, against the definition its `in: body` parameter
  references (`$ref: '#/definitions/...'`), else 400 with `{"fault_message": ...}` naming the
  request, the definition and the JSON path. Objects reject unknown fields, as Firecracker's
  deserializer does (`deny_unknown_fields`), unless the spec allows them explicitly;
- operations whose summary says "Pre-boot only" / "Post-boot only" are refused in the other
  phase, with Firecracker's messages.

On top it models the state the driver relies on: InstanceStart needs a boot source (and
refuses to run twice), the kernel, initrd and drive files must exist (relative to the jail's
root when started as the jailer), a drive's or interface's id in the body must match the one
in the path, MMDS may only use known interfaces, `GET /` answers an `InstanceInfo` ("Not
started" / "Running"), SendCtrlAltDel makes the process exit 0 as Firecracker does when the
guest reboots with `reboot=k`. Valid requests it does not model are accepted (204) or, for
GETs, answered 501. Success is 204 with no body, as Firecracker answers.

Usage (arguments as Firecracker and the jailer take them, plus stub options first):
    firecracker_stub.py [STUB OPTIONS] --api-sock PATH
    firecracker_stub.py [STUB OPTIONS] --id ID --exec-file FC --uid N --gid N
                        [--chroot-base-dir DIR] [--netns PATH] -- --api-sock PATH
Stub options: --request-log FILE (one JSON line per request and answer), --ignore-ctrl-alt-del
(keep running after SendCtrlAltDel, like a guest that ignores it).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

SPEC_PATH = Path(__file__).resolve().parent / "fixtures" / "firecracker" / "firecracker-api.yaml"
STUB_VERSION = "1.17.0-stub"
JAIL_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
DEFAULT_MACHINE_CONFIG = {
    "vcpu_count": 1,
    "mem_size_mib": 128,
    "smt": False,
    "track_dirty_pages": False,
    "huge_pages": "None",
}
AFTER_START = "The requested operation is not supported after starting the microVM."
BEFORE_START = "The requested operation is not supported before starting the microVM."


class Fault(Exception):
    """A request Firecracker would refuse: the HTTP status and its fault_message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- the API description ------------------------------------------------------------------


class ApiSpec:
    """Firecracker's Swagger 2.0 document, turned into routes and JSON Schema validators."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.definitions: dict[str, Any] = _deny_unknown_fields(
            copy.deepcopy(document["definitions"])
        )
        self.routes: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        for template, operations in document["paths"].items():
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self.routes.append((re.compile(f"^{pattern}$"), template, operations))

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> ApiSpec:
        with open(path, encoding="utf-8") as f:
            return cls(yaml.safe_load(f))

    def route(self, method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        """The operation for `method path`, its template and its path parameters."""
        for pattern, template, operations in self.routes:
            match = pattern.match(path)
            if match and method.lower() in operations:
                return template, operations[method.lower()], match.groupdict()
        raise Fault(400, f"Invalid request method and/or path: {method} {path}.")

    @staticmethod
    def body_parameter(operation: dict[str, Any]) -> dict[str, Any] | None:
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "body":
                return dict(parameter)
        return None

    def errors(self, schema: dict[str, Any], instance: Any) -> str | None:
        """None if `instance` is valid against `schema` (refs resolved), else one message."""
        validator = jsonschema.Draft4Validator({**schema, "definitions": self.definitions})
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
        if error is None:
            return None
        where = "$" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
        )
        return f"{error.message} - at {where}"

    def check_body(self, method: str, template: str, operation: dict[str, Any], body: Any) -> None:
        parameter = self.body_parameter(operation)
        if parameter is None:
            if body is not None:
                raise Fault(400, f"{method} {template} takes no body.")
            return
        if body is None:
            if parameter.get("required") or method in ("PUT", "PATCH"):
                raise Fault(400, f"Empty {method} request.")
            return
        schema = parameter["schema"]
        problem = self.errors(schema, body)
        if problem is not None:
            name = schema.get("$ref", "#/inline").rsplit("/", 1)[-1]
            raise Fault(400, f"Invalid body for {method} {template} ({name}): {problem}")


def _deny_unknown_fields(node: Any) -> Any:
    """Objects with `properties` and no `additionalProperties` get `additionalProperties: false`."""
    if isinstance(node, dict):
        for value in node.values():
            _deny_unknown_fields(value)
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    elif isinstance(node, list):
        for value in node:
            _deny_unknown_fields(value)
    return node


# --- the microVM's state ------------------------------------------------------------------


class FirecrackerApi:
    """Answers requests like Firecracker would, given what has been configured so far."""

    def __init__(
        self,
        spec: ApiSpec,
        *,
        instance_id: str = "anonymous-instance",
        root: Path | None = None,
        request_log: Path | None = None,
        ignore_ctrl_alt_del: bool = False,
    ) -> None:
        self.spec = spec
        self.instance_id = instance_id
        self.root = root
        self.request_log = request_log
        self.ignore_ctrl_alt_del = ignore_ctrl_alt_del
        self.started = False
        self.machine_config: dict[str, Any] = dict(DEFAULT_MACHINE_CONFIG)
        self.boot_source: dict[str, Any] | None = None
        self.drives: dict[str, dict[str, Any]] = {}
        self.interfaces: dict[str, dict[str, Any]] = {}
        self.mmds_config: dict[str, Any] | None = None
        self.mmds: Any = None
        self.exit_requested = threading.Event()
        self._lock = threading.Lock()

    def handle(self, method: str, raw_path: str, raw_body: bytes) -> tuple[int, Any]:
        body: Any = None
        with self._lock:
            try:
                path = urlsplit(raw_path).path
                if raw_body.strip():
                    try:
                        body = json.loads(raw_body)
                    except ValueError as exc:
                        raise Fault(
                            400,
                            "An error occurred when deserializing the json body of a request: "
                            f"{exc}",
                        ) from None
                status, answer = self._dispatch(method, path, body)
            except Fault as fault:
                status, answer = fault.status, {"fault_message": fault.message}
            self._log(method, raw_path, body, status, answer)
            return status, answer

    def _dispatch(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        template, operation, params = self.spec.route(method, path)
        self.spec.check_body(method, template, operation, body)
        summary = operation.get("summary", "")
        if "Pre-boot only" in summary and self.started:
            raise Fault(400, AFTER_START)
        if "Post-boot only" in summary and not self.started:
            raise Fault(400, BEFORE_START)
        handler = getattr(self, f"op_{operation['operationId']}", None)
        if handler is not None:
            result: tuple[int, Any] = handler(params, body)
            return result
        if method == "GET":
            raise Fault(501, f"{method} {template} is valid but not modelled by the stub.")
        return 204, None

    # Operations, named after their operationId in the spec.

    def op_describeInstance(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        info = {
            "app_name": "Firecracker",
            "id": self.instance_id,
            "state": "Running" if self.started else "Not started",
            "vmm_version": STUB_VERSION,
        }
        problem = self.spec.errors({"$ref": "#/definitions/InstanceInfo"}, info)
        assert problem is None, problem  # the stub must answer what the spec promises
        return 200, info

    def op_getFirecrackerVersion(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {"firecracker_version": STUB_VERSION}

    def op_getMachineConfiguration(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, self.machine_config

    def op_putMachineConfiguration(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        config = {**DEFAULT_MACHINE_CONFIG, **body}
        self._check_machine_config(config)
        self.machine_config = config
        return 204, None

    def op_patchMachineConfiguration(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        config = {**self.machine_config, **body}
        self._check_machine_config(config)
        self.machine_config = config
        return 204, None

    def op_putGuestBootSource(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        self._require_file(body["kernel_image_path"], "kernel image")
        if "initrd_path" in body:
            self._require_file(body["initrd_path"], "initrd")
        self.boot_source = body
        return 204, None

    def op_putGuestDriveByID(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        self._require_same_id(params["drive_id"], body["drive_id"])
        if "path_on_host" in body:
            self._require_file(body["path_on_host"], "drive")
        elif "socket" not in body:
            raise Fault(400, "Unable to create the block device: no path_on_host and no socket.")
        if body["is_root_device"] and any(
            d["is_root_device"] for i, d in self.drives.items() if i != body["drive_id"]
        ):
            raise Fault(400, "A root block device already exists!")
        self.drives[body["drive_id"]] = body
        return 204, None

    def op_putGuestNetworkInterfaceByID(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        self._require_same_id(params["iface_id"], body["iface_id"])
        for other_id, other in self.interfaces.items():
            if other_id != body["iface_id"] and other["host_dev_name"] == body["host_dev_name"]:
                raise Fault(400, f"The host device name {body['host_dev_name']} is already in use.")
        self.interfaces[body["iface_id"]] = body
        return 204, None

    def op_putMmdsConfig(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        if not body["network_interfaces"] or any(
            i not in self.interfaces for i in body["network_interfaces"]
        ):
            raise Fault(
                400,
                "The list of network interface IDs that allow forwarding MMDS requests is "
                "empty or contains an ID that does not correspond to an existing interface.",
            )
        self.mmds_config = body
        return 204, None

    def op_putMmds(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        self.mmds = body
        return 204, None

    def op_getMmds(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.mmds is None:
            raise Fault(404, "The MMDS data store is not initialized.")
        return 200, self.mmds

    def op_createSyncAction(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        action = body["action_type"]
        if action == "InstanceStart":
            if self.started:
                raise Fault(400, AFTER_START)
            if self.boot_source is None:
                raise Fault(400, "Cannot start microvm without kernel configuration.")
            self.started = True
        elif not self.started:
            raise Fault(400, BEFORE_START)
        elif action == "SendCtrlAltDel" and not self.ignore_ctrl_alt_del:
            self.exit_requested.set()  # the guest reboots; with reboot=k Firecracker exits
        return 204, None

    # Helpers.

    def _check_machine_config(self, config: dict[str, Any]) -> None:
        vcpus = config["vcpu_count"]
        if config.get("smt") and vcpus > 1 and vcpus % 2:
            raise Fault(
                400,
                "The vCPU number is invalid! The vCPU number can only be 1 or an "
                "even number when SMT is enabled.",
            )
        if config["mem_size_mib"] < 1:
            raise Fault(400, "The memory size (MiB) is invalid.")

    def _require_file(self, path: str, what: str) -> None:
        host = self.root / path.lstrip("/") if self.root is not None else Path(path)
        if not host.is_file():
            raise Fault(400, f"Cannot open {what} file {path!r}: No such file or directory")

    @staticmethod
    def _require_same_id(in_path: str, in_body: str) -> None:
        if in_path != in_body:
            raise Fault(
                400,
                f"The id from the path [{in_path}] does not match the id from "
                f"the body [{in_body}]!",
            )

    def _log(self, method: str, path: str, body: Any, status: int, answer: Any) -> None:
        if self.request_log is None:
            return
        entry = {"method": method, "path": path, "body": body, "status": status, "answer": answer}
        with open(self.request_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


# --- HTTP/1.1 over the Unix socket --------------------------------------------------------


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    api: FirecrackerApi

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is fine
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, answer = self.server.api.handle(self.command, self.path, raw)
        payload = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)
        self.wfile.flush()

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _answer

    def address_string(self) -> str:
        return "unix-socket"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log has it all
        return


# --- the command line ---------------------------------------------------------------------


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Path, Path | None]:
    """Parse Firecracker's or the jailer's arguments; return them, the socket and the jail root."""
    split = argv.index("--") if "--" in argv else len(argv)
    own, after = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="firecracker-stub")
    parser.add_argument("--request-log", type=Path)
    parser.add_argument("--ignore-ctrl-alt-del", action="store_true")
    parser.add_argument("--api-sock")
    for jailer_flag in ("--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--netns"):
        parser.add_argument(jailer_flag)
    args = parser.parse_args(own)
    if args.exec_file is None:  # plain firecracker
        if after or args.api_sock is None:
            parser.error("firecracker takes --api-sock PATH")
        return args, Path(args.api_sock), None
    # As the jailer: check what the jailer checks, then act as the Firecracker it would exec.
    for flag in ("id", "uid", "gid"):
        if getattr(args, flag) is None:
            parser.error(f"the jailer needs --{flag}")
    if not JAIL_ID.match(args.id):
        parser.error(f"invalid --id {args.id!r}: alphanumerics and hyphens, at most 64")
    exec_file = Path(args.exec_file)
    if not exec_file.is_file() or "firecracker" not in exec_file.name:
        parser.error(f"--exec-file {args.exec_file!r}: not a file named like '*firecracker*'")
    if not (args.uid.isdigit() and args.gid.isdigit()):
        parser.error("--uid and --gid must be numbers")
    if args.netns is not None and not args.netns.startswith("/"):
        parser.error("--netns must be the path of a network namespace")
    fc = argparse.ArgumentParser(prog="firecracker-stub (jailed)")
    fc.add_argument("--api-sock", required=True)
    fc_args = fc.parse_args(after)
    base = Path(args.chroot_base_dir or "/srv/jailer")
    if not base.is_absolute():
        parser.error("--chroot-base-dir must be absolute")
    root = base / exec_file.name / args.id / "root"
    return args, root / fc_args.api_sock.lstrip("/"), root


def main(argv: list[str] | None = None) -> int:
    args, socket_path, root = _parse(sys.argv[1:] if argv is None else argv)
    if socket_path.exists():
        print(f"Failed to open the API socket at {socket_path}: address in use", file=sys.stderr)
        return 1
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    api = FirecrackerApi(
        ApiSpec.load(),
        instance_id=args.id or "anonymous-instance",
        root=root,
        request_log=args.request_log,
        ignore_ctrl_alt_del=args.ignore_ctrl_alt_del,
    )
    server = _Server(str(socket_path), _Handler)
    server.api = api
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"firecracker-stub: API on {socket_path} (no VM is booted)", flush=True)
    api.exit_requested.wait()
    time.sleep(0.05)  # let the answer to SendCtrlAltDel leave before the socket goes
    server.shutdown()
    server.server_close()
    socket_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
