"""The `process` VM driver against real child processes (plugins/vm_process.py).

Every wait is bounded; every process a test starts is killed by its group id at teardown.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runtime import NotFound, VMDriver, VMSpec, vmfiles

ROOT = Path(__file__).resolve().parents[1]


def _load_plugin(name: str) -> ModuleType:
    path = ROOT / "plugins" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_plugin_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vm_process = _load_plugin("vm_process")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[Any]:
    drv = vm_process.ProcessDriver(tmp_path / "data", stop_grace=2.0)
    try:
        yield drv
    finally:
        try:
            await asyncio.wait_for(drv.close(), 15)
        finally:  # belt and braces: nothing a test started may outlive it
            for info in await drv.list():
                if vm_process.group_alive(info.details["pgid"]):
                    os.killpg(info.details["pgid"], signal.SIGKILL)


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


async def wait_exit(drv: Any, vm_id: str, within: float = 10.0) -> None:
    async def exited() -> bool:
        return (await drv.status(vm_id)).exit_code is not None

    await wait_until(exited, within)


def read(path: str | Path) -> str:
    return Path(path).read_text()


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for a parent that is not us."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def spec(command: list[str], **kwargs: Any) -> VMSpec:
    kwargs.setdefault("name", "agent")
    return VMSpec(command=command, **kwargs)


@pytest.mark.anyio
async def test_driver_satisfies_the_protocol(driver: Any) -> None:
    assert isinstance(driver, VMDriver)
    assert driver.name == "process"


@pytest.mark.anyio
async def test_stop_terminates_the_whole_process_group(driver: Any) -> None:
    info = await driver.spawn(spec(["sh", "-c", "sleep 60 & echo $! > grandchild.pid; wait"]))
    assert info.vm_id.startswith("proc-") and len(info.vm_id) == len("proc-") + 12
    assert info.state == "running" and info.pid is not None and info.exit_code is None
    workdir = Path(info.details["workdir"])
    assert workdir == (driver.data_dir / "vms" / info.vm_id).resolve()
    pid_file = workdir / "grandchild.pid"

    async def grandchild_started() -> bool:
        return pid_file.exists() and pid_file.read_text().strip() != ""

    await wait_until(grandchild_started)
    grandchild = int(pid_file.read_text())
    assert os.getpgid(grandchild) == info.pid == os.getsid(info.pid)  # own session and group
    assert (await driver.status(info.vm_id)).state == "running"

    stopped = await driver.stop(info.vm_id)

    assert stopped.state == "stopped"
    assert stopped.exit_code == -signal.SIGTERM
    assert stopped.details["signal"] == "SIGTERM"
    assert gone(info.pid) and gone(grandchild)
    assert not vm_process.group_alive(info.pid)
    assert (await driver.stop(info.vm_id)).state == "stopped"  # idempotent


@pytest.mark.anyio
async def test_stdout_stderr_and_env_reach_files(
    driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARENT_SECRET", "must-not-leak")
    drv = vm_process.ProcessDriver(driver.data_dir)  # base env read now, with PARENT_SECRET
    script = (
        'echo "ticket=$TICKET_ID url=$RUNTIME_URL vm=$VM_ID secret=$PARENT_SECRET"; echo oops >&2'
    )
    info = await drv.spawn(
        spec(["sh", "-c", script], env={"TICKET_ID": "t-42", "RUNTIME_URL": "http://rt"})
    )
    await wait_exit(drv, info.vm_id)

    done = await drv.status(info.vm_id)
    assert (done.state, done.exit_code) == ("stopped", 0)
    stdout = read(done.details["stdout"])
    assert stdout == f"ticket=t-42 url=http://rt vm={info.vm_id} secret=\n"
    assert read(done.details["stderr"]) == "oops\n"


@pytest.mark.anyio
async def test_rlimits_apply_to_the_agent(driver: Any) -> None:
    script = "ulimit -v; ulimit -t; grep -E '^Max (cpu time|address space)' /proc/self/limits"
    info = await driver.spawn(spec(["sh", "-c", script], memory_mb=256, cpu_seconds=7))
    await wait_exit(driver, info.vm_id)

    lines = read(info.details["stdout"]).splitlines()
    assert lines[:2] == ["262144", "7"]  # ulimit -v is in KiB
    limits = {" ".join(line.split()[:3]): line.split()[3:5] for line in lines[2:]}
    assert limits["Max cpu time"] == ["7", "8"]
    assert limits["Max address space"] == [str(256 * 1024 * 1024)] * 2


@pytest.mark.anyio
async def test_memory_limit_can_be_switched_off(tmp_path: Path) -> None:
    drv = vm_process.ProcessDriver.from_env(
        {"RUNTIME_DATA": str(tmp_path), "RUNTIME_VM_PROCESS_LIMIT_MEMORY": "0", "PATH": os.defpath}
    )
    info = await drv.spawn(spec(["sh", "-c", "ulimit -v"], memory_mb=64))
    await wait_exit(drv, info.vm_id)
    assert read(info.details["stdout"]) == "unlimited\n"


@pytest.mark.anyio
async def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    drv = vm_process.ProcessDriver(tmp_path, stop_grace=0.5)
    script = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    info = await drv.spawn(spec(["sh", "-c", script]))
    try:

        async def ready() -> bool:
            return read(info.details["stdout"]) == "ready\n"

        await wait_until(ready)
        started = time.monotonic()
        stopped = await drv.stop(info.vm_id)
        elapsed = time.monotonic() - started

        assert (stopped.state, stopped.exit_code) == ("stopped", -signal.SIGKILL)
        assert 0.5 <= elapsed < 5
        assert not vm_process.group_alive(info.pid)
    finally:
        if vm_process.group_alive(info.pid):
            os.killpg(info.pid, signal.SIGKILL)


@pytest.mark.anyio
async def test_natural_exit_is_reported_with_its_code(driver: Any) -> None:
    ok = await driver.spawn(spec(["true"]))
    failed = await driver.spawn(spec(["sh", "-c", "exit 3"]))
    await wait_exit(driver, ok.vm_id)
    await wait_exit(driver, failed.vm_id)

    assert (await driver.status(ok.vm_id)).state == "stopped"
    status = await driver.status(failed.vm_id)
    assert (status.state, status.exit_code) == ("error", 3)
    assert (await driver.stop(failed.vm_id)).state == "error"  # stop does not rewrite history
    assert gone(ok.pid) and gone(failed.pid)  # reaped, not zombies


@pytest.mark.anyio
async def test_stop_cleans_up_a_group_whose_leader_already_exited(driver: Any) -> None:
    info = await driver.spawn(spec(["sh", "-c", "sleep 60 & echo $! > grandchild.pid"]))
    await wait_exit(driver, info.vm_id)
    grandchild = int((Path(info.details["workdir"]) / "grandchild.pid").read_text())
    assert not gone(grandchild)

    stopped = await driver.stop(info.vm_id)

    assert (stopped.state, stopped.exit_code) == ("stopped", 0)
    assert gone(grandchild)


@pytest.mark.anyio
async def test_list_returns_every_known_vm(driver: Any) -> None:
    first = await driver.spawn(spec(["sleep", "60"]))
    second = await driver.spawn(spec(["true"], name="other"))
    await wait_exit(driver, second.vm_id)

    listed = {info.vm_id: info for info in await driver.list()}

    assert set(listed) == {first.vm_id, second.vm_id}
    assert listed[first.vm_id].state == "running"
    assert listed[second.vm_id].state == "stopped"
    assert listed[second.vm_id].details["name"] == "other"
    await driver.stop(first.vm_id)
    assert (await driver.status(first.vm_id)).state == "stopped"


@pytest.mark.anyio
async def test_concurrent_stops_share_one_shutdown(driver: Any) -> None:
    info = await driver.spawn(spec(["sleep", "60"]))
    results = await asyncio.gather(*(driver.stop(info.vm_id) for _ in range(3)))
    assert {(r.state, r.exit_code) for r in results} == {("stopped", -signal.SIGTERM)}


@pytest.mark.anyio
async def test_errors_name_the_problem(driver: Any) -> None:
    with pytest.raises(NotFound, match="proc-nope"):
        await driver.status("proc-nope")
    with pytest.raises(NotFound):
        await driver.stop("proc-nope")
    with pytest.raises(vm_process.ProcessVMError, match="RUNTIME_VM_PROCESS_COMMAND"):
        await driver.spawn(VMSpec(name="agent"))
    with pytest.raises(vm_process.ProcessVMError, match="no-such-agent-binary"):
        await driver.spawn(spec(["no-such-agent-binary"]))
    assert await driver.list() == []


@pytest.mark.anyio
async def test_hook_builds_the_driver_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DATA", str(tmp_path))
    monkeypatch.setenv("RUNTIME_VM_PROCESS_COMMAND", "sh -c 'echo \"default $TICKET_ID\"'")
    monkeypatch.setenv("RUNTIME_VM_PROCESS_STOP_GRACE", "1.5")

    drv = vm_process.vm_drivers()["process"]

    assert drv.stop_grace == 1.5
    info = await drv.spawn(VMSpec(name="agent", ticket_id="t-7"))
    await wait_exit(drv, info.vm_id)
    assert read(info.details["stdout"]) == "default t-7\n"
    assert Path(info.details["workdir"]).parent == (tmp_path / "vms").resolve()
    await vm_process.shutdown()  # nothing left running: returns at once


# -- VMs started by another server process on this host (serve --workers N) ---------------


@pytest.mark.anyio
async def test_a_sibling_process_sees_and_stops_the_vm(driver: Any) -> None:
    sibling = vm_process.ProcessDriver(driver.data_dir, stop_grace=2.0)  # another worker
    info = await driver.spawn(spec(["sh", "-c", "sleep 60 & echo $! > grandchild.pid; wait"]))
    pid_file = Path(info.details["workdir"]) / "grandchild.pid"

    async def grandchild_started() -> bool:
        return pid_file.exists() and pid_file.read_text().strip() != ""

    await wait_until(grandchild_started)
    seen = await sibling.status(info.vm_id)
    assert (seen.state, seen.pid) == ("running", info.pid)
    assert seen.details["started_by"] == "another server process"
    assert seen.details["name"] == "agent"

    stopped = await sibling.stop(info.vm_id)

    assert (stopped.state, stopped.exit_code) == ("stopped", -signal.SIGTERM)
    assert gone(info.pid) and gone(int(pid_file.read_text()))
    # The worker that started it agrees: stopped on request, not killed by a stranger.
    assert (await driver.status(info.vm_id)).state == "stopped"
    assert [vm.vm_id for vm in await sibling.list()] == [info.vm_id]
    assert (await sibling.stop(info.vm_id)).state == "stopped"  # idempotent


@pytest.mark.anyio
async def test_a_sibling_stop_keeps_the_verdict_of_a_leader_that_already_exited(
    driver: Any,
) -> None:
    """Stopping from another process ends the same way as from the starting one: the group
    left behind is cleaned up, and the leader's own failure stays an error."""
    sibling = vm_process.ProcessDriver(driver.data_dir, stop_grace=2.0)
    info = await driver.spawn(spec(["sh", "-c", "sleep 60 & echo $! > grandchild.pid; exit 3"]))
    await wait_exit(driver, info.vm_id)
    grandchild = int((Path(info.details["workdir"]) / "grandchild.pid").read_text())
    assert not gone(grandchild)

    stopped = await sibling.stop(info.vm_id)

    assert (stopped.state, stopped.exit_code) == ("error", 3)
    assert gone(grandchild)
    assert (await driver.status(info.vm_id)).state == "error"


@pytest.mark.anyio
async def test_a_vm_stopped_by_its_own_worker_reads_stopped_everywhere(driver: Any) -> None:
    sibling = vm_process.ProcessDriver(driver.data_dir)
    info = await driver.spawn(spec(["sleep", "60"]))
    await driver.stop(info.vm_id)
    seen = await sibling.status(info.vm_id)
    assert (seen.state, seen.exit_code) == ("stopped", -signal.SIGTERM)


@pytest.mark.anyio
async def test_the_vm_of_a_server_process_that_is_gone_can_be_stopped(tmp_path: Path) -> None:
    """The starting process exits without stopping its VM (a crash): another one stops it."""
    data = tmp_path / "data"
    plugin = str(ROOT / "plugins" / "vm_process.py")
    starter = (
        "import asyncio, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('p', {plugin!r})\n"
        "m = sys.modules['p'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "async def main():\n"
        f"    d = m.ProcessDriver({str(data)!r})\n"
        "    info = await d.spawn(m.VMSpec(name='orphan', command=['sleep', '60']))\n"
        "    print(info.vm_id, info.pid, flush=True)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", starter, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    vm_id, pgid = out.decode().split()
    survivor = vm_process.ProcessDriver(data, stop_grace=2.0)
    try:
        assert (await survivor.status(vm_id)).state == "running"
        stopped = await survivor.stop(vm_id)
        assert stopped.state == "stopped" and stopped.exit_code is None
        assert stopped.details["exit"].startswith("unknown")
        assert not vm_process.group_alive(int(pgid))
    finally:
        if vm_process.group_alive(int(pgid)):
            os.killpg(int(pgid), signal.SIGKILL)


@pytest.mark.anyio
async def test_a_reused_group_id_is_never_signalled(tmp_path: Path) -> None:
    """A vm.json whose group id now names another process (here: this test's own group,
    with a different leader start time) is reported gone and left alone."""
    drv = vm_process.ProcessDriver(tmp_path / "data")
    vm_id = "proc-0123456789ab"
    workdir = tmp_path / "data" / "vms" / vm_id
    workdir.mkdir(parents=True)
    own_group = os.getpgid(0)
    record = {
        "driver": "process",
        "vm_id": vm_id,
        "name": "stale",
        "ticket_id": None,
        "command": ["sleep", "60"],
        "pgid": own_group,
        "leader_start": (vm_process.start_time(own_group) or 0) + 1,
        "started_at": 0.0,
    }
    vmfiles.write_record(workdir, record)

    stopped = await drv.stop(vm_id)

    assert stopped.state == "error" and stopped.details["exit"].startswith("unknown")
    assert vm_process.group_alive(own_group)  # still here
    # A record made on another host (a shared RUNTIME_DATA) or before a reboot is not ours.
    (workdir / "vm.json").write_text(json.dumps({**record, "host": "another-boot/1"}))
    with pytest.raises(NotFound):
        await vm_process.ProcessDriver(tmp_path / "data").status(vm_id)
    for bad in ("proc-nope", "../../etc", "proc-0123456789ab/../x"):
        with pytest.raises(NotFound):
            await drv.status(bad)
