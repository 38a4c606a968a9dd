"""Shared value types and Protocols: the identity of a caller, VM drivers, call records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

JSON = Any
IdentityKind = Literal["user", "api_key", "dev", "system"]


@dataclass(frozen=True)
class Identity:
    """Who is calling. `permissions` is None until the authorize hooks resolve it."""

    user_id: str | None
    tenant_id: str | None = None
    roles: tuple[str, ...] = ()
    permissions: frozenset[str] | None = None
    kind: IdentityKind = "user"
    key_id: str | None = None  # API key id, for audit
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


SYSTEM = Identity(user_id=None, tenant_id=None, roles=("system",), kind="system")


@dataclass(frozen=True)
class VMSpec:
    """What to start: the agent command, its environment and resource limits."""

    name: str
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    memory_mb: int = 512
    vcpus: int = 1
    cpu_seconds: int | None = None
    kernel_image: str | None = None
    rootfs: str | None = None
    ticket_id: str | None = None


@dataclass(frozen=True)
class VMInfo:
    """A VM as a driver reports it. `state` uses the Swarm VM states."""

    vm_id: str
    driver: str
    state: Literal["starting", "running", "busy", "stopping", "stopped", "error"]
    pid: int | None = None
    exit_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class VMDriver(Protocol):
    """The interface every VM driver implements; `ctx.vm` is the configured one."""

    name: str

    async def spawn(self, spec: VMSpec) -> VMInfo: ...

    async def stop(self, vm_id: str) -> VMInfo: ...

    async def status(self, vm_id: str) -> VMInfo: ...

    async def list(self) -> list[VMInfo]: ...


@dataclass(slots=True)  # one per call: not frozen, whose __init__ costs twice as much
class CallInfo:
    """What the `call_finished` hook receives after every function call (read it, don't
    change it: every plugin sees the same object)."""

    request_id: str
    function: str
    kind: str
    status: int
    code: str | None
    duration_s: float
    attempts: int
    tenant_id: str | None
    user_id: str | None
    hot_key_waited: bool = False
