"""bench-mda MAILDIR in Python, for a machine without a C compiler (see bench-mda.c).

No percent sign anywhere in this file: fetchmail expands its escapes in the mda string.
"""

import os
import socket
import sys
import time

data = sys.stdin.buffer.read()
name = f"{time.time_ns()}.P{os.getpid()}.{socket.gethostname()}"
tmp = os.path.join(sys.argv[1], "tmp", name)
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
view = memoryview(data)
while view:
    view = view[os.write(fd, view) :]
os.fsync(fd)
os.close(fd)
os.rename(tmp, os.path.join(sys.argv[1], "new", name))
