"""The `firecracker` VM driver (plugins/vm_firecracker.py) against a spec-validating stub.

There is no KVM here, so no real Firecracker runs: `tests/firecracker_stub.py` stands in for
the `firecracker` and `jailer` binaries. The driver starts it through its real
process-spawning path; the stub validates every request against Firecracker's own API spec
(tests/fixtures/firecracker/firecracker-api.yaml) and logs it, so these tests prove the
driver speaks the API as specified, not that a guest boots. `ip` is a recording fake.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from runtime import NotFound, VMDriver, VMSpec, group_alive

ROOT = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "firecracker_stub.py"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vm_firecracker = _load("_plugin_vm_firecracker", ROOT / "plugins" / "vm_firecracker.py")
firecracker_stub = _load("_firecracker_stub", STUB)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class Host:
    """Fake binaries and images for one test, and what they recorded."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.requests_log = tmp_path / "requests.jsonl"
        self.ip_log = tmp_path / "ip.log"
        stub = f"exec {sys.executable} {STUB} --request-log {self.requests_log}"
        self.firecracker = _script(self.bin / "firecracker", f'#!/bin/sh\n{stub} "$@"\n')
        self.stubborn = _script(
            self.bin / "firecracker-stubborn", f'#!/bin/sh\n{stub} --ignore-ctrl-alt-del "$@"\n'
        )
        self.jailer = _script(self.bin / "jailer", f'#!/bin/sh\n{stub} "$@"\n')
        self.ip = _script(
            self.bin / "ip",
            f'#!/bin/sh\necho "$*" >> {self.ip_log}\n'
            'if [ "$1" = netns ] && [ "$2" = exec ]; then shift 3; exec "$@"; fi\n',
        )
        self.kernel = tmp_path / "vmlinux.bin"
        self.kernel.write_bytes(b"\x7fELF kernel")
        self.rootfs = tmp_path / "rootfs.img"
        self.rootfs.write_bytes(b"ext4 image")
        self.jail_base = Path(tempfile.mkdtemp(prefix="fcj", dir="/tmp"))  # short socket paths

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "RUNTIME_DATA": str(self.tmp / "data"),
            "RUNTIME_FIRECRACKER_BIN": str(self.firecracker),
            "RUNTIME_FIRECRACKER_KERNEL": str(self.kernel),
            "RUNTIME_FIRECRACKER_ROOTFS": str(self.rootfs),
            "RUNTIME_FIRECRACKER_IP_BIN": str(self.ip),
            "RUNTIME_FIRECRACKER_START_TIMEOUT": "30",
            "RUNTIME_FIRECRACKER_STOP_GRACE": "3",
            "PATH": os.environ.get("PATH", os.defpath),
        }
        return {**env, **overrides}

    def requests(self) -> list[dict[str, Any]]:
        if not self.requests_log.exists():
            return []
        return [json.loads(line) for line in self.requests_log.read_text().splitlines()]

    def configuration(self) -> list[tuple[str, str, Any]]:
        """The requests after the readiness probes (`GET /` until the socket answers)."""
        return [
            (r["method"], r["path"], r["body"])
            for r in self.requests()
            if (r["method"], r["path"]) != ("GET", "/")
        ]

    def ip_calls(self) -> list[str]:
        return self.ip_log.read_text().splitlines() if self.ip_log.exists() else []


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(tmp_path)
    try:
        yield h
    finally:
        shutil.rmtree(h.jail_base, ignore_errors=True)


@pytest.fixture
async def drivers() -> AsyncIterator[list[Any]]:
    """Drivers a test creates; every VM they started is stopped, then killed if need be."""
    made: list[Any] = []
    try:
        yield made
    finally:
        for drv in made:
            try:
                await asyncio.wait_for(drv.close(), 30)
            finally:
                for info in await drv.list():
                    pgid = info.details["pgid"]
                    if pgid and group_alive(pgid):
                        os.killpg(pgid, signal.SIGKILL)


def make(drivers: list[Any], env: dict[str, str]) -> Any:
    drv = vm_firecracker.FirecrackerDriver.from_env(env)
    drivers.append(drv)
    return drv


def exists(path: Path) -> bool:
    return path.exists()


def gone(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return data[data.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


AGENT = VMSpec(
    name="agent-1",
    command=["/usr/local/bin/agent", "--once"],
    env={"RUNTIME_URL": "http://10.0.0.1:3210", "RUNTIME_API_KEY": "k-secret", "TICKET_ID": "t-9"},
    memory_mb=1024,
    vcpus=2,
    ticket_id="t-9",
)


# --- the stub itself: its validation is real ----------------------------------------------


@pytest.fixture
def stub_socket() -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="fcs", dir="/tmp"))
    socket_path = workdir / "api.sock"
    proc = subprocess.Popen(
        [sys.executable, str(STUB), "--api-sock", str(socket_path)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert proc.poll() is None, "the stub exited"
            assert time.monotonic() < deadline, "the stub did not open its socket"
            time.sleep(0.02)
        yield socket_path
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.anyio
async def test_stub_rejects_what_firecracker_would_reject(stub_socket: Path) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(stub_socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=10) as c:

        async def fault(method: str, path: str, body: Any = None) -> str:
            response = await c.request(method, path, json=body)
            assert response.status_code == 400, response.text
            return str(response.json()["fault_message"])

        assert await fault("PUT", "/machine-config", {"vcpu_count": 0, "mem_size_mib": 128}) == (
            "Invalid body for PUT /machine-config (MachineConfiguration): "
            "0 is less than the minimum of 1 - at $.vcpu_count"
        )
        assert "'mem_size_mib' is a required property - at $" in await fault(
            "PUT", "/machine-config", {"vcpu_count": 1}
        )
        assert "'vcpus' was unexpected" in await fault(
            "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128, "vcpus": 1}
        )
        assert "'1' is not of type 'integer' - at $.vcpu_count" in await fault(
            "PUT", "/machine-config", {"vcpu_count": "1", "mem_size_mib": 128}
        )
        assert "(Drive)" in await fault("PUT", "/drives/rootfs", {"drive_id": "rootfs"})
        assert "does not match the id from the body" in await fault(
            "PUT", "/drives/a", {"drive_id": "b", "is_root_device": False, "path_on_host": "/x"}
        )
        assert "is not one of" in await fault("PUT", "/actions", {"action_type": "Reboot"})
        assert await fault("GET", "/no-such-path") == (
            "Invalid request method and/or path: GET /no-such-path."
        )
        assert "DELETE /machine-config" in await fault("DELETE", "/machine-config")
        assert await fault("PUT", "/actions", {"action_type": "InstanceStart"}) == (
            "Cannot start microvm without kernel configuration."
        )
        assert await fault("PATCH", "/drives/rootfs", {"drive_id": "rootfs"}) == (
            "The requested operation is not supported before starting the microVM."
        )

        ok = await c.put("/machine-config", json={"vcpu_count": 2, "mem_size_mib": 256})
        assert (ok.status_code, ok.content) == (204, b"")
        info = (await c.get("/")).json()
        assert info["state"] == "Not started"


def test_stub_spec_is_firecrackers_own() -> None:
    spec = firecracker_stub.ApiSpec.load()
    assert spec.document["swagger"] == "2.0"
    assert spec.document["info"]["title"] == "Firecracker API"
    template, operation, params = spec.route("PUT", "/network-interfaces/eth0")
    assert (template, operation["operationId"], params) == (
        "/network-interfaces/{iface_id}",
        "putGuestNetworkInterfaceByID",
        {"iface_id": "eth0"},
    )


# --- the driver ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_driver_satisfies_the_protocol(host: Host, drivers: list[Any]) -> None:
    drv = make(drivers, host.env())
    assert isinstance(drv, VMDriver)
    assert drv.name == "firecracker"


def test_names_are_deterministic_and_short() -> None:
    netns, tap, mac = vm_firecracker.vm_names("fc-0123456789ab")
    assert (netns, tap, mac) == ("fc-0123456789ab", "fc0123456789ab", "06:00:01:23:45:67")
    assert len(tap) <= 15
    assert vm_firecracker.vm_names("fc-0123456789ab") == (netns, tap, mac)


@pytest.mark.anyio
async def test_spawn_configures_and_starts_then_stop_shuts_down(
    host: Host, drivers: list[Any]
) -> None:
    drv = make(drivers, host.env())

    info = await drv.spawn(AGENT)

    vm_id = info.vm_id
    assert vm_id.startswith("fc-") and len(vm_id) == 15
    assert info.state == "running" and info.details["instance_state"] == "Running"
    netns, tap, mac = vm_firecracker.vm_names(vm_id)
    workdir = Path(info.details["workdir"])
    rootfs_copy = workdir / "rootfs.ext4"
    assert rootfs_copy.read_bytes() == host.rootfs.read_bytes()
    assert host.configuration() == [
        ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 1024, "smt": False}),
        (
            "PUT",
            "/boot-source",
            {
                "kernel_image_path": str(host.kernel.resolve()),
                "boot_args": vm_firecracker.DEFAULT_BOOT_ARGS,
            },
        ),
        (
            "PUT",
            "/drives/rootfs",
            {
                "drive_id": "rootfs",
                "path_on_host": str(rootfs_copy),
                "is_root_device": True,
                "is_read_only": False,
            },
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            {"iface_id": "eth0", "host_dev_name": tap, "guest_mac": mac},
        ),
        ("PUT", "/mmds/config", {"version": "V2", "network_interfaces": ["eth0"]}),
        (
            "PUT",
            "/mmds",
            {
                "swarm": {
                    "vm_id": vm_id,
                    "name": "agent-1",
                    "ticket_id": "t-9",
                    "command": ["/usr/local/bin/agent", "--once"],
                    "env": {**AGENT.env, "VM_ID": vm_id},
                }
            },
        ),
        ("PUT", "/actions", {"action_type": "InstanceStart"}),
    ]
    assert all(r["status"] < 300 for r in host.requests())
    socket_path = Path(info.details["socket"])
    assert host.ip_calls() == [
        f"netns add {netns}",
        f"-n {netns} tuntap add dev {tap} mode tap",
        f"-n {netns} link set {tap} up",
        f"netns exec {netns} {host.firecracker} --api-sock {socket_path}",
    ]
    assert os.getsid(info.pid) == info.pid  # its own session and process group
    assert (await drv.status(vm_id)).state == "running"
    assert [vm.vm_id for vm in await drv.list()] == [vm_id]

    stopped = await drv.stop(vm_id)

    assert (stopped.state, stopped.exit_code) == ("stopped", 0)
    assert host.configuration()[-1] == ("PUT", "/actions", {"action_type": "SendCtrlAltDel"})
    assert host.ip_calls()[-1] == f"netns del {netns}"
    assert gone(info.pid)
    assert not exists(socket_path) and not exists(rootfs_copy)
    assert (workdir / "console.log").read_text().startswith("firecracker-stub: API on")


@pytest.mark.anyio
async def test_jailer_runs_firecracker_in_its_chroot(host: Host, drivers: list[Any]) -> None:
    drv = make(
        drivers,
        host.env(
            RUNTIME_JAILER_BIN=str(host.jailer),
            RUNTIME_JAILER_UID=str(os.getuid()),
            RUNTIME_JAILER_GID=str(os.getgid()),
            RUNTIME_JAILER_CHROOT_BASE=str(host.jail_base),
        ),
    )

    info = await drv.spawn(AGENT)

    netns, _, _ = vm_firecracker.vm_names(info.vm_id)
    jail_root = host.jail_base / "firecracker" / info.vm_id / "root"
    assert info.state == "running" and info.details["jailed"] is True
    assert Path(info.details["socket"]) == jail_root / "run" / "firecracker.socket"
    assert (jail_root / "vmlinux").stat().st_ino == host.kernel.stat().st_ino  # hard link
    assert (jail_root / "rootfs.ext4").read_bytes() == host.rootfs.read_bytes()  # private copy
    config = {path: body for _, path, body in host.configuration()}
    assert config["/boot-source"]["kernel_image_path"] == "/vmlinux"
    assert config["/drives/rootfs"]["path_on_host"] == "/rootfs.ext4"
    assert drv.jailer_command(info.vm_id, str(host.jailer), str(host.firecracker), netns) == [
        str(host.jailer),
        "--id",
        info.vm_id,
        "--exec-file",
        str(host.firecracker),
        "--uid",
        str(os.getuid()),
        "--gid",
        str(os.getgid()),
        "--chroot-base-dir",
        str(host.jail_base),
        "--netns",
        f"/var/run/netns/{netns}",
        "--",
        "--api-sock",
        "/run/firecracker.socket",
    ]
    assert not any(" exec " in call for call in host.ip_calls())  # the jailer joins the netns

    stopped = await drv.stop(info.vm_id)

    assert stopped.state == "stopped"
    assert not jail_root.parent.exists()
    assert host.kernel.exists()  # only the link went


@pytest.mark.anyio
async def test_without_network_or_rootfs_copy(host: Host, drivers: list[Any]) -> None:
    drv = make(
        drivers, host.env(RUNTIME_FIRECRACKER_NETWORK="0", RUNTIME_FIRECRACKER_ROOTFS_COPY="0")
    )

    info = await drv.spawn(AGENT)

    assert info.state == "running" and info.details["tap"] is None
    paths = [path for _, path, _ in host.configuration()]
    assert paths == ["/machine-config", "/boot-source", "/drives/rootfs", "/actions"]
    drive = host.configuration()[2][2]
    assert (drive["path_on_host"], drive["is_read_only"]) == (str(host.rootfs.resolve()), True)
    assert host.ip_calls() == []
    await drv.stop(info.vm_id)
    assert host.rootfs.exists()


@pytest.mark.anyio
async def test_stop_escalates_when_the_guest_ignores_ctrl_alt_del(
    host: Host, drivers: list[Any]
) -> None:
    drv = make(
        drivers,
        host.env(RUNTIME_FIRECRACKER_BIN=str(host.stubborn), RUNTIME_FIRECRACKER_STOP_GRACE="0.5"),
    )
    info = await drv.spawn(AGENT)

    started = time.monotonic()
    stopped = await drv.stop(info.vm_id)

    assert (stopped.state, stopped.exit_code) == ("stopped", -signal.SIGTERM)
    assert 0.5 <= time.monotonic() - started < 10
    assert gone(info.pid)


@pytest.mark.anyio
async def test_api_error_names_the_request_and_undoes_the_spawn(
    host: Host, drivers: list[Any]
) -> None:
    drv = make(drivers, host.env())

    with pytest.raises(vm_firecracker.FirecrackerAPIError) as caught:
        await drv.spawn(VMSpec(name="bad", vcpus=0))

    err = caught.value
    assert (err.method, err.path, err.status_code) == ("PUT", "/machine-config", 400)
    assert str(err).startswith("Firecracker refused PUT /machine-config for VM fc-")
    assert "minimum of 1 - at $.vcpu_count" in err.fault_message
    [failed] = await drv.list()
    assert failed.state == "error" and "PUT /machine-config" in failed.details["error"]
    assert failed.pid is not None and gone(failed.pid)
    assert host.ip_calls()[-1] == f"netns del {failed.details['netns']}"


@pytest.mark.anyio
async def test_a_binary_that_dies_at_once_is_reported(host: Host, drivers: list[Any]) -> None:
    broken = _script(host.bin / "firecracker-broken", "#!/bin/sh\necho 'no kvm' >&2\nexit 3\n")
    drv = make(
        drivers, host.env(RUNTIME_FIRECRACKER_BIN=str(broken), RUNTIME_FIRECRACKER_NETWORK="0")
    )

    with pytest.raises(vm_firecracker.FirecrackerError, match=r"exited with code 3.*no kvm"):
        await drv.spawn(AGENT)


@pytest.mark.anyio
async def test_configuration_errors_are_clear(host: Host, drivers: list[Any]) -> None:
    no_kernel = make(drivers, host.env(RUNTIME_FIRECRACKER_KERNEL=""))
    with pytest.raises(vm_firecracker.FirecrackerError, match="RUNTIME_FIRECRACKER_KERNEL"):
        await no_kernel.spawn(AGENT)
    missing = make(drivers, host.env(RUNTIME_FIRECRACKER_BIN=str(host.bin / "nope")))
    with pytest.raises(vm_firecracker.FirecrackerError, match="RUNTIME_FIRECRACKER_BIN"):
        await missing.spawn(AGENT)
    with pytest.raises(NotFound, match="fc-nope"):
        await no_kernel.status("fc-nope")
    assert await no_kernel.list() == [] and await missing.list() == []


def test_hook_reads_its_configuration_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_JAILER_BIN", "/usr/local/bin/jailer")
    monkeypatch.setenv("RUNTIME_JAILER_UID", "123")
    monkeypatch.setenv("RUNTIME_FIRECRACKER_STOP_GRACE", "2.5")

    drv = vm_firecracker.vm_drivers()["firecracker"]

    assert drv.jailed and drv.config.jailer_uid == 123 and drv.config.stop_grace == 2.5
    assert drv.config.chroot_base == Path("/srv/jailer")


# --- microVMs another server process started (serve --workers N) --------------------------


@pytest.mark.anyio
async def test_a_sibling_process_reports_and_stops_the_microvm(
    host: Host, drivers: list[Any]
) -> None:
    starter, sibling = make(drivers, host.env()), make(drivers, host.env())
    info = await starter.spawn(AGENT)
    workdir = Path(info.details["workdir"])
    netns = vm_firecracker.vm_names(info.vm_id)[0]

    seen = await sibling.status(info.vm_id)

    assert (seen.state, seen.pid) == ("running", info.pid)
    assert seen.details["instance_state"] == "Running"  # asked over the same API socket
    assert seen.details["started_by"] == "another server process"
    assert seen.details["name"] == "agent-1" and seen.details["netns"] == netns

    stopped = await sibling.stop(info.vm_id)

    assert (stopped.state, stopped.exit_code) == ("stopped", 0)
    assert host.configuration()[-1] == ("PUT", "/actions", {"action_type": "SendCtrlAltDel"})
    assert gone(info.pid)
    # The starting process reaped it and cleaned up, once; both report the same.
    deadline = time.monotonic() + 10
    while exists(Path(info.details["socket"])) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    assert not exists(Path(info.details["socket"]))
    assert host.ip_calls().count(f"netns del {netns}") == 1
    assert not exists(workdir / "rootfs.ext4")
    assert (await starter.status(info.vm_id)).state == "stopped"
    assert [vm.vm_id for vm in await sibling.list()] == [info.vm_id]


async def spawn_from_a_process_that_exits(env: dict[str, str]) -> tuple[str, int, Path]:
    """Spawn a microVM from a separate Python process that then exits without stopping it
    (as a crashed worker would): its (vm_id, pgid, API socket)."""
    plugin = str(ROOT / "plugins" / "vm_firecracker.py")
    starter = (
        "import asyncio, importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('fc', {plugin!r})\n"
        "m = sys.modules['fc'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "async def main():\n"
        f"    d = m.FirecrackerDriver.from_env(json.loads({json.dumps(env)!r}))\n"
        "    info = await d.spawn(m.VMSpec(name='orphan', memory_mb=128))\n"
        "    print(info.vm_id, info.pid, info.details['socket'], flush=True)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", starter, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    vm_id, pgid, socket_path = out.decode().split()
    return vm_id, int(pgid), Path(socket_path)


@pytest.mark.anyio
async def test_the_microvm_of_a_server_process_that_is_gone_is_stopped_and_cleaned_up(
    host: Host, drivers: list[Any]
) -> None:
    """The starting process exits without stopping its microVM (a crash): another one stops
    it and removes what the first would have removed."""
    vm_id, pgid, socket_path = await spawn_from_a_process_that_exits(host.env())
    survivor = make(drivers, host.env())
    try:
        assert (await survivor.status(vm_id)).state == "running"

        stopped = await survivor.stop(vm_id)

        assert stopped.state == "stopped" and stopped.exit_code is None
        assert stopped.details["exit"].startswith("unknown")
        assert not group_alive(pgid)
        assert not exists(socket_path)
        assert host.ip_calls()[-1] == f"netns del {vm_firecracker.vm_names(vm_id)[0]}"
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


@pytest.mark.anyio
async def test_stop_cleans_up_after_a_microvm_whose_starter_and_vmm_are_both_gone(
    host: Host, drivers: list[Any]
) -> None:
    vm_id, pgid, socket_path = await spawn_from_a_process_that_exits(host.env())
    os.killpg(pgid, signal.SIGKILL)  # Firecracker dies too, and nobody reaps or cleans up
    survivor = make(drivers, host.env())
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)

    stopped = await survivor.stop(vm_id)

    assert stopped.state == "error" and stopped.details["exit"].startswith("unknown")
    assert not exists(socket_path)
    assert host.ip_calls()[-1] == f"netns del {vm_firecracker.vm_names(vm_id)[0]}"


@pytest.mark.anyio
async def test_ids_that_name_no_microvm_are_not_found(host: Host, drivers: list[Any]) -> None:
    drv = make(drivers, host.env())
    process_vm = Path(host.env()["RUNTIME_DATA"]) / "vms" / "proc-0123456789ab"
    process_vm.mkdir(parents=True)
    (process_vm / "vm.json").write_text(
        json.dumps(
            {"driver": "process", "vm_id": "proc-0123456789ab", "pgid": 1, "leader_start": 1}
        )
    )
    for bad in ("fc-nope", "../../etc", "proc-0123456789ab"):  # the last: another driver's
        with pytest.raises(NotFound):
            await drv.status(bad)
