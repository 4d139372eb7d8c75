"""Real servers, started as private instances on 127.0.0.1 for the tests and the benchmarks.

Each installs nothing itself (``scripts/install-*.sh`` do that) and
changes nothing on the host: it runs from its own temporary directory, on
free high ports, and stops when its context ends.

* :mod:`servers.dovecot`: Dovecot's POP3 server (``dovecot-pop3d``).
* :mod:`servers.redis_server`: Redis, for the scale-out example.
* :mod:`servers.proxies`: Dante, microsocks and tinyproxy (SOCKS5, SOCKS5
  with a password, HTTP CONNECT), for the tests through a proxy.
* :mod:`servers.popa3d`: popa3d, a server that does not cork its replies, in
  a private mount namespace (root; fetched with ``apt-get download``, never
  installed), for the throughput benchmark; ``python -m servers.popa3d``
  shows the delayed-ACK cost on its own.
* :mod:`servers.latency`: a server that answers every command after a fixed
  delay on many loopback addresses, for the scale benchmark (its docstring
  says why not :mod:`aiopop.testing`'s).
* :mod:`servers.ports` and :mod:`servers.programs`: free ports and finding
  the programs, shared by both.
"""
