"""Real servers, started as private instances on 127.0.0.1 for the tests and the benchmarks.

Each installs nothing itself (``scripts/install-*.sh`` do that) and
changes nothing on the host: it runs from its own temporary directory, on
free high ports, and stops when its context ends.

* :mod:`servers.dovecot`: Dovecot's POP3 server (``dovecot-pop3d``).
* :mod:`servers.redis_server`: Redis, for the scale-out example.
* :mod:`servers.ports` and :mod:`servers.programs`: free ports and finding
  the programs, shared by both.
"""
