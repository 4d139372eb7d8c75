"""The servers and their mailboxes: a private Dovecot, and popa3d when this machine can run it.

Every mailbox gets a manifest (size and SHA-256 of each message, see
:mod:`benchmarks.harness.messages`) in a work directory, against which the workers
check what they fetched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.endpoint import DIRECT, Endpoint, Route
from benchmarks.harness.messages import build_message, write_manifest
from servers.dovecot import DovecotServer, MailUser
from servers.popa3d import NoCorkServer, make_messages

from .spec import ServerSpec

__all__ = ["Plan", "ServedMailbox", "dovecot_mailboxes", "popa3d_mailbox"]


@dataclass(frozen=True)
class Plan:
    """A mailbox to create: ``count`` messages of ``size`` octets for user ``user``."""

    user: str
    count: int
    size: int


@dataclass(frozen=True)
class ServedMailbox:
    """A mailbox being served: where (plain, and TLS when offered), and what it holds."""

    count: int
    octets: int
    manifest: str
    plain: ServerSpec
    tls: ServerSpec | None = None


def _password(user: str) -> str:
    return f"{user}-Secret-1"


@contextlib.contextmanager
def dovecot_mailboxes(
    plans: Sequence[Plan], workdir: Path, route: Route = DIRECT
) -> Iterator[tuple[DovecotServer, dict[str, ServedMailbox]]]:
    """Start a private Dovecot serving every planned mailbox; yield it and the mailboxes by user.

    Clients reach it by ``route`` (straight, by default).
    """
    users = []
    mailboxes: dict[str, ServedMailbox] = {}
    manifests: dict[str, tuple[str, int]] = {}
    for plan in plans:
        messages = tuple(build_message(index, plan.size) for index in range(1, plan.count + 1))
        manifest = workdir / f"{plan.user}.json"
        manifests[plan.user] = (str(manifest), write_manifest(manifest, messages))
        users.append(MailUser(plan.user, _password(plan.user), messages))
    with DovecotServer(users) as server:
        for plan in plans:
            manifest_path, octets = manifests[plan.user]
            password = _password(plan.user)
            plain = route.endpoint(Endpoint(server.host, server.pop3_port))
            tls = route.endpoint(Endpoint(server.host, server.pop3s_port))
            mailboxes[plan.user] = ServedMailbox(
                count=plan.count,
                octets=octets,
                manifest=manifest_path,
                plain=ServerSpec(plain.host, plain.port, plan.user, password),
                tls=ServerSpec(
                    tls.host,
                    tls.port,
                    plan.user,
                    password,
                    cafile=str(server.ca_pem_path),
                ),
            )
        yield server, mailboxes


@contextlib.contextmanager
def popa3d_mailbox(
    count: int, size: int, workdir: Path
) -> Iterator[tuple[NoCorkServer, ServedMailbox]]:
    """Start popa3d (needs root) with ``count`` messages of ``size`` octets.

    Raises :class:`~servers.popa3d.NoCorkServerUnavailableError`
    when this machine cannot run it.
    """
    server = NoCorkServer(make_messages(count, size))
    manifest = workdir / "popa3d.json"
    octets = write_manifest(manifest, server.expected)
    with server:
        plain = ServerSpec(server.host, server.port, server.user, server.password)
        yield server, ServedMailbox(count=count, octets=octets, manifest=str(manifest), plain=plain)
