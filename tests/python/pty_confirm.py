"""Runs a command in a pseudo-terminal, answers its confirmation prompt.

Usage: pty_confirm.py ANSWER CMD [ARG...]. Waits (at most 60 s) for
"[y/N]" on the terminal, writes ANSWER and a newline, reads the rest of the
output, and exits with the command's exit code after printing its output.
"""

import os
import pty
import select
import sys
import time


def main() -> int:
    answer, cmd = sys.argv[1], sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(cmd[0], cmd)
    out = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not answered and b"[y/N]" in out:
            os.write(fd, answer.encode() + b"\n")
            answered = True
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace"))
    sys.stdout.write("\nPROMPTED\n" if answered else "\nNOT PROMPTED\n")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
