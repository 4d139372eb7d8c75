"""How login() chooses: STLS, then SCRAM-SHA-256; then OAuth 2.0 with a token callable.

    python examples/login_methods.py

Runs against aiopop's embedded test server on 127.0.0.1 (never a real
host): a plain POP3 port offering STLS, APOP and the SASL mechanisms
PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256, XOAUTH2 and OAUTHBEARER.
``login(user, password)`` asks CAPA, upgrades with STLS, asks CAPA again
and picks SCRAM-SHA-256, the strongest; ``login(user, oauth2_token=...)``
picks OAUTHBEARER and calls the token function once. Each login prints
the method and the commands sent before AUTH, then STAT's answer.

The certificate for STLS comes from a throw-away CA made with ``trustme``,
which is in aiopop's test extras (``pip install -e '.[test]'``), not in its
dependencies. Without it the server offers no STLS: the password login
still uses SCRAM-SHA-256 (it never sends the password), and the OAuth 2.0
login raises InsecureLoginError before the token function is called, as
it would on any connection without TLS.
"""

from __future__ import annotations

import asyncio
import ssl

import aiopop
from aiopop.testing import Mailbox, POP3TestServer

PASSWORD = "correct horse"
TOKEN = "ya29.example-access-token"
MESSAGES = [
    b"Subject: one\r\n\r\nHello\r\n",
    b"Subject: two\r\n\r\nWorld\r\n",
]
MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"]


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """A server and a client context sharing a throw-away CA; None without trustme."""
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def refresh_token_blocking() -> str:
    """Stands in for a blocking library call (google-auth, MSAL) that refreshes a token."""
    return TOKEN


async def fresh_token() -> str:
    """What ``oauth2_token=`` takes: an async callable returning a valid access token."""
    return await asyncio.to_thread(refresh_token_blocking)


async def report(server: POP3TestServer, client: aiopop.POP3, method: aiopop.AuthMethod) -> None:
    """Print the method, the commands before AUTH (from the server's record) and STAT."""
    verbs = [line.split(b" ")[0].decode() for line in server.sessions[-1].lines]
    before = " ".join(verbs[: verbs.index("AUTH")])  # what went out before the credentials
    where = "over TLS" if client.is_tls else "in the clear"
    print(f"Logged in with {method} {where}, after {before}")
    print("You have %d messages totaling %d bytes" % await client.stat())


async def main() -> None:
    contexts = tls_contexts()
    server_context, client_context = contexts if contexts else (None, None)
    if contexts is None:
        print("trustme is not installed: the test server offers no STLS")
    mailbox = Mailbox(PASSWORD, list(MESSAGES), tokens=(TOKEN,))
    server = POP3TestServer({"alice": mailbox}, starttls_context=server_context, sasl=MECHANISMS)
    async with server:
        # tls="if-offered" is the default; ssl_context trusts the test CA.
        client = aiopop.POP3(server.host, server.port, ssl_context=client_context, timeout=10)
        async with client:
            method = await client.login("alice", PASSWORD)
            await report(server, client, method)

        client = aiopop.POP3(server.host, server.port, ssl_context=client_context, timeout=10)
        async with client:
            try:
                method = await client.login("alice", oauth2_token=fresh_token)
            except aiopop.InsecureLoginError as exc:
                print(f"OAuth 2.0 login refused: {exc}")
                return
            await report(server, client, method)


if __name__ == "__main__":
    asyncio.run(main())
