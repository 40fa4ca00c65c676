"""Freeze one thread of a running process in the middle of reading a file, as a hung disk or a
dead network file system would: the thread stops at the entry of an `openat` or `read` of a file
under PREFIX, inside the system call, where CPython has released the GIL, and stays there while
the process's other threads run on. SIGSTOP cannot do that (it stops every thread), and a thread
stopped while it holds the GIL would stop them too.

    python3 freeze.py PID PREFIX [TIMEOUT]

Standalone (standard library only, Linux x86-64, root): the tests run it on this machine or pipe
it into a test host's `python3 -`. It prints `frozen TID PATH` once a thread is caught, then keeps
it stopped until this program ends (a tracer that exits lets its tracee go on) or the process
exits. Exit status 1 if no thread read such a file within TIMEOUT seconds (default 60).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PTRACE_SYSCALL = 24
PTRACE_GETREGS = 12
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_GETEVENTMSG = 0x4201
PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACECLONE = 8
PTRACE_EVENT_CLONE = 3
WALL = 0x40000000
# x86-64 system calls that read a file: read, pread64, readv, open, openat
READS = {0: "fd", 17: "fd", 19: "fd", 2: "path", 257: "path"}
# struct user_regs_struct (x86-64): indexes of the registers used
RDI, RSI, ORIG_RAX = 14, 13, 15

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, tid: int, addr: int = 0, data: int = 0) -> int:
    result = libc.ptrace(request, tid, ctypes.c_void_p(addr), ctypes.c_void_p(data))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")
    return result


def registers(tid: int) -> list[int]:
    regs = (ctypes.c_ulonglong * 27)()
    ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
    return list(regs)


def read_path(pid: int, address: int) -> str:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        mem.seek(address)
        return mem.read(4096).split(b"\0", 1)[0].decode(errors="replace")


def file_read(pid: int, regs: list[int]) -> str | None:
    """The file this system call entry reads, if it reads one."""
    how = READS.get(regs[ORIG_RAX])
    try:
        if how == "fd":
            return os.readlink(f"/proc/{pid}/fd/{regs[RDI]}")
        if how == "path":
            address = regs[RSI] if regs[ORIG_RAX] == 257 else regs[RDI]
            return read_path(pid, address)
    except OSError:
        return None
    return None


def freeze(pid: int, prefix: str, timeout: float) -> tuple[int, str] | None:
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    seized = []
    for tid in tids:
        try:
            # TRACECLONE: a thread pool starts its threads as tasks come; they are traced too.
            ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE)
            ptrace(PTRACE_INTERRUPT, tid)
            seized.append(tid)
        except OSError:
            pass  # a thread that just ended
    in_call = dict.fromkeys(seized, False)
    caught = None
    deadline = time.monotonic() + timeout
    while caught is None and in_call and time.monotonic() < deadline:
        progressed = False
        for tid in list(in_call):
            try:
                waited, status = os.waitpid(tid, os.WNOHANG | WALL)
            except ChildProcessError:
                in_call.pop(tid)
                continue
            if waited == 0:
                continue
            progressed = True
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                in_call.pop(tid)
                continue
            stop = os.WSTOPSIG(status)
            deliver = 0
            if stop == signal.SIGTRAP | 0x80:  # a system call's entry or exit
                in_call[tid] = not in_call[tid]
                if in_call[tid]:
                    path = file_read(pid, registers(tid))
                    if path and path.startswith(prefix):
                        caught = (tid, path)
                        break
            elif status >> 16 == PTRACE_EVENT_CLONE:
                new = ctypes.c_ulong()
                ptrace(PTRACE_GETEVENTMSG, tid, 0, ctypes.addressof(new))
                in_call[new.value] = False  # it starts stopped: the loop lets it go on
            elif status >> 16 == 0:  # a signal for the process: hand it on
                deliver = stop
            ptrace(PTRACE_SYSCALL, tid, 0, deliver)
        if not progressed:
            time.sleep(0.0005)
    # Every other thread goes on untraced (stopped ones are let go; running ones stopped first).
    for tid in in_call:
        if caught and tid == caught[0]:
            continue
        try:
            ptrace(PTRACE_INTERRUPT, tid)
            os.waitpid(tid, WALL)
            ptrace(PTRACE_DETACH, tid)
        except (OSError, ChildProcessError):
            pass
    return caught


def traced(pid: int) -> bool:
    """Every thread of `pid` has a tracer: a freezer started on it has seized them all, so work
    may reach them now (what a caller waits for instead of a fixed delay)."""
    tracers = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                tracers += [line.split()[1] for line in status if line.startswith("TracerPid:")]
        except FileNotFoundError:
            pass  # a thread that just ended
    return bool(tracers) and all(tracer != "0" for tracer in tracers)


def main(argv: list[str]) -> int:
    pid, prefix = int(argv[1]), argv[2]
    timeout = float(argv[3]) if len(argv) > 3 else 60.0
    caught = freeze(pid, prefix, timeout)
    if caught is None:
        print(f"no thread of {pid} read a file under {prefix} in {timeout:.0f} s", file=sys.stderr)
        return 1
    print(f"frozen {caught[0]} {caught[1]}", flush=True)
    while os.path.exists(f"/proc/{pid}/task/{caught[0]}"):
        try:
            os.waitpid(caught[0], os.WNOHANG | WALL)  # reaps it once the process ends
        except ChildProcessError:
            break
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
