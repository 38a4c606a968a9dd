"""vms.*: the VM registry (register, heartbeat, states, list) and spawn_for_ticket with the
real `process` driver: a real child process that is stopped again when the claim fails."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, AppFiles, LiveServer
from tests.swarm_app import Api, api_fixture, insert_ticket, install, sql, token

RUNTIME_URL = "http://runtime.test:3210"
AGENT = """
import json, os, time
with open("env.json.tmp", "w") as f:
    json.dump(dict(os.environ), f)
os.rename("env.json.tmp", "env.json")
time.sleep(120)
"""

if not (REPO / "app_functions" / "tickets.py").exists():  # pragma: no cover
    pytest.skip(
        "app_functions/tickets.py (tickets.claim) is not in this checkout", allow_module_level=True
    )


def agent_pids(ticket_id: str) -> list[int]:
    """Live processes whose environment says TICKET_ID=<ticket_id>."""
    needle = f"TICKET_ID={ticket_id}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if needle in env and stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X"):
            pids.append(int(name))
    return pids


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(0.05)


@pytest.fixture
def vm_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "vmdata"
    monkeypatch.setenv("RUNTIME_DATA", str(data))
    monkeypatch.setenv(
        "RUNTIME_VM_PROCESS_COMMAND", f"{shlex.quote(sys.executable)} -c {shlex.quote(AGENT)}"
    )
    monkeypatch.setenv("RUNTIME_VM_PROCESS_STOP_GRACE", "2")
    monkeypatch.setenv("RUNTIME_VM_PROCESS_LIMIT_MEMORY", "0")
    monkeypatch.setenv("RUNTIME_URL", RUNTIME_URL)
    monkeypatch.delenv("RUNTIME_VM_DRIVER", raising=False)
    return data


@pytest.fixture
def server(app_files: AppFiles, serve: Callable[..., LiveServer], vm_data: Path) -> LiveServer:
    return serve(install(app_files, ["vms", "_ticket_ops", "tickets"], plugins=["vm_process"]))


acme = api_fixture(token("acme", "operator", "alice"))
other = api_fixture(token("globex", "operator", "mallory"))


@pytest.fixture
def reap() -> Iterator[list[str]]:
    """Tickets whose agents must be gone after the test (killed if a test left one)."""
    tickets: list[str] = []
    yield tickets
    for ticket_id in tickets:
        for pid in agent_pids(ticket_id):
            os.kill(pid, signal.SIGKILL)


def test_spawn_for_ticket_runs_an_agent_and_claims_the_ticket(
    acme: Api, vm_data: Path, database_url: str, reap: list[str]
) -> None:
    ticket_id = insert_ticket(database_url, "acme")
    reap.append(ticket_id)
    value = acme.ok("vms.spawn_for_ticket", ticket_id=ticket_id)
    vm, claim = value["vm"], value["claim"]
    assert claim["success"] is True
    assert vm["state"] == "running" and vm["driver"] == "process"
    assert vm["driver_vm_id"].startswith("proc-") and vm["ticket_id"] == ticket_id
    assert vm["tenant_id"] == "acme" and vm["host"]
    assert sql(database_url, "SELECT state, vm_id FROM tickets WHERE _id = %s", ticket_id) == [
        ("claimed", vm["_id"])
    ]

    env_file = vm_data / "vms" / vm["driver_vm_id"] / "env.json"
    wait_until(env_file.exists)
    env = json.loads(env_file.read_text())
    assert env["TICKET_ID"] == ticket_id and env["VM_ID"] == vm["_id"]
    assert env["RUNTIME_URL"] == RUNTIME_URL and env["TENANT_ID"] == "acme"
    assert agent_pids(ticket_id)

    stopped = acme.ok("vms.stop", vm_id=vm["_id"])
    assert stopped["state"] == "stopped"
    wait_until(lambda: not agent_pids(ticket_id))
    assert acme.ok("vms.stop", vm_id=vm["_id"])["state"] == "stopped"  # idempotent


def test_failed_claim_stops_the_vm_again(
    acme: Api, vm_data: Path, database_url: str, reap: list[str]
) -> None:
    ticket_id = insert_ticket(database_url, "acme", state="claimed")
    reap.append(ticket_id)
    err = acme.error("vms.spawn_for_ticket", 409, ticket_id=ticket_id)
    assert err == {"code": "conflict", "message": "Cannot claim ticket in state: claimed"}
    rows = sql(
        database_url,
        "SELECT state, last_error, driver_vm_id FROM vms WHERE ticket_id = %s",
        ticket_id,
    )
    assert len(rows) == 1
    state, last_error, driver_vm_id = rows[0]
    assert state == "stopped"
    assert last_error == "ticket claim failed: conflict: Cannot claim ticket in state: claimed"
    assert (vm_data / "vms" / driver_vm_id).is_dir()  # it really was started ...
    wait_until(lambda: not agent_pids(ticket_id))  # ... and nothing of it is left running
    assert sql(database_url, "SELECT state FROM tickets WHERE _id = %s", ticket_id) == [
        ("claimed",)
    ]


def test_another_tenants_ticket_spawns_nothing(
    other: Api, vm_data: Path, database_url: str, reap: list[str]
) -> None:
    ticket_id = insert_ticket(database_url, "acme")
    reap.append(ticket_id)
    err = other.error("vms.spawn_for_ticket", 404, ticket_id=ticket_id)
    assert err == {"code": "not_found", "message": "Ticket not found"}
    assert sql(database_url, "SELECT count(*) FROM vms") == [(0,)]
    assert not (vm_data / "vms").exists() and not agent_pids(ticket_id)


def test_spawn_failure_marks_the_vm_error(
    app_files: AppFiles,
    serve: Callable[..., LiveServer],
    vm_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    monkeypatch.setenv("RUNTIME_VM_PROCESS_COMMAND", "/nonexistent/agent")
    install(app_files, ["vms", "_ticket_ops", "tickets"], plugins=["vm_process"])
    server = serve(app_files)
    acme = Api(server.url, token("acme", "operator", "alice"))
    ticket_id = insert_ticket(database_url, "acme")
    err = acme.error("vms.spawn_for_ticket", 500, ticket_id=ticket_id)
    acme.close()
    assert "Agent command not found" in err["message"]
    ((state, last_error),) = sql(database_url, "SELECT state, last_error FROM vms")
    assert state == "error" and last_error.startswith("spawn failed: ")
    assert sql(database_url, "SELECT state FROM tickets") == [("pending",)]


def test_register_heartbeat_and_states(acme: Api) -> None:
    vm = acme.ok(
        "vms.register", name="vm-1", driver="firecracker", driver_vm_id="fc-1", host="node-a"
    )
    assert vm["state"] == "starting" and vm["tenant_id"] == "acme"
    vm_id = vm["_id"]
    beat = acme.ok(
        "vms.heartbeat", vm_id=vm_id, cpu_percent=12.5, memory_mb=256, metrics={"load": [0.1, 0.2]}
    )
    assert beat["state"] == "running" and beat["last_heartbeat_at"]
    assert beat["cpu_percent"] == 12.5 and beat["memory_mb"] == 256
    assert acme.ok("vms.heartbeat", vm_id=vm_id, state="busy")["state"] == "busy"
    assert acme.ok("vms.set_state", vm_id=vm_id, state="running")["state"] == "running"
    assert acme.ok("vms.set_state", vm_id=vm_id, state="stopping")["state"] == "stopping"
    assert acme.error("vms.heartbeat", 409, vm_id=vm_id)["message"] == "The VM is stopping"
    acme.ok("vms.set_state", vm_id=vm_id, state="stopped")
    err = acme.error("vms.set_state", 409, vm_id=vm_id, state="running")
    assert err["message"] == "Cannot move a VM from stopped to running"
    assert acme.error("vms.heartbeat", 400, vm_id=vm_id, cpu_percent=-1)["code"] == "invalid_args"
    acme.ok("vms.register", name="vm-2", driver="process")
    assert [v["name"] for v in acme.ok("vms.list", state="stopped")["page"]] == ["vm-1"]
    assert {v["name"] for v in acme.ok("vms.list")["page"]} == {"vm-1", "vm-2"}
    assert acme.ok("vms.get", vm_id=vm_id)["metrics"] == {"load": [0.1, 0.2]}


def test_other_tenants_see_no_vms(acme: Api, other: Api) -> None:
    vm_id = acme.ok("vms.register", name="vm-1", driver="process")["_id"]
    not_found = {"code": "not_found", "message": "VM not found"}
    assert other.error("vms.get", 404, vm_id=vm_id) == not_found
    assert other.error("vms.heartbeat", 404, vm_id=vm_id) == not_found
    assert other.error("vms.set_state", 404, vm_id=vm_id, state="stopped") == not_found
    assert other.error("vms.stop", 404, vm_id=vm_id) == not_found
    assert other.ok("vms.list")["page"] == []
    assert acme.ok("vms.get", vm_id=vm_id)["state"] == "starting"


def test_a_vm_spawned_by_one_worker_is_stopped_by_another(
    app_files: AppFiles,
    serve: Callable[..., LiveServer],
    vm_data: Path,
    database_url: str,
    reap: list[str],
) -> None:
    """Two runtimes on one host, one database and one RUNTIME_DATA: `serve --workers 2`."""
    files = install(app_files, ["vms", "_ticket_ops", "tickets"], plugins=["vm_process"])
    first, second = serve(files), serve(files)
    ticket_id = insert_ticket(database_url, "acme")
    reap.append(ticket_id)
    starter, stopper = Api(first.url, token()), Api(second.url, token())
    try:
        vm = starter.ok("vms.spawn_for_ticket", ticket_id=ticket_id)["vm"]
        wait_until(lambda: agent_pids(ticket_id))

        assert stopper.ok("vms.stop", vm_id=vm["_id"])["state"] == "stopped"

        wait_until(lambda: not agent_pids(ticket_id))
        assert starter.ok("vms.get", vm_id=vm["_id"])["state"] == "stopped"
    finally:
        starter.close()
        stopper.close()
