"""The `firecracker` VM driver: one Firecracker microVM per agent, driven over its REST API.

Tested against a spec-validating stub, not a real Firecracker: this machine has no KVM, so
`tests/test_vm_firecracker.py` starts `tests/firecracker_stub.py` as the Firecracker (and
jailer) binary. The stub checks every request against Firecracker's own API description
(`tests/fixtures/firecracker/firecracker-api.yaml`) and models the pre-boot/boot state, but
it boots no guest: what happens inside a real guest (kernel, rootfs, network, MMDS reads) is
untested here.

`spawn(spec)`:
1. picks `vm_id = fc-<12 hex>`, makes `$RUNTIME_DATA/vms/<vm_id>/` (Firecracker's stdout and
   stderr, i.e. the guest's serial console, go to `console.log` there);
2. with networking on, creates a network namespace named `vm_id` holding a tap device named
   `fc<12 hex>` (14 characters; Linux allows 15) via `ip netns add` / `ip -n <ns> tuntap add`;
3. starts Firecracker in its own session and process group: `firecracker --api-sock <sock>`
   (under `ip netns exec <ns>` when networked), or, when a jailer is configured,
   `jailer --id <vm_id> --exec-file <firecracker> --uid U --gid G --chroot-base-dir DIR
   [--netns /var/run/netns/<ns>] -- --api-sock /run/firecracker.socket`, and waits (bounded)
   until `GET /` answers on the socket;
4. puts the kernel (hard link, else copy) and a private copy of the rootfs (`cp --reflink=auto
   --sparse=always`) where Firecracker can open them: the jail's root, or the VM's directory;
5. `PUT /machine-config`, `/boot-source`, `/drives/rootfs`, and when networked
   `/network-interfaces/eth0`, `/mmds/config` (V2 on eth0), `/mmds` (the agent's command,
   environment, vm_id and ticket, under `"swarm"`: a guest reads them from 169.254.169.254),
   then `PUT /actions {"action_type": "InstanceStart"}`.
Any error undoes what was done (process group killed, namespace deleted, jail removed) and
raises `FirecrackerError`; an error answer from the API raises `FirecrackerAPIError`, whose
message names the request and carries Firecracker's `fault_message`.

`stop` sends `SendCtrlAltDel` (a guest booted with `reboot=k` then makes Firecracker exit),
waits the grace period, then SIGTERM and, after another grace period, SIGKILL to the group.
When Firecracker exits, for whatever reason, the driver reaps it and removes the namespace,
the jail and the rootfs copy; `console.log` stays. `status` asks `GET /` (InstanceInfo).

Any server process on the host can report and stop a microVM another one started (with
`serve --workers N`, or after the starting worker died), through `runtime.vmfiles`: once the
VM runs, `spawn` writes `vm.json` (process group, leader start time, API socket, namespace,
jail, rootfs copy); the starting process writes `exit.json` when Firecracker exits. A sibling
process asks the same API socket, sends the same SendCtrlAltDel, signals the group only while
it is still that group, and cleans up itself when the starting process is gone.

Configuration, read when `vm_drivers()` is called:
    RUNTIME_DATA                        state directory (./.runtime)
    RUNTIME_FIRECRACKER_BIN             the firecracker binary (firecracker, looked up on PATH)
    RUNTIME_JAILER_BIN                  the jailer binary; unset = run Firecracker unjailed
    RUNTIME_JAILER_UID / _GID           uid/gid the jailer drops to (65534)
    RUNTIME_JAILER_CHROOT_BASE          the jailer's --chroot-base-dir (/srv/jailer)
    RUNTIME_FIRECRACKER_KERNEL          kernel image when the spec has none
    RUNTIME_FIRECRACKER_ROOTFS          root filesystem image when the spec has none
    RUNTIME_FIRECRACKER_BOOT_ARGS       (console=ttyS0 reboot=k panic=1 pci=off)
    RUNTIME_FIRECRACKER_ROOTFS_COPY     1 (default): a writable private copy per VM;
                                        0: share the image, attached read-only
    RUNTIME_FIRECRACKER_NETWORK         1 (default): per-VM netns + tap + MMDS; 0: no network
    RUNTIME_FIRECRACKER_IP_BIN          the iproute2 `ip` binary (ip)
    RUNTIME_FIRECRACKER_START_TIMEOUT   seconds to wait for the API socket (10)
    RUNTIME_FIRECRACKER_STOP_GRACE      seconds for each stop step (5)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import httpx

from runtime import (
    NotFound,
    RuntimeFailure,
    VMInfo,
    VMSpec,
    hookimpl,
    spawn_group,
    start_time,
    terminate_group,
    terminate_sibling_group,
    vmfiles,
)

DRIVER_NAME = "firecracker"
PASSED_ENV = ("PATH", "HOME", "LANG")
DEFAULT_BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off"
JAILED_SOCKET = "/run/firecracker.socket"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the NUL
API_TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 2.0  # `status` must stay quick even when the VMM hangs
COMMAND_TIMEOUT_S = 30.0  # ip, cp
POLL_S = 0.05

Argv = list[str]
State = Literal["starting", "running", "busy", "stopping", "stopped", "error"]
# InstanceInfo.state -> VMInfo.state; a paused VM still exists and holds its resources.
INSTANCE_STATES: dict[str, State] = {
    "Not started": "starting",
    "Running": "running",
    "Paused": "running",
}


class FirecrackerError(RuntimeFailure):
    """The Firecracker VM could not be started or controlled."""


class FirecrackerAPIError(FirecrackerError):
    """Firecracker refused an API request."""

    def __init__(self, vm_id: str, method: str, path: str, status: int, fault: str) -> None:
        super().__init__(
            f"Firecracker refused {method} {path} for VM {vm_id} ({status}): {fault}",
            details={
                "vm_id": vm_id,
                "method": method,
                "path": path,
                "status": status,
                "fault_message": fault,
            },
        )
        self.method, self.path, self.status_code, self.fault_message = method, path, status, fault


@dataclass(frozen=True)
class FirecrackerConfig:
    data_dir: Path
    firecracker_bin: str = "firecracker"
    jailer_bin: str | None = None
    jailer_uid: int = 65534
    jailer_gid: int = 65534
    chroot_base: Path = Path("/srv/jailer")
    kernel_image: str | None = None
    rootfs: str | None = None
    boot_args: str = DEFAULT_BOOT_ARGS
    copy_rootfs: bool = True
    network: bool = True
    ip_bin: str = "ip"
    start_timeout: float = 10.0
    stop_grace: float = 5.0
    base_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FirecrackerConfig:
        env = os.environ if environ is None else environ

        def text(key: str, default: str | None = None) -> str | None:
            return env.get(key, "").strip() or default

        return cls(
            data_dir=Path(text("RUNTIME_DATA", "./.runtime") or "./.runtime"),
            firecracker_bin=text("RUNTIME_FIRECRACKER_BIN", "firecracker") or "firecracker",
            jailer_bin=text("RUNTIME_JAILER_BIN"),
            jailer_uid=int(_number(env, "RUNTIME_JAILER_UID", 65534)),
            jailer_gid=int(_number(env, "RUNTIME_JAILER_GID", 65534)),
            chroot_base=Path(text("RUNTIME_JAILER_CHROOT_BASE", "/srv/jailer") or "/srv/jailer"),
            kernel_image=text("RUNTIME_FIRECRACKER_KERNEL"),
            rootfs=text("RUNTIME_FIRECRACKER_ROOTFS"),
            boot_args=text("RUNTIME_FIRECRACKER_BOOT_ARGS", DEFAULT_BOOT_ARGS) or DEFAULT_BOOT_ARGS,
            copy_rootfs=_flag(env, "RUNTIME_FIRECRACKER_ROOTFS_COPY", True),
            network=_flag(env, "RUNTIME_FIRECRACKER_NETWORK", True),
            ip_bin=text("RUNTIME_FIRECRACKER_IP_BIN", "ip") or "ip",
            start_timeout=_number(env, "RUNTIME_FIRECRACKER_START_TIMEOUT", 10.0),
            stop_grace=_number(env, "RUNTIME_FIRECRACKER_STOP_GRACE", 5.0),
            base_env={key: env[key] for key in PASSED_ENV if key in env},
        )


def vm_names(vm_id: str) -> tuple[str, str, str]:
    """Deterministic network names for a VM: (netns, tap, guest MAC).

    `fc-0123456789ab` -> (`fc-0123456789ab`, `fc0123456789ab`, `06:00:01:23:45:67`). The tap
    name stays within Linux's 15 characters; the MAC is locally administered and unicast.
    """
    suffix = vm_id.removeprefix("fc-")
    mac = "06:00:" + ":".join(suffix[i : i + 2] for i in range(0, 8, 2))
    return vm_id, f"fc{suffix}"[:15], mac


@dataclass(eq=False)
class _FirecrackerVM:
    vm_id: str
    spec: VMSpec
    workdir: Path
    socket_path: Path
    jail_root: Path | None
    netns: str | None
    tap: str | None
    guest_mac: str
    started_at: float
    proc: asyncio.subprocess.Process | None = None
    reaper: asyncio.Task[None] | None = None
    stopping: asyncio.Task[None] | None = None
    configured: bool = False
    stop_requested: bool = False
    netns_created: bool = False
    torn_down: bool = False
    rootfs_copy: Path | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class _SiblingVM(vmfiles.SiblingVM):
    """A microVM another server process on this host started, known by its vm.json; it has
    the attributes `_teardown` and the API calls read from a `_FirecrackerVM`."""

    socket_path: Path
    jail_root: Path | None
    netns: str | None
    rootfs_copy: Path | None
    netns_created: bool = True  # recorded once the VM ran, so its namespace exists
    torn_down: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_record(cls, workdir: Path, record: dict[str, Any]) -> _SiblingVM:
        def path(key: str) -> Path | None:
            return Path(record[key]) if record.get(key) else None

        return cls(
            vm_id=record["vm_id"],
            record=record,
            workdir=workdir,
            socket_path=Path(record["socket"]),
            jail_root=path("jail_root"),
            netns=record.get("netns"),
            rootfs_copy=path("rootfs_copy"),
        )


AnyVM = _FirecrackerVM | _SiblingVM


class FirecrackerDriver:
    """Runs each VM as a Firecracker microVM; see the module docstring."""

    name = DRIVER_NAME

    def __init__(self, config: FirecrackerConfig) -> None:
        self.config = config
        self._vms: dict[str, _FirecrackerVM] = {}
        self._siblings: dict[str, _SiblingVM] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FirecrackerDriver:
        return cls(FirecrackerConfig.from_env(environ))

    @property
    def jailed(self) -> bool:
        return self.config.jailer_bin is not None

    # --- the VMDriver interface -----------------------------------------------------------

    async def spawn(self, spec: VMSpec) -> VMInfo:
        kernel = _existing_file(
            spec.kernel_image or self.config.kernel_image,
            "kernel image",
            "VMSpec.kernel_image or RUNTIME_FIRECRACKER_KERNEL",
        )
        rootfs = _existing_file(
            spec.rootfs or self.config.rootfs,
            "root filesystem",
            "VMSpec.rootfs or RUNTIME_FIRECRACKER_ROOTFS",
        )
        firecracker = _executable(self.config.firecracker_bin, "RUNTIME_FIRECRACKER_BIN")
        jailer = _executable(self.config.jailer_bin, "RUNTIME_JAILER_BIN") if self.jailed else None

        vm = self._new_vm(spec, firecracker)
        self._vms[vm.vm_id] = vm
        try:
            if vm.netns is not None:
                await self._create_network(vm)
            await self._start_process(vm, firecracker, jailer)
            await self._wait_for_api(vm)
            kernel_path, rootfs_path = await self._place_files(vm, kernel, rootfs)
            await self._configure(vm, kernel_path, rootfs_path)
        except BaseException as exc:
            vm.error = str(exc) or type(exc).__name__
            await self._abort(vm)
            if isinstance(exc, OSError):
                raise FirecrackerError(f"Could not start VM {vm.vm_id}: {exc}") from exc
            raise
        record = self._record(vm)
        if record["leader_start"] is not None:  # without /proc, siblings cannot tell it apart
            vmfiles.write_record(vm.workdir, record)
        return await self.status(vm.vm_id)

    async def stop(self, vm_id: str) -> VMInfo:
        vm = self._get(vm_id)
        if isinstance(vm, _SiblingVM):
            return await self._stop_sibling(vm)
        if vm.stopping is None and vm.proc is not None and not vm.torn_down:
            vm.stop_requested = vm.proc.returncode is None
            if vm.stop_requested:
                vmfiles.mark_stop_requested(vm.workdir)  # for the other server processes
            vm.stopping = asyncio.ensure_future(self._shutdown(vm))
        if vm.stopping is not None:
            await asyncio.shield(vm.stopping)
        return await self.status(vm_id)

    async def status(self, vm_id: str) -> VMInfo:
        vm = self._get(vm_id)
        if isinstance(vm, _SiblingVM):
            return await self._sibling_status(vm)
        details = self._details(vm)
        proc = vm.proc
        code = proc.returncode if proc is not None else None
        requested = details["stop_requested"]
        state: State
        if vm.error is not None:
            state = "error"
        elif proc is None or code is not None:
            state = (
                "starting" if proc is None else ("stopped" if code == 0 or requested else "error")
            )
        elif requested:
            state = "stopping"
        elif not vm.configured:
            state = "starting"
        else:
            state = await self._instance_state(vm, details)
        pid = proc.pid if proc is not None else None
        return VMInfo(vm.vm_id, DRIVER_NAME, state, pid, code, details)

    async def list(self) -> list[VMInfo]:
        """The VMs this driver started, and those of sibling processes it was asked about."""
        return [await self.status(vm_id) for vm_id in [*self._vms, *self._siblings]]

    # --- beyond the interface -------------------------------------------------------------

    async def close(self) -> None:
        """Stop every VM still running (called from the `shutdown` hook)."""
        live = [vm_id for vm_id, vm in self._vms.items() if not vm.torn_down]
        await asyncio.gather(*(self.stop(vm_id) for vm_id in live))

    def jailer_command(self, vm_id: str, jailer: str, firecracker: str, netns: str | None) -> Argv:
        """The jailer command line for `vm_id` (Firecracker's own arguments after `--`)."""
        argv = [
            jailer,
            "--id",
            vm_id,
            "--exec-file",
            firecracker,
            "--uid",
            str(self.config.jailer_uid),
            "--gid",
            str(self.config.jailer_gid),
            "--chroot-base-dir",
            str(self.config.chroot_base),
        ]
        if netns is not None:
            argv += ["--netns", f"/var/run/netns/{netns}"]
        return [*argv, "--", "--api-sock", JAILED_SOCKET]

    # --- spawning -------------------------------------------------------------------------

    def _new_vm(self, spec: VMSpec, firecracker: str) -> _FirecrackerVM:
        vm_id = f"fc-{uuid.uuid4().hex[:12]}"
        workdir = (self.config.data_dir / "vms" / vm_id).resolve()
        workdir.mkdir(parents=True)
        jail_root: Path | None = None
        if self.jailed:
            jail_root = self.config.chroot_base / Path(firecracker).name / vm_id / "root"
            socket_path = jail_root / JAILED_SOCKET.lstrip("/")
            if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
                raise FirecrackerError(
                    f"The jailed API socket path {socket_path} is longer than {MAX_SOCKET_PATH} "
                    "bytes: shorten RUNTIME_JAILER_CHROOT_BASE"
                )
        else:
            socket_path = workdir / "firecracker.socket"
            if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH - 8:
                socket_path = Path(tempfile.gettempdir()) / f"{vm_id}.socket"
        names = vm_names(vm_id)
        netns: str | None = names[0] if self.config.network else None
        tap: str | None = names[1] if self.config.network else None
        mac = names[2]
        return _FirecrackerVM(
            vm_id, spec, workdir, socket_path, jail_root, netns, tap, mac, time.time()
        )

    async def _create_network(self, vm: _FirecrackerVM) -> None:
        assert vm.netns is not None and vm.tap is not None
        await self._run([self.config.ip_bin, "netns", "add", vm.netns])
        vm.netns_created = True
        await self._run(
            [self.config.ip_bin, "-n", vm.netns, "tuntap", "add", "dev", vm.tap, "mode", "tap"]
        )
        await self._run([self.config.ip_bin, "-n", vm.netns, "link", "set", vm.tap, "up"])

    async def _start_process(
        self, vm: _FirecrackerVM, firecracker: str, jailer: str | None
    ) -> None:
        if jailer is not None:
            argv = self.jailer_command(vm.vm_id, jailer, firecracker, vm.netns)
        else:
            argv = [firecracker, "--api-sock", str(vm.socket_path)]
            if vm.netns is not None:
                argv = [self.config.ip_bin, "netns", "exec", vm.netns, *argv]
        console = _open_console(vm.workdir)
        with console:
            vm.proc = await spawn_group(
                argv,
                cwd=vm.workdir,
                env=self.config.base_env,
                stdout=console,
                stderr=asyncio.subprocess.STDOUT,
            )
        vm.reaper = asyncio.ensure_future(self._reap(vm))

    async def _wait_for_api(self, vm: _FirecrackerVM) -> None:
        assert vm.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout
        last_error = "the socket never appeared"
        while True:
            if vm.proc.returncode is not None:
                raise FirecrackerError(
                    f"Firecracker for VM {vm.vm_id} exited with code {vm.proc.returncode} before "
                    f"its API answered; console: {_tail(vm.workdir / 'console.log')}"
                )
            if vm.socket_path.exists():
                try:
                    await self._request(vm, "GET", "/")
                    return
                except FirecrackerError as exc:
                    last_error = str(exc)
            if loop.time() >= deadline:
                raise FirecrackerError(
                    f"Firecracker's API socket {vm.socket_path} for VM {vm.vm_id} did not answer "
                    f"within {self.config.start_timeout} s: {last_error}"
                )
            await asyncio.sleep(POLL_S)

    async def _place_files(self, vm: _FirecrackerVM, kernel: Path, rootfs: Path) -> tuple[str, str]:
        """Put kernel and rootfs where Firecracker can open them; return the paths it sees."""
        uid, gid = self.config.jailer_uid, self.config.jailer_gid
        if vm.jail_root is not None:
            target_kernel = vm.jail_root / "vmlinux"
            await asyncio.to_thread(_link_or_copy, kernel, target_kernel)
            target_rootfs = vm.jail_root / "rootfs.ext4"
            if self.config.copy_rootfs:
                await self._copy(rootfs, target_rootfs)
            else:
                await asyncio.to_thread(_link_or_copy, rootfs, target_rootfs)
            await asyncio.to_thread(_chown, target_rootfs, uid, gid)
            return "/vmlinux", "/rootfs.ext4"
        if self.config.copy_rootfs:
            vm.rootfs_copy = vm.workdir / "rootfs.ext4"
            await self._copy(rootfs, vm.rootfs_copy)
            return str(kernel), str(vm.rootfs_copy)
        return str(kernel), str(rootfs)

    async def _copy(self, source: Path, target: Path) -> None:
        await self._run(["cp", "--reflink=auto", "--sparse=always", str(source), str(target)])

    async def _configure(self, vm: _FirecrackerVM, kernel: str, rootfs: str) -> None:
        spec = vm.spec
        requests: list[tuple[str, dict[str, Any]]] = [
            (
                "/machine-config",
                {"vcpu_count": spec.vcpus, "mem_size_mib": spec.memory_mb, "smt": False},
            ),
            ("/boot-source", {"kernel_image_path": kernel, "boot_args": self.config.boot_args}),
            (
                "/drives/rootfs",
                {
                    "drive_id": "rootfs",
                    "path_on_host": rootfs,
                    "is_root_device": True,
                    "is_read_only": not self.config.copy_rootfs,
                },
            ),
        ]
        if vm.tap is not None:
            requests += [
                (
                    "/network-interfaces/eth0",
                    {"iface_id": "eth0", "host_dev_name": vm.tap, "guest_mac": vm.guest_mac},
                ),
                ("/mmds/config", {"version": "V2", "network_interfaces": ["eth0"]}),
                ("/mmds", {"swarm": self._metadata(vm)}),
            ]
        requests.append(("/actions", {"action_type": "InstanceStart"}))
        async with self._client(vm) as client:
            for path, body in requests:
                await self._call(client, vm, "PUT", path, body)
        vm.configured = True

    def _metadata(self, vm: _FirecrackerVM) -> dict[str, Any]:
        env = dict(vm.spec.env)
        env.setdefault("VM_ID", vm.vm_id)
        if vm.spec.ticket_id:
            env.setdefault("TICKET_ID", vm.spec.ticket_id)
        return {
            "vm_id": vm.vm_id,
            "name": vm.spec.name,
            "ticket_id": vm.spec.ticket_id,
            "command": vm.spec.command,
            "env": env,
        }

    # --- stopping and cleaning up ---------------------------------------------------------

    async def _shutdown(self, vm: _FirecrackerVM) -> None:
        assert vm.proc is not None
        grace = self.config.stop_grace
        if vm.proc.returncode is None and vm.configured:
            try:
                await self._request(vm, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
            except FirecrackerError as exc:
                vm.notes.append(f"SendCtrlAltDel: {exc}")
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(vm.proc.wait(), grace)
        await terminate_group(vm.proc, grace)
        if vm.reaper is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(vm.reaper), COMMAND_TIMEOUT_S)

    async def _abort(self, vm: _FirecrackerVM) -> None:
        """Undo a failed spawn: kill what was started, then clean up (bounded)."""
        if vm.proc is not None:
            await terminate_group(vm.proc, 0)
        if vm.reaper is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(vm.reaper), COMMAND_TIMEOUT_S)
        else:
            await self._teardown(vm)

    async def _reap(self, vm: _FirecrackerVM) -> None:
        assert vm.proc is not None
        code = await vm.proc.wait()
        vmfiles.write_exit(vm.workdir, code)  # before the clean-up: siblings leave it to us
        await self._teardown(vm)

    # --- a sibling server process's VMs ---------------------------------------------------

    def _record(self, vm: _FirecrackerVM) -> dict[str, Any]:
        assert vm.proc is not None
        return {
            "driver": DRIVER_NAME,
            "vm_id": vm.vm_id,
            "name": vm.spec.name,
            "ticket_id": vm.spec.ticket_id,
            "pgid": vm.proc.pid,
            "leader_start": start_time(vm.proc.pid),
            "socket": str(vm.socket_path),
            "jail_root": str(vm.jail_root) if vm.jail_root is not None else None,
            "netns": vm.netns if vm.netns_created else None,
            "tap": vm.tap,
            "guest_mac": vm.guest_mac if vm.tap else None,
            "rootfs_copy": str(vm.rootfs_copy) if vm.rootfs_copy is not None else None,
            "started_at": vm.started_at,
        }

    async def _stop_sibling(self, vm: _SiblingVM) -> VMInfo:
        if vm.stopping is None and vm.has_live_group():
            if vm.leader_is_running():  # an exit of its own keeps its own verdict
                vm.stop_requested = True
                vmfiles.mark_stop_requested(vm.workdir)
            vm.stopping = asyncio.ensure_future(self._shutdown_sibling(vm))
        if vm.stopping is not None:
            await asyncio.shield(vm.stopping)
        else:  # it ended before; if its starter is gone too, nobody cleaned up after it
            await vm.settle()
            if vm.exit_unknown:
                await self._teardown(vm)
        return await self._sibling_status(vm)

    async def _shutdown_sibling(self, vm: _SiblingVM) -> None:
        """`_shutdown` without the child: the same steps, polling /proc instead of waiting."""
        loop = asyncio.get_running_loop()
        grace = self.config.stop_grace
        try:
            await self._request(vm, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
        except FirecrackerError as exc:
            vm.notes.append(f"SendCtrlAltDel: {exc}")
        else:
            deadline = loop.time() + grace
            while vm.has_live_group() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(POLL_S)
        await terminate_sibling_group(vm.record["pgid"], vm.record["leader_start"], grace)
        # The starting process reaps Firecracker, writes exit.json and cleans up; when that
        # process is gone, nobody else will clean up.
        await vm.settle()
        if vm.exit_unknown:
            await self._teardown(vm)

    async def _sibling_status(self, vm: _SiblingVM) -> VMInfo:
        await vm.settle()
        record = vm.record
        requested = vm.stop_requested or vmfiles.stop_was_requested(vm.workdir)
        details: dict[str, Any] = {
            "name": record.get("name"),
            "ticket_id": record.get("ticket_id"),
            "workdir": str(vm.workdir),
            "console": str(vm.workdir / "console.log"),
            "socket": str(vm.socket_path),
            "jailed": vm.jail_root is not None,
            "netns": vm.netns,
            "tap": record.get("tap"),
            "guest_mac": record.get("guest_mac"),
            "pgid": record["pgid"],
            "started_at": record.get("started_at"),
            "stop_requested": requested,
            "started_by": "another server process",
        }
        if vm.notes:
            details["notes"] = list(vm.notes)
        exited = vm.exit()
        code = exited.get("exit_code") if exited is not None else None
        state: State
        if exited is not None:
            state = "stopped" if code == 0 or requested else "error"
        elif not vm.has_live_group():
            state = "stopped" if requested else "error"
            details["exit"] = "unknown: the server process that started it is gone"
        elif requested:
            state = "stopping"
        else:
            state = await self._instance_state(vm, details)
        if isinstance(code, int) and code < 0:
            details["signal"] = signal.Signals(-code).name
        return VMInfo(vm.vm_id, DRIVER_NAME, state, record["pgid"], code, details)

    async def _instance_state(self, vm: AnyVM, details: dict[str, Any]) -> State:
        """What `GET /` (InstanceInfo) says of a running VM; `error` when it cannot answer."""
        try:
            instance = await self._request(vm, "GET", "/", limit_s=STATUS_TIMEOUT_S)
        except FirecrackerError as exc:
            details["api_error"] = str(exc)
            return "error"
        details["instance_state"] = instance.get("state")
        return INSTANCE_STATES.get(instance.get("state"), "error")

    # --- clean-up ---------------------------------------------------------------------------

    async def _teardown(self, vm: AnyVM) -> None:
        if vm.torn_down:
            return
        vm.torn_down = True
        if vm.netns_created and vm.netns is not None:
            try:  # deleting the namespace destroys the tap inside it
                await self._run([self.config.ip_bin, "netns", "del", vm.netns])
            except FirecrackerError as exc:
                vm.notes.append(str(exc))
        if vm.jail_root is not None:
            await asyncio.to_thread(shutil.rmtree, vm.jail_root.parent, True)
        else:
            vm.socket_path.unlink(missing_ok=True)
        if vm.rootfs_copy is not None:
            vm.rootfs_copy.unlink(missing_ok=True)

    # --- plumbing -------------------------------------------------------------------------

    def _get(self, vm_id: str) -> AnyVM:
        vm = self._vms.get(vm_id) or self._siblings.get(vm_id)
        if vm is not None:
            return vm
        workdir = vmfiles.vm_directory(self.config.data_dir, vm_id)
        record = vmfiles.read_record(workdir, DRIVER_NAME) if workdir is not None else None
        # Records are written with the leader's start time only: one without cannot be ours.
        known = (
            record is not None
            and record.get("vm_id") == vm_id
            and record["leader_start"] is not None
        )
        if workdir is None or record is None or not known:
            raise NotFound(f"No VM {vm_id!r} in the {DRIVER_NAME!r} driver")
        sibling = self._siblings[vm_id] = _SiblingVM.from_record(workdir.resolve(), record)
        return sibling

    def _details(self, vm: _FirecrackerVM) -> dict[str, Any]:
        details: dict[str, Any] = {
            "name": vm.spec.name,
            "ticket_id": vm.spec.ticket_id,
            "workdir": str(vm.workdir),
            "console": str(vm.workdir / "console.log"),
            "socket": str(vm.socket_path),
            "jailed": vm.jail_root is not None,
            "netns": vm.netns,
            "tap": vm.tap,
            "guest_mac": vm.guest_mac if vm.tap else None,
            "pgid": vm.proc.pid if vm.proc is not None else None,
            "started_at": vm.started_at,
            "stop_requested": vm.stop_requested or vmfiles.stop_was_requested(vm.workdir),
        }
        if vm.error is not None:
            details["error"] = vm.error
        if vm.notes:
            details["notes"] = list(vm.notes)
        code = vm.proc.returncode if vm.proc is not None else None
        if code is not None and code < 0:
            details["signal"] = signal.Signals(-code).name
        return details

    def _client(self, vm: AnyVM, timeout: float = API_TIMEOUT_S) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(vm.socket_path))
        return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=timeout)

    async def _request(
        self,
        vm: AnyVM,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        limit_s: float = API_TIMEOUT_S,
    ) -> Any:
        async with self._client(vm, limit_s) as client:
            return await self._call(client, vm, method, path, body)

    async def _call(
        self,
        client: httpx.AsyncClient,
        vm: AnyVM,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> Any:
        try:
            response = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise FirecrackerError(
                f"Firecracker API {method} {path} for VM {vm.vm_id} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 300:
            try:
                fault = str(response.json().get("fault_message") or response.text)
            except (ValueError, AttributeError):
                fault = response.text or response.reason_phrase
            raise FirecrackerAPIError(vm.vm_id, method, path, response.status_code, fault)
        return response.json() if response.content else None

    async def _run(self, argv: Argv) -> None:
        """Run a helper command (ip, cp) to completion, bounded; raise with its output."""
        shown = " ".join(argv)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(self.config.base_env),
            )
        except OSError as exc:
            raise FirecrackerError(f"Cannot run `{shown}`: {exc}") from exc
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise FirecrackerError(
                f"`{shown}` did not finish within {COMMAND_TIMEOUT_S} s"
            ) from None
        if proc.returncode != 0:
            text = output.decode(errors="replace").strip()
            raise FirecrackerError(f"`{shown}` failed with exit code {proc.returncode}: {text}")


# --- helpers ------------------------------------------------------------------------------


def _existing_file(path: str | None, what: str, setting: str) -> Path:
    if not path:
        raise FirecrackerError(f"No {what} for the VM: set {setting}")
    if not Path(path).is_file():
        raise FirecrackerError(f"The {what} {path!r} does not exist")
    return Path(path).resolve()


def _executable(program: str | None, setting: str) -> str:
    found = shutil.which(program) if program else None
    if found is None:
        raise FirecrackerError(f"{program!r} is not an executable: check {setting}")
    return os.path.abspath(found)


def _open_console(workdir: Path) -> BinaryIO:
    return open(workdir / "console.log", "ab")  # the caller closes it once the child has it


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed: copy instead
        shutil.copyfile(source, target)


def _chown(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0 or (uid, gid) == (os.getuid(), os.getgid()):
        os.chown(path, uid, gid)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode(errors="replace").strip() or "(empty)"
    except OSError:
        return "(none)"


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise FirecrackerError(f"{key} must be a number, not {raw!r}") from None


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    return default if not raw else raw not in ("0", "false", "no", "off")


# --- hooks --------------------------------------------------------------------------------

_drivers: weakref.WeakSet[FirecrackerDriver] = weakref.WeakSet()


@hookimpl
def vm_drivers() -> dict[str, FirecrackerDriver]:
    """Offer the `firecracker` driver, configured from the environment at start-up."""
    driver = FirecrackerDriver.from_env()
    _drivers.add(driver)
    return {DRIVER_NAME: driver}


@hookimpl
async def shutdown() -> None:
    """Stop the microVMs this plugin's drivers started: nothing else could stop them later."""
    for driver in list(_drivers):
        await driver.close()
