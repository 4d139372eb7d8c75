"""bench-run OUT UID GID PROGRAM [ARG...] in Python, for a machine without cc (see bench-run.c)."""

import json
import os
import sys
import time

out, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
began = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        if gid >= 0:
            os.setgroups([])
            os.setgid(gid)
        if uid >= 0:
            os.setuid(uid)
        os.execvp(sys.argv[4], sys.argv[4:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - began
with open(out, "w") as file:
    json.dump(
        {
            "wall": wall,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
            "user": usage.ru_utime,
            "system": usage.ru_stime,
            "maxrss_kib": usage.ru_maxrss,
        },
        file,
    )
