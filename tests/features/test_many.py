"""check_many: many mailboxes at once, each result on its own, limits, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import pytest
import trustme

import aiopop
from aiopop._accounts import Account, AccountError
from aiopop._many import TASK_NAME_PREFIX, CheckResult, check_many, failure_reason
from aiopop.testing import (
    Close,
    Expect,
    Faults,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Sleep,
    Step,
)
from aiopop.testing._base import LoopbackServer
from tests.helpers.tls import server_context

PASSWORD = "secret"
GREETING = Send(b"+OK ready\r\n")


def _account(
    server: LoopbackServer,
    user: str,
    password: str | Callable[[], Awaitable[str]] = PASSWORD,
    *,
    host: str | None = None,
    auth: str = "+USER",
    timeout: float | None = 60.0,
) -> Account:
    return Account(
        host or server.host,
        user,
        port=server.port,
        tls="none",
        auth=auth,
        password=password,
        allow_cleartext=True,
        timeout=timeout,
    )


async def _all(
    accounts: Sequence[Account] | Iterator[Account], **options: object
) -> list[CheckResult]:
    async with contextlib.aclosing(check_many(accounts, **options)) as results:  # type: ignore[arg-type]
        return [result async for result in results]


def _by_user(results: Sequence[CheckResult]) -> dict[str, CheckResult]:
    return {result.account.user: result for result in results}


def _active(server: POP3TestServer) -> int:
    """Sessions the server holds right now that have not reached QUIT."""
    return sum(1 for record in server.sessions if not record.closed and not record.quit)


@contextlib.asynccontextmanager
async def _peaks(**groups: Sequence[POP3TestServer]) -> AsyncIterator[dict[str, int]]:
    """The most sessions each group of servers held at once, together (sampled every ms)."""
    peaks = dict.fromkeys(groups, 0)

    async def sample() -> None:
        while True:
            for name, servers in groups.items():
                peaks[name] = max(peaks[name], sum(_active(server) for server in servers))
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def _slow_secret(seconds: float = 0.05) -> Callable[[], Awaitable[str]]:
    """A password that takes ``seconds`` to arrive: each session stays open at least that long."""

    async def secret() -> str:
        await asyncio.sleep(seconds)
        return PASSWORD

    return secret


def _check_tasks() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith(TASK_NAME_PREFIX) and not task.done()
    ]


# -- results -------------------------------------------------------------------------------------


async def test_every_account_on_several_servers_gets_its_result() -> None:
    alice = Mailbox(PASSWORD, [b"Subject: a\r\n\r\nA\r\n", b"Subject: b\r\n\r\nBB\r\n"])
    bob = Mailbox(PASSWORD, [b"Subject: c\r\n\r\nC\r\n"])  # 17 octets
    carol = Mailbox(PASSWORD)
    locked = Mailbox(PASSWORD, [b"x\r\n"], locked=True)
    first = POP3TestServer({"alice": alice, "bob": bob, "mallory": Mailbox("right")})
    second = POP3TestServer({"carol": carol, "dave": locked})
    async with first, second:
        accounts = [
            _account(first, "alice", auth="*"),
            _account(first, "bob"),
            _account(first, "mallory", "wrong", auth="*"),
            _account(second, "carol"),
            _account(second, "dave"),
        ]
        results = _by_user(await _all(accounts))
        await first.wait_idle()
        await second.wait_idle()

    assert set(results) == {"alice", "bob", "mallory", "carol", "dave"}
    assert results["alice"].stat == (2, 17 + 18)
    assert results["bob"].stat == (1, 17)
    assert results["carol"].stat == (0, 0)
    for user in ("alice", "bob", "carol"):
        assert results[user].ok
        assert results[user].error is None
        assert results[user].reason is None
        assert results[user].uids is None  # not asked for
        assert results[user].elapsed > 0
    wrong = results["mallory"]
    assert isinstance(wrong.error, aiopop.CredentialsError)
    assert (wrong.ok, wrong.stat, wrong.reason) == (False, None, "credentials")
    in_use = results["dave"]
    assert isinstance(in_use.error, aiopop.MailboxInUseError)
    assert (in_use.ok, in_use.stat, in_use.reason) == (False, None, "in use")
    # Nothing on the servers changed: STAT, then QUIT, and never a DELE.
    sessions = first.sessions + second.sessions
    assert all(record.closed for record in sessions)
    for record in sessions:
        assert not {"DELE", "RSET"} & set(record.keywords)
        if record.user in ("alice", "bob", "carol"):
            assert record.keywords[-2:] == ["STAT", "QUIT"]
            assert record.quit
    assert (len(alice.messages), len(bob.messages)) == (2, 1)


async def test_uidl_is_fetched_when_asked() -> None:
    box = Mailbox(PASSWORD, [b"a\r\n", b"b\r\n", b"c\r\n"], uids=["one", "two", "three"])
    async with POP3TestServer({"alice": box, "empty": Mailbox(PASSWORD)}) as server:
        results = _by_user(
            await _all([_account(server, "alice"), _account(server, "empty")], uidl=True)
        )
    assert results["alice"].stat == (3, 9)
    assert results["alice"].uids == [(1, "one"), (2, "two"), (3, "three")]
    assert results["empty"].uids == []
    assert [record.keywords[-3:] for record in server.sessions] == [["STAT", "UIDL", "QUIT"]] * 2


async def test_login_delay_is_reported_as_such() -> None:
    script: list[Step] = [
        GREETING,
        Expect(b"USER alice"),
        Send(b"+OK\r\n"),
        Expect(b"PASS " + PASSWORD.encode()),
        Send(b"-ERR [LOGIN-DELAY] wait 15 minutes between logins\r\n"),
    ]
    async with ScriptedServer(script) as server:
        (result,) = await _all([_account(server, "alice")])
        await asyncio.wait_for(server.wait_idle(), 2)
    assert isinstance(result.error, aiopop.LoginDelayError)
    assert isinstance(result.error, aiopop.AuthenticationError)
    assert (result.ok, result.stat, result.reason) == (False, None, "login delay")
    assert server.mismatches == []
    assert b"QUIT" not in server.received


async def test_an_unexpected_exception_ends_only_its_own_check() -> None:
    async def broken_secret() -> str:
        raise RuntimeError("the vault is on fire")

    async with POP3TestServer({f"u{n}": Mailbox(PASSWORD) for n in range(4)}) as server:
        accounts = [_account(server, f"u{n}") for n in range(4)]
        accounts.insert(2, _account(server, "u0", broken_secret, host="localhost"))
        results = await _all(accounts)
    assert len(results) == 5
    broken = [result for result in results if not result.ok]
    assert [result.account.host for result in broken] == ["localhost"]
    assert isinstance(broken[0].error, RuntimeError)
    assert broken[0].reason == "error"
    assert sum(result.stat == (0, 0) for result in results) == 4


# -- slow and hostile servers ----------------------------------------------------------------------


async def test_a_server_that_never_answers_times_out_alone() -> None:
    silent = ScriptedServer([])  # accepts, never greets
    async with silent, POP3TestServer({f"u{n}": Mailbox(PASSWORD) for n in range(3)}) as good:
        accounts = [_account(silent, "nobody"), *(_account(good, f"u{n}") for n in range(3))]
        loop = asyncio.get_running_loop()
        began = loop.time()
        arrivals: list[tuple[float, CheckResult]] = []
        async with contextlib.aclosing(check_many(accounts, deadline=0.4)) as results:
            async for result in results:
                arrivals.append((loop.time() - began, result))
        await asyncio.wait_for(silent.wait_idle(), 2)
    # The good ones arrive first, fast; the silent one after its own timeout.
    assert {result.account.user for _, result in arrivals[:3]} == {"u0", "u1", "u2"}
    assert all(result.ok and at < 0.3 for at, result in arrivals[:3])
    at, late = arrivals[3]
    assert late.account.user == "nobody"
    assert isinstance(late.error, aiopop.POP3TimeoutError)
    assert late.reason == "timeout"
    assert 0.35 <= late.elapsed < 2
    assert at < 2
    assert silent.connections == 1


async def test_the_deadline_bounds_the_whole_check_not_each_step() -> None:
    # Every reply takes 0.1 s: each step is well within the account's own 0.25 s
    # timeout, but connect + USER + PASS + STAT + QUIT is not within 0.25 s.
    script: list[Step] = [
        Sleep(0.1),
        GREETING,
        Expect(b"USER alice"),
        Sleep(0.1),
        Send(b"+OK\r\n"),
        Expect(),
        Sleep(0.1),
        Send(b"+OK\r\n"),
        Expect(b"STAT"),
        Sleep(0.1),
        Send(b"+OK 0 0\r\n"),
        Expect(b"QUIT"),
        Sleep(0.1),
        Send(b"+OK\r\n"),
        Close(),
    ]
    async with ScriptedServer(script) as server:
        (slow,) = await _all([_account(server, "alice", timeout=0.25)], deadline=0.25)
        (patient,) = await _all([_account(server, "alice", timeout=0.25)], deadline=5)
        await asyncio.wait_for(server.wait_idle(), 2)
    assert isinstance(slow.error, aiopop.POP3TimeoutError)
    assert slow.reason == "timeout"
    assert "took over 0.25 s" in str(slow.error)
    assert 0.2 <= slow.elapsed < 1
    assert patient.stat == (0, 0)
    assert patient.ok
    assert patient.elapsed >= 0.45


async def test_reasons_for_tls_connection_and_protocol_failures(ca: trustme.CA) -> None:
    tls_context = server_context(ca, "127.0.0.1")
    garbage = ScriptedServer([Send(b"HELLO THERE\r\n")])
    plain = POP3TestServer({"nopassword": Mailbox(PASSWORD)})
    with socket.socket() as unused:  # bound but not listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        refused_port = unused.getsockname()[1]
        tls = POP3TestServer({"u": Mailbox(PASSWORD)}, ssl_context=tls_context)
        async with tls, garbage, plain:
            accounts = [
                Account(tls.host, "u", port=tls.port, password=PASSWORD),  # untrusted CA
                Account("127.0.0.1", "refused", port=refused_port, password=PASSWORD),
                _account(garbage, "garbage"),
                Account(plain.host, "nopassword", port=plain.port, tls="none"),
            ]
            results = _by_user(await _all(accounts, deadline=5))
    assert isinstance(results["u"].error, ssl.SSLCertVerificationError)
    assert results["u"].reason == "tls"
    assert isinstance(results["refused"].error, ConnectionRefusedError)
    assert results["refused"].reason == "connection"
    assert isinstance(results["garbage"].error, aiopop.ProtocolError)
    assert results["garbage"].reason == "protocol"
    assert isinstance(results["nopassword"].error, AccountError)
    assert results["nopassword"].reason == "account"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (aiopop.CredentialsError("no", "AUTH"), "credentials"),
        (aiopop._errors.response_error("x", "IN-USE", command="PASS", login=True), "in use"),
        (
            aiopop._errors.response_error("x", "LOGIN-DELAY", command="PASS", login=True),
            "login delay",
        ),
        (aiopop._errors.response_error("x", "SYS/TEMP", command="PASS", login=True), "temporary"),
        (aiopop._errors.response_error("x", "SYS/PERM", command="STAT"), "permanent"),
        (aiopop._errors.response_error("x", None, command="PASS", login=True), "authentication"),
        (aiopop.ResponseError("no such thing", command="STAT"), "refused"),
        (aiopop.POP3TimeoutError("slow"), "timeout"),
        (TimeoutError(), "timeout"),
        (aiopop.TLSRequiredError("no STLS"), "tls"),
        (aiopop.InsecureLoginError("cleartext"), "tls"),
        (ssl.SSLError("handshake"), "tls"),
        (aiopop.ConnectionLostError("gone"), "connection"),
        (aiopop.ConnectionClosedError("closed"), "connection"),
        (ConnectionResetError(), "connection"),
        (socket.gaierror("no such host"), "connection"),
        (aiopop.ProtocolError("junk"), "protocol"),
        (aiopop.MalformedReplyError("junk"), "protocol"),
        (aiopop.SASLError("forged"), "protocol"),
        (aiopop._errors.response_error("x", "SYS/PERM", command="PASS", login=True), "permanent"),
        (OSError(28, "No space left on device", "/m/x"), "local"),
        (aiopop.UIDLUnavailableError(aiopop.ResponseError("no")), "unsupported"),
        (aiopop.MethodNotOfferedError("no SCRAM"), "unsupported"),
        (AccountError("no secret"), "account"),
        (aiopop.DeliveryError("procmail exited with status 75", uid="u1"), "delivery"),
        (asyncio.CancelledError(), "cancelled"),
        (RuntimeError("bug"), "error"),
    ],
)
def test_failure_reason(error: BaseException, reason: str) -> None:
    assert failure_reason(error) == reason
    account = Account("127.0.0.1", "u")
    assert CheckResult(account, error=error).reason == reason
    assert not CheckResult(account, error=error).ok
    assert reason in repr(CheckResult(account, error=error))


# -- limits ---------------------------------------------------------------------------------------


async def test_per_host_limit_counts_host_names_not_ports_nor_case() -> None:
    a, b, c = (POP3TestServer({f"u{n}": Mailbox(PASSWORD) for n in range(4)}) for _ in range(3))
    async with a, b, c, _peaks(ip=[a, b], name=[c], all=[a, b, c]) as peaks:
        # Host "127.0.0.1" on two ports (a and b): one limit for both.
        accounts = [
            _account(server, f"u{n}", _slow_secret()) for n in range(3) for server in (a, b)
        ]
        # Host "localhost", spelt three ways (c): one limit.
        accounts += [
            _account(c, f"u{n}", _slow_secret(), host=name)
            for n, name in enumerate(("localhost", "LOCALHOST", "LocalHost", "localhost"))
        ]
        results = await _all(accounts, per_host=2)
    assert [result.ok for result in results] == [True] * 10
    assert peaks == {"ip": 2, "name": 2, "all": 4}  # never above the limits, and used fully
    assert (len(a.sessions), len(b.sessions), len(c.sessions)) == (3, 3, 4)


async def test_a_host_whose_checks_all_ended_takes_new_accounts_again() -> None:
    """One slot, one per host: each account is read only once the one before ended.

    The host's count must drop back when a check ends, or the next account of
    that host, read after the queue for it ran empty, would wait for ever.
    """
    async with POP3TestServer({f"u{n}": Mailbox(PASSWORD) for n in range(3)}) as server:
        names = ("localhost", "LocalHost", "LOCALHOST")  # one host
        accounts = [_account(server, f"u{n}", host=name) for n, name in enumerate(names)]
        async with _peaks(all=[server]) as peaks:
            results = await _all(accounts, concurrency=1, per_host=1)
    assert [result.account.user for result in results] == ["u0", "u1", "u2"]
    assert all(result.ok for result in results)
    assert peaks == {"all": 1}


async def test_global_concurrency_limit() -> None:
    servers = [POP3TestServer({f"u{n}": Mailbox(PASSWORD) for n in range(3)}) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        peaks = await stack.enter_async_context(_peaks(all=servers))
        accounts = [
            _account(server, f"u{n}", _slow_secret()) for server in servers for n in range(3)
        ]
        results = await _all(accounts, concurrency=2, per_host=10)
    assert [result.ok for result in results] == [True] * 9
    assert peaks["all"] == 2  # never more than 2 at once across all hosts, and 2 were used


async def test_a_full_host_does_not_hold_up_other_hosts() -> None:
    busy = POP3TestServer({f"u{n}": Mailbox(PASSWORD) for n in range(4)})
    other = POP3TestServer({"last": Mailbox(PASSWORD)})
    async with busy, other:
        accounts = [_account(busy, f"u{n}", _slow_secret(0.1)) for n in range(4)]
        accounts.append(_account(other, "last", host="localhost"))
        results = await _all(accounts, concurrency=2, per_host=1)
    # busy's accounts go one at a time (0.1 s each); the other host's account takes the
    # second slot at once instead of waiting behind them.
    assert results[0].account.user == "last"
    assert results[0].elapsed < 0.1
    assert [result.account.user for result in results[1:]] == ["u0", "u1", "u2", "u3"]


async def test_accounts_are_read_lazily() -> None:
    # Account n's check takes (n + 1) * 20 ms, so no two end at the same moment.
    async with POP3TestServer({f"u{n}": Mailbox(PASSWORD) for n in range(5)}) as server:
        running_when_read: list[int] = []

        def accounts() -> Iterator[Account]:
            for n in range(5):
                running_when_read.append(len(_check_tasks()))
                yield _account(server, f"u{n}", _slow_secret((n + 1) * 0.02))

        results = await _all(accounts(), concurrency=2)
    assert [result.ok for result in results] == [True] * 5
    # Two are read at the start; each of the others only when a check has ended.
    assert running_when_read == [0, 1, 1, 1, 1]


async def test_a_failing_iterable_stops_everything() -> None:
    hanging = ScriptedServer([GREETING])  # greets, then never answers
    async with hanging, POP3TestServer({"fast": Mailbox(PASSWORD)}) as good:

        def accounts() -> Iterator[Account]:
            yield _account(good, "fast")
            yield _account(hanging, "bob")
            raise LookupError("the account database went away")  # read when "fast" ends

        with pytest.raises(LookupError, match="went away"):
            await _all(accounts(), concurrency=2, deadline=None)
        assert _check_tasks() == []
        await asyncio.wait_for(hanging.wait_idle(), 1)
    assert hanging.connections == 1
    assert good.sessions[0].quit


async def test_nothing_to_check() -> None:
    assert await _all([]) == []


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"concurrency": 1.5},
        {"per_host": 0},
        {"per_host": True},
        {"deadline": 0},
        {"deadline": -1},
        {"deadline": float("nan")},
    ],
)
def test_bad_arguments_are_refused_at_the_call(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        check_many([], **options)  # type: ignore[arg-type]


def test_timeout_is_a_deprecated_name_of_deadline() -> None:
    """timeout means one step everywhere; the whole check's limit is the deadline."""
    with (
        pytest.warns(DeprecationWarning, match="deadline"),
        pytest.raises(ValueError, match="timeout must be"),
    ):
        check_many([], timeout=0)


async def test_the_deprecated_timeout_still_bounds_the_whole_check() -> None:
    silent = ScriptedServer([])  # accepts, never greets
    async with silent:
        with pytest.warns(DeprecationWarning, match="deadline"):
            checks = check_many([_account(silent, "nobody")], timeout=0.2)
        async with contextlib.aclosing(checks) as results:
            (result,) = [result async for result in results]
    assert result.reason == "timeout"
    assert result.elapsed < 2


def test_the_default_deadline_is_the_clients_one_constant() -> None:
    from aiopop._client import DEFAULT_TIMEOUT
    from aiopop._many import DEFAULT_DEADLINE

    assert DEFAULT_DEADLINE == DEFAULT_TIMEOUT


async def test_only_accounts_are_accepted() -> None:
    with pytest.raises(TypeError, match="Account objects"):
        await _all(["pop://alice@example.com"])  # type: ignore[list-item]


# -- cancellation ----------------------------------------------------------------------------

_HANG_AFTER_LOGIN: list[Step] = [
    GREETING,
    Expect(),
    Send(b"+OK\r\n"),
    Expect(),
    Send(b"+OK logged in\r\n"),
]  # then STAT is never answered


async def _until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the condition is the servers' state
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("how", ["leave the loop", "cancel the consumer"])
async def test_stopping_closes_every_connection(how: str) -> None:
    hanging = ScriptedServer(_HANG_AFTER_LOGIN)
    async with hanging, POP3TestServer({"fast": Mailbox(PASSWORD)}) as good:
        accounts = [_account(hanging, f"h{n}") for n in range(5)]
        accounts.append(_account(good, "fast", _slow_secret(0.1)))
        got: list[CheckResult] = []

        async def consume() -> None:
            async with contextlib.aclosing(check_many(accounts, deadline=None)) as results:
                async for result in results:
                    got.append(result)
                    if how == "leave the loop":
                        break

        consumer = asyncio.create_task(consume())
        # Every hanging session is logged in and waiting for its STAT.
        await _until(lambda: hanging.received.count(b"STAT") == 5)
        assert len(_check_tasks()) >= 5
        if how == "cancel the consumer":
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
        else:
            await consumer
            assert [result.account.user for result in got] == ["fast"]
        # Every check was cancelled and awaited before the generator finished closing...
        assert _check_tasks() == []
        # ...and closed its connection: the server sees every one end, without QUIT.
        await asyncio.wait_for(hanging.wait_idle(), 1)
    assert hanging.connections == 5
    assert b"QUIT" not in hanging.received


async def test_the_method_that_worked_is_tried_first_on_the_next_check() -> None:
    # The server offers SCRAM-SHA-256 but refuses it for the right password (a stored
    # hash that cannot serve SCRAM); USER/PASS works.
    faults = Faults(error_at="AUTH", error="[AUTH] Authentication failed.")
    box = Mailbox(PASSWORD, [b"Subject: a\r\n\r\nx\r\n"])
    server = POP3TestServer({"u": box}, sasl=["SCRAM-SHA-256"], apop=False, faults=faults)
    async with server:
        account = _account(server, "u", auth="*")
        (first,) = await _all([account])
        assert first.ok
        assert server.sessions[0].keywords == ["CAPA", "AUTH", "USER", "PASS", "STAT", "QUIT"]
        (second,) = await _all([account])  # another call, the same process
        assert second.ok
        # No failed attempt: straight to the method that worked.
        assert server.sessions[1].keywords == ["CAPA", "USER", "PASS", "STAT", "QUIT"]
        # Remembered per mailbox: another user on the same server starts afresh.
        server.mailboxes["v"] = Mailbox(PASSWORD, [])
        (other,) = await _all([_account(server, "v", auth="*")])
        assert other.ok
        assert server.sessions[2].keywords[:3] == ["CAPA", "AUTH", "USER"]
    assert [record.mechanism for record in server.sessions] == ["USER", "USER", "USER"]
