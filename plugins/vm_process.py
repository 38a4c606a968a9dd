"""The `process` VM driver: every "VM" is a process group on this host.

`spawn` starts the agent command (`VMSpec.command`, else `RUNTIME_VM_PROCESS_COMMAND`,
shlex-split) as a child in its own session and process group, in its own working directory
`$RUNTIME_DATA/vms/<vm_id>/` (stdout and stderr go to `stdout.log` and `stderr.log` there),
with a minimal environment (PATH, HOME, LANG of this process, then `VMSpec.env`) and the
resource limits of the spec. `stop` sends SIGTERM to the whole group, waits a grace period,
then sends SIGKILL to what is left. The asyncio child watcher reaps the child as soon as it
exits, so no zombie is left behind and `status` reports the exit without being asked to poll.

Resource limits are set by a tiny wrapper, not by `preexec_fn`: the child is
`python -I -S -c <wrapper> <as_bytes> <cpu_seconds> <command...>`, which calls
`resource.setrlimit` on itself and then `os.execvp`s the command (same pid, so the limits
and the process group carry over). `preexec_fn` runs Python code between fork and exec,
which can deadlock when other threads hold locks (the runtime has thread pools), and it
forces a full fork(); `prlimit` after spawn leaves a window in which the agent runs, and can
fork, unlimited. The wrapper has neither problem and needs nothing but this interpreter.

Any server process on the host can stop a VM another one started (with `serve --workers N`,
or after the starting worker died): `spawn` writes `vm.json` into the VM's directory (its
process group id and the leader's start time), the starting process writes `exit.json` when
the leader exits, and whoever stops it leaves `stop-requested` there, so that every worker
reports the same state. A sibling signals the group only while it is still that group.

RLIMIT_AS caps virtual address space, not resident memory: runtimes that reserve large
address ranges up front (Node.js, the JVM, Go) may fail under a small cap even though they
would use little memory. Set `RUNTIME_VM_PROCESS_LIMIT_MEMORY=0` to leave it unset.

Configuration, read when `vm_drivers()` is called:
    RUNTIME_DATA                      state directory (./.runtime); VMs live in vms/<vm_id>/
    RUNTIME_VM_PROCESS_COMMAND        default agent command when the spec has none
    RUNTIME_VM_PROCESS_STOP_GRACE     seconds between SIGTERM and SIGKILL (5)
    RUNTIME_VM_PROCESS_LIMIT_MEMORY   1 (default) sets RLIMIT_AS from memory_mb; 0 does not
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from runtime import (
    NotFound,
    RuntimeFailure,
    VMInfo,
    VMSpec,
    group_alive,
    hookimpl,
    spawn_group,
    start_time,
    terminate_group,
    terminate_sibling_group,
    vmfiles,
)

DRIVER_NAME = "process"
PASSED_ENV = ("PATH", "HOME", "LANG")
EXIT_WRITERS_WAIT_S = 5.0  # at shutdown, for the exit.json of the VMs just stopped

# Runs in the child: apply the limits to itself, then become the agent command.
_RLIMIT_WRAPPER = """\
import os, resource, sys
def cap(kind, soft, hard):
    _, cur_hard = resource.getrlimit(kind)
    if cur_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, cur_hard), min(hard, cur_hard)
    resource.setrlimit(kind, (soft, hard))
as_bytes, cpu = int(sys.argv[1]), int(sys.argv[2])
if as_bytes > 0:
    cap(resource.RLIMIT_AS, as_bytes, as_bytes)
if cpu > 0:
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    sys.stderr.write(f"cannot execute {sys.argv[3]!r}: {exc}\\n")
    sys.stderr.flush()
    os._exit(127)
"""

State = Literal["starting", "running", "busy", "stopping", "stopped", "error"]


class ProcessVMError(RuntimeFailure):
    """The process VM could not be started."""


@dataclass(eq=False)
class _ProcessVM:
    """A VM this process started: its child, which it waits for."""

    vm_id: str
    record: dict[str, Any]  # what vm.json holds
    workdir: Path
    proc: asyncio.subprocess.Process
    stop_requested: bool = False
    stopping: asyncio.Task[None] | None = None


_SiblingVM = vmfiles.SiblingVM


class ProcessDriver:
    """Runs each VM as a local child process group; see the module docstring."""

    name = DRIVER_NAME

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        default_command: list[str] | None = None,
        *,
        stop_grace: float = 5.0,
        limit_memory: bool = True,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.default_command = list(default_command) if default_command else None
        self.stop_grace = stop_grace
        self.limit_memory = limit_memory
        source = os.environ if base_env is None else base_env
        self.base_env = {key: source[key] for key in PASSED_ENV if key in source}
        self._vms: dict[str, _ProcessVM] = {}
        self._siblings: dict[str, _SiblingVM] = {}
        self._exit_writers: set[asyncio.Task[None]] = set()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProcessDriver:
        env = os.environ if environ is None else environ
        command = env.get("RUNTIME_VM_PROCESS_COMMAND", "").strip()
        return cls(
            Path(env.get("RUNTIME_DATA") or "./.runtime"),
            shlex.split(command) if command else None,
            stop_grace=_env_float(env, "RUNTIME_VM_PROCESS_STOP_GRACE", 5.0),
            limit_memory=env.get("RUNTIME_VM_PROCESS_LIMIT_MEMORY", "1").strip().lower()
            not in ("0", "false", "no", "off"),
            base_env=env,
        )

    # --- the VMDriver interface -----------------------------------------------------------

    async def spawn(self, spec: VMSpec) -> VMInfo:
        command = list(spec.command or self.default_command or [])
        if not command:
            raise ProcessVMError(
                f"No agent command for VM {spec.name!r}: set VMSpec.command "
                "or RUNTIME_VM_PROCESS_COMMAND"
            )
        vm_id = f"proc-{uuid.uuid4().hex[:12]}"
        workdir = (self.data_dir / "vms" / vm_id).resolve()
        env = self._child_env(spec, vm_id)
        _check_executable(command[0], env.get("PATH", os.defpath), workdir)
        workdir.mkdir(parents=True)

        as_bytes = spec.memory_mb * 1024 * 1024 if self.limit_memory and spec.memory_mb else 0
        argv = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _RLIMIT_WRAPPER,
            str(as_bytes),
            str(spec.cpu_seconds or 0),
            *command,
        ]
        out, err = _open_logs(workdir)
        with out, err:
            proc = await spawn_group(argv, cwd=workdir, env=env, stdout=out, stderr=err)
        record = {
            "driver": DRIVER_NAME,
            "vm_id": vm_id,
            "name": spec.name,
            "ticket_id": spec.ticket_id,
            "command": command,
            "pgid": proc.pid,
            "leader_start": start_time(proc.pid),
            "started_at": time.time(),
        }
        vm = _ProcessVM(vm_id, record, workdir, proc)
        self._vms[vm_id] = vm
        vmfiles.write_record(workdir, record)
        writer = asyncio.ensure_future(self._write_exit(vm))
        self._exit_writers.add(writer)
        writer.add_done_callback(self._exit_writers.discard)
        return self._info(vm)

    async def stop(self, vm_id: str) -> VMInfo:
        vm = self._get(vm_id)
        if isinstance(vm, _SiblingVM):
            return await self._stop_sibling(vm)
        # Also clean up after a leader that exited on its own but left its group running.
        if vm.stopping is None and (vm.proc.returncode is None or group_alive(vm.proc.pid)):
            vm.stop_requested = vm.proc.returncode is None
            if vm.stop_requested:
                vmfiles.mark_stop_requested(vm.workdir)  # for the other server processes
            vm.stopping = asyncio.ensure_future(terminate_group(vm.proc, self.stop_grace))
        if vm.stopping is not None:
            await asyncio.shield(vm.stopping)
        return self._info(vm)

    async def status(self, vm_id: str) -> VMInfo:
        vm = self._get(vm_id)
        if isinstance(vm, _SiblingVM):
            await vm.settle()
        return self._info(vm)

    async def list(self) -> list[VMInfo]:
        """The VMs this driver started, and those of sibling processes it was asked about."""
        known: list[_ProcessVM | _SiblingVM] = [*self._vms.values(), *self._siblings.values()]
        return [self._info(vm) for vm in known]

    # --- beyond the interface -------------------------------------------------------------

    async def close(self) -> None:
        """Stop every VM still running (called from the `shutdown` hook)."""
        running = [vm_id for vm_id, vm in self._vms.items() if vm.proc.returncode is None]
        await asyncio.gather(*(self.stop(vm_id) for vm_id in running))
        if self._exit_writers:  # each waits for its VM's exit, which stop() just brought
            await asyncio.wait(self._exit_writers, timeout=EXIT_WRITERS_WAIT_S)

    # --- internals ------------------------------------------------------------------------

    def _get(self, vm_id: str) -> _ProcessVM | _SiblingVM:
        vm = self._vms.get(vm_id) or self._siblings.get(vm_id)
        if vm is not None:
            return vm
        workdir = vmfiles.vm_directory(self.data_dir, vm_id)
        record = vmfiles.read_record(workdir, DRIVER_NAME) if workdir is not None else None
        if workdir is None or record is None:
            raise NotFound(f"No VM {vm_id!r} in the {DRIVER_NAME!r} driver")
        sibling = self._siblings[vm_id] = _SiblingVM(vm_id, record, workdir.resolve())
        return sibling

    async def _write_exit(self, vm: _ProcessVM) -> None:
        code = await vm.proc.wait()
        vmfiles.write_exit(vm.workdir, code)

    async def _stop_sibling(self, vm: _SiblingVM) -> VMInfo:
        if vm.stopping is None and vm.has_live_group():
            # As for our own VMs: a leader that already exited keeps its own verdict, and
            # what it left running in its group is cleaned up all the same.
            if vm.leader_is_running():
                vm.stop_requested = True
                vmfiles.mark_stop_requested(vm.workdir)
            vm.stopping = asyncio.ensure_future(
                terminate_sibling_group(
                    vm.record["pgid"], vm.record["leader_start"], self.stop_grace
                )
            )
        if vm.stopping is not None:
            await asyncio.shield(vm.stopping)
        await vm.settle()
        return self._info(vm)

    def _child_env(self, spec: VMSpec, vm_id: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(spec.env)
        env.setdefault("VM_ID", vm_id)
        if spec.ticket_id:
            env.setdefault("TICKET_ID", spec.ticket_id)
        return env

    def _info(self, vm: _ProcessVM | _SiblingVM) -> VMInfo:
        record = vm.record
        requested = vm.stop_requested or vmfiles.stop_was_requested(vm.workdir)
        details: dict[str, Any] = {
            "name": record["name"],
            "ticket_id": record["ticket_id"],
            "command": record["command"],
            "workdir": str(vm.workdir),
            "stdout": str(vm.workdir / "stdout.log"),
            "stderr": str(vm.workdir / "stderr.log"),
            "pgid": record["pgid"],
            "started_at": record["started_at"],
            "stop_requested": requested,
        }
        code: int | None
        if isinstance(vm, _ProcessVM):
            code, running = vm.proc.returncode, vm.proc.returncode is None
        else:
            details["started_by"] = "another server process"
            exited = vm.exit()
            code = exited.get("exit_code") if exited else None
            running = exited is None and vm.has_live_group()
            if exited is None and not running:
                details["exit"] = "unknown: the server process that started it is gone"
        state: State
        if running:
            state = "stopping" if requested else "running"
        elif code == 0 or requested:
            state = "stopped"
        else:
            state = "error"
        if code is not None and code < 0:
            details["signal"] = signal.Signals(-code).name
        return VMInfo(vm.vm_id, DRIVER_NAME, state, record["pgid"], code, details)


def _open_logs(workdir: Path) -> tuple[BinaryIO, BinaryIO]:
    """Open stdout.log and stderr.log; the caller closes both once the child holds them."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(workdir / "stdout.log", "wb"))
        err = stack.enter_context(open(workdir / "stderr.log", "wb"))
        stack.pop_all()
        return out, err


def _check_executable(program: str, path: str, workdir: Path) -> None:
    if os.sep in program:
        candidate = Path(program) if os.path.isabs(program) else workdir / program
        found = candidate.is_file() and os.access(candidate, os.X_OK)
    else:
        found = shutil.which(program, path=path) is not None
    if not found:
        raise ProcessVMError(f"Agent command not found or not executable: {program!r}")


def _env_float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ProcessVMError(f"{key} must be a number of seconds, not {raw!r}") from None


# --- hooks --------------------------------------------------------------------------------

_drivers: weakref.WeakSet[ProcessDriver] = weakref.WeakSet()


@hookimpl
def vm_drivers() -> dict[str, ProcessDriver]:
    """Offer the `process` driver, configured from the environment at start-up."""
    driver = ProcessDriver.from_env()
    _drivers.add(driver)
    return {DRIVER_NAME: driver}


@hookimpl
async def shutdown() -> None:
    """Stop the VMs this plugin's drivers started: nothing else could stop them later."""
    for driver in list(_drivers):
        await driver.close()
