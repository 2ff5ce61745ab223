"""Runs one untrusted Python program under limits (started by ``code_exec.run_program``).

Run as ``python -I -S _sandbox_launcher.py CONFIG_JSON``: isolated mode, no site-packages, only the
standard library. Layers, strongest first:

1. Kernel isolation (when the process may create namespaces: as root, or where unprivileged user
   namespaces are enabled): a new network namespace (no interfaces but a down loopback: no network)
   and a new PID namespace (the program is its PID 1; when it dies the kernel kills every process it
   left behind, so a fork bomb cannot outlive it).
2. As root: the program runs as an unprivileged uid (``nobody``), so it cannot delete or overwrite
   files it does not own, and RLIMIT_NPROC (which root ignores) caps its processes; no_new_privs
   stops it from regaining root through setuid binaries. The modules it imports are imported
   before the switch, because the interpreter's own files may not be readable by ``nobody`` (a
   Python installed under /root); only the standard library is reachable (``-I -S``).
3. Resource limits: address space, CPU seconds, file size, open files, processes, no core dumps;
   and a lower scheduling priority (nice 10).
4. Python-level guards (sockets, process creation, file changes outside the working directory).
   These are NOT a security boundary (ctypes gets around them); they catch accidents and make the
   non-root, no-namespace case fail closed for the common calls.

The program's stdout and stderr go to a file in its working directory. On success the launcher
writes ``PASSED <nonce>`` to its own stdout, so a program that calls ``os._exit(0)`` early or kills
its interpreter does not count as a pass.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


def _unshare(flags: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(flags) == 0
    except (OSError, AttributeError):
        return False


def _isolate_namespaces() -> list[str]:
    """Enter new network and PID namespaces if the kernel lets us."""
    if os.geteuid() == 0:
        if _unshare(CLONE_NEWNET | CLONE_NEWPID):
            return ["netns", "pidns"]
        if _unshare(CLONE_NEWNET):
            return ["netns"]
        return []
    # Unprivileged: a user namespace makes the other two allowed (where the distribution permits).
    if _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID):
        return ["userns", "netns", "pidns"]
    return []


def _user_process_count(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _set_limits(cfg: dict) -> None:
    def limit(which: int, value: int) -> None:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass

    cpu = int(cfg["timeout_s"]) + 1
    try:
        # Soft limit: SIGXCPU; hard limit one second later: SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (ValueError, OSError):
        pass
    limit(resource.RLIMIT_AS, cfg["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, cfg["max_file_bytes"])
    limit(resource.RLIMIT_NOFILE, cfg["max_open_files"])
    limit(resource.RLIMIT_CORE, 0)
    # RLIMIT_NPROC counts every process of the real uid, so a user's own processes count too.
    uid = os.getuid()
    base = 0 if cfg.get("dedicated_uid") else _user_process_count(uid)
    limit(resource.RLIMIT_NPROC, base + cfg["max_processes"])


PR_SET_NO_NEW_PRIVS = 38


def _preimport(source: str) -> None:
    """Import the modules ``source`` names, while their files are still readable to us."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return  # the program fails at compile time anyway
    names: set[str] = {"encodings.utf_16", "encodings.utf_32", "encodings.latin_1", "encodings.ascii"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            # "from package import submodule" needs the submodule loaded too.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    for name in sorted(names):
        try:
            __import__(name)
        except Exception:  # absent or not a module: the program will see the error itself
            pass


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _install_guards(workdir: str) -> None:
    """Best-effort Python-level refusals (see the module docstring: not a boundary)."""
    import builtins
    import io
    import shutil
    import socket
    import subprocess

    def refuse(name: str):
        def blocked(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the sandbox")

        return blocked

    root = os.path.realpath(workdir)

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor: already allowed when it was opened
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep)

    def confined(name: str, fn, nargs: int = 1):
        def wrapper(*args, **kwargs):
            for path in args[:nargs]:
                if not inside(path):
                    raise PermissionError(f"{name} outside the sandbox directory: {path!r}")
            return fn(*args, **kwargs)

        return wrapper

    for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
        if hasattr(socket, name):
            setattr(socket, name, refuse(f"socket.{name}"))
    try:
        import _socket

        _socket.socket = refuse("socket")  # type: ignore[misc]
    except ImportError:
        pass
    for name in (
        "fork", "forkpty", "system", "popen", "kill", "killpg", "setsid", "execv", "execve",
        "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle",
        "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
        "posix_spawnp", "putenv", "chroot",
    ):  # fmt: skip
        if hasattr(os, name):
            setattr(os, name, refuse(f"os.{name}"))
    subprocess.Popen = refuse("subprocess.Popen")  # type: ignore[misc]
    for name in (
        "remove",
        "unlink",
        "rmdir",
        "removedirs",
        "truncate",
        "chmod",
        "chown",
        "lchown",
        "mkdir",
        "makedirs",
    ):
        if hasattr(os, name):
            setattr(os, name, confined(f"os.{name}", getattr(os, name)))
    for name in ("rename", "replace", "link", "symlink"):
        setattr(os, name, confined(f"os.{name}", getattr(os, name), nargs=2))
    shutil.rmtree = confined("shutil.rmtree", shutil.rmtree)
    shutil.move = confined("shutil.move", shutil.move, nargs=2)
    raw_open, raw_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(ch in mode for ch in "wax+") and not inside(file):
            raise PermissionError(f"writing outside the sandbox directory: {file!r}")
        return raw_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        if writing and not inside(path):
            raise PermissionError(f"writing outside the sandbox directory: {path!r}")
        return raw_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open  # type: ignore[assignment]
    os.open = guarded_os_open


def _run_program(cfg: dict, result_fd: int) -> int:
    workdir = cfg["workdir"]
    with open(os.path.join(workdir, cfg["program_file"]), encoding="utf-8") as handle:
        source = handle.read()
    # Before the uid switch: the guards import modules of their own. Before the pre-imports too,
    # so that a standard module with side effects on import (antigravity starts a browser) meets
    # the guards even while still privileged.
    _install_guards(workdir)
    if os.geteuid() == 0 and cfg.get("sandbox_uid") is not None:
        _preimport(source)
        _drop_privileges(cfg["sandbox_uid"])
        cfg = {**cfg, "dedicated_uid": True}
    _set_limits(cfg)
    # Below the launcher and the host: a CPU-hungry program (a fork bomb) must not starve the
    # launcher that has to kill it on time.
    try:
        os.nice(10)
    except OSError:
        pass
    os.chdir(workdir)
    # The program's own output goes to a file (bounded by RLIMIT_FSIZE), never to our pipes.
    out = os.open(os.path.join(workdir, "output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    nonce = cfg["nonce"]
    try:
        code = compile(source, cfg["program_file"], "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except BaseException:  # noqa: B036 - SystemExit and KeyboardInterrupt are failures too
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    sys.stdout.flush()
    os.write(result_fd, f"PASSED {nonce}\n".encode())
    return 0


def _wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    """Wait for the program; kill it at the wall-clock limit. Returns (wait status, timed out)."""
    deadline = time.monotonic() + timeout_s
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.01))
    finally:
        if pidfd is not None:
            os.close(pidfd)
    # Killing the PID-namespace init makes the kernel kill everything in the namespace, and its
    # wait returns only once they are all gone: nothing outlives the program.
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status, True


def main() -> None:
    cfg = json.loads(sys.argv[1])
    isolation = _isolate_namespaces() if cfg.get("isolate", True) else []
    if os.geteuid() == 0 and cfg.get("sandbox_uid") is not None:
        isolation.append("uid")
    result_fd = os.dup(1)
    os.write(result_fd, (json.dumps({"isolation": isolation}) + "\n").encode())
    # Fork even without a PID namespace, so that the launcher can time the program and report.
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _run_program(cfg, result_fd)
        except BaseException:  # noqa: B036 - a sandbox set-up failure must be visible
            traceback.print_exc()
        finally:
            os._exit(code)
    status, timed_out = _wait(pid, cfg["timeout_s"])
    if timed_out:
        os.write(result_fd, (json.dumps({"timed_out": True}) + "\n").encode())
        os._exit(124)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
