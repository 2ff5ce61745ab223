"""Runs one untrusted Python program under limits (started by ``code_exec.run_program``).

Run as ``python -I -S _sandbox_launcher.py`` (isolated mode, no site-packages, only the standard
library). The request -- limits and the program's source -- arrives as one JSON document on stdin and
is read whole before anything runs, so no file of the program exists that a neighbour could rewrite.
The launcher writes one JSON report line to its stdout at the end; the program never holds that
descriptor (everything above 2 is closed before its code runs), so it cannot write the report.

Layers, strongest first (docs/tasks.md, "The code sandbox"):

1. Namespaces, where the kernel allows them. As root: network (no interfaces but a down loopback),
   PID (the program is PID 1; when it ends the kernel kills everything it left) and mount. Otherwise
   (or with ``namespaces="user"``): the same inside a new user namespace with a one-uid map. In the
   mount namespace: one size-limited tmpfs is the working directory and backs a private ``/tmp`` and
   ``/dev/shm`` (the disk cap holds in total), and ``/proc`` is a fresh one that shows only the
   sandbox's own processes (not the evaluator's environ or command line).
2. A uid of its own: as root, a uid from the host's pool (one per concurrent sandbox, so
   RLIMIT_NPROC counts this sandbox's processes only and neighbours cannot touch each other's files or
   processes); in a user namespace, the mapped uid with every capability dropped (RLIMIT_NPROC is
   counted per user namespace). no_new_privs always.
3. A cgroup v2 (when the host names a delegated one): memory, swap and process caps in total, and
   cgroup.kill at the end.
4. Resource limits per process: address space, CPU seconds, file size, open files, processes, no core
   dumps; nice 10 (a busy program cannot starve the launcher that must kill it on time).
5. Python-level guards (sockets, process creation, exec, ``_exit``, file changes outside the working
   directory, through ``os``, ``posix``, ``io``/``_io`` and ``socket``/``_socket`` alike). NOT a
   boundary: ctypes or objects found through ``gc`` get around them; they catch accidents.

The pass decision is made here, outside the program's process: the program (the child) passed when
it exited with status 0 through the runner's normal end; ``sys.exit``, an exception, a signal or a
limit is a failure. The runner's own exit is reachable to code in the same process (through ctypes
or frame inspection), which no in-process checker can prevent: see docs/tasks.md.
"""

from __future__ import annotations

import ast
import ctypes
import errno
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
# The uid (and gid) the program has inside a user namespace; mapped to one uid outside.
INNER_UID = 1000
MAX_REQUEST_BYTES = 64 << 20
PROTECTIONS = ("network", "pid", "mount", "uid", "cgroup")

_libc = ctypes.CDLL(None, use_errno=True)
_REAL_EXIT = os._exit  # the guards replace os._exit; the launcher keeps the real one


def _unshare(flags: int) -> bool:
    try:
        return _libc.unshare(flags) == 0
    except (OSError, AttributeError):
        return False


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}")


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _enter_namespaces(mode: str, outer_uid: int, outer_gid: int) -> dict:
    """New namespaces for the launcher's children. Returns what was entered."""
    got = {"network": False, "pid": False, "mount": False, "user": False}
    if mode == "off":
        return got
    if mode == "auto" and os.geteuid() == 0:
        for flags in (CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS, CLONE_NEWNET | CLONE_NEWNS, CLONE_NEWNET):
            if _unshare(flags):
                got.update(network=True, pid=bool(flags & CLONE_NEWPID), mount=bool(flags & CLONE_NEWNS))
                return got
        return got
    if os.geteuid() == 0 and outer_uid != 0:
        # As root, take the path a non-root user gets: become the pool uid, then unshare. The
        # modules the program and the guards need are loaded while /root is still readable.
        os.setgroups([])
        os.setresgid(outer_gid, outer_gid, outer_gid)
        os.setresuid(outer_uid, outer_uid, outer_uid)
        _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # a uid change hides /proc/self/*_map from us
    if not _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS):
        return got
    # One uid (and gid) inside, mapped to one outside: the user's own, or (as root) the pool's.
    _write_file("/proc/self/setgroups", "deny")
    _write_file("/proc/self/uid_map", f"{INNER_UID} {outer_uid} 1\n")
    _write_file("/proc/self/gid_map", f"{INNER_UID} {outer_gid} 1\n")
    return {"network": True, "pid": True, "mount": True, "user": True}


def _private_mounts(name: str, disk_bytes: int, owner: int, fresh_proc: bool) -> dict:
    """In the sandbox's mount namespace: one size-limited tmpfs as /tmp that holds the working
    directory and backs /dev/shm (one disk budget for all three), and a /proc of the sandbox's own
    PID namespace. Returns the working directory and what was set up."""
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing propagates back to the host
    _mount("tandem-sandbox", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_bytes},mode=1777")
    private = ["/tmp"]
    workdir = os.path.join("/tmp", name)
    os.mkdir(workdir, 0o700)
    os.chown(workdir, owner, owner)
    # The other shared temporary folders, bound to folders of the same tmpfs.
    for target, inner in (("/dev/shm", "/tmp/.shm"), ("/var/tmp", "/tmp/.var-tmp")):
        if os.path.isdir(target) and not os.path.islink(target):
            os.mkdir(inner, 0o700)
            os.chown(inner, owner, owner)
            _mount(inner, target, None, MS_BIND, None)
            private.append(target)
    if fresh_proc:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        except OSError:
            fresh_proc = False  # some containers refuse it: reported, the "pid" protection is then missing
    return {
        "workdir": workdir,
        "disk_limit_bytes": disk_bytes,
        "private_tmp": private,
        "fresh_proc": fresh_proc,
    }


def _drop_capabilities() -> None:
    """Every capability gone (effective, permitted, inheritable): inside a user namespace the
    launcher's child still holds them, and with them could unmount the private /proc."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    header, data = Header(0x20080522, 0), (Data * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _set_limits(cfg: dict, count_own: bool) -> None:
    def limit(which: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(which, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            pass

    cpu = int(cfg["timeout_s"]) + 1
    limit(resource.RLIMIT_CPU, cpu, cpu + 1)  # soft: SIGXCPU; hard a second later: SIGKILL
    limit(resource.RLIMIT_AS, cfg["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, cfg["max_file_bytes"])
    limit(resource.RLIMIT_NOFILE, cfg["max_open_files"])
    limit(resource.RLIMIT_CORE, 0)
    # RLIMIT_NPROC counts every process of the real uid (per user namespace). With a uid of its own
    # the sandbox's count starts at zero; sharing the user's uid, the user's processes count too.
    limit(resource.RLIMIT_NPROC, (_own_process_count() if count_own else 0) + cfg["max_processes"])


def _own_process_count() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def _preimport(source: str) -> None:
    """Import the modules ``source`` names, while their files are still readable to us (a Python
    installed under /root is not readable to the sandbox's uid)."""
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
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    for name in sorted(names):
        try:
            __import__(name)
        except Exception:  # absent or not a module: the program will see the error itself
            pass


def _install_guards(workdir: str, private_tmp: bool) -> None:
    """Best-effort Python-level refusals (a speed bump, not a boundary: see the module docstring)."""
    import _io
    import builtins
    import io
    import posix
    import shutil
    import socket
    import subprocess

    try:
        import _socket
    except ImportError:
        _socket = None

    def refuse(name: str):
        def blocked(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the sandbox")

        return blocked

    root = os.path.realpath(workdir)

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor: already allowed when it was opened
        real = os.path.realpath(os.fsdecode(path))
        if real == root or real.startswith(root + os.sep):
            return True
        return private_tmp and real.startswith(("/tmp/", "/dev/shm/"))  # its own, in its mount namespace

    def confined(name: str, fn, nargs: int = 1):
        def wrapper(*args, **kwargs):
            for path in args[:nargs]:
                if not inside(path):
                    raise PermissionError(f"{name} outside the sandbox directory: {path!r}")
            return fn(*args, **kwargs)

        return wrapper

    def set_both(name: str, value) -> None:
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, value)

    class RefusedSocket:
        def __init__(self, *args, **kwargs):
            raise PermissionError("sockets are disabled in the sandbox")

    for module in (socket, _socket):
        if module is None:
            continue
        for name in ("socket", "SocketType"):
            if hasattr(module, name):
                setattr(module, name, RefusedSocket)
        for name in ("socketpair", "create_connection", "create_server", "fromfd", "dup"):
            if hasattr(module, name):
                setattr(module, name, refuse(f"socket.{name}"))
    for name in (
        "fork", "forkpty", "system", "popen", "kill", "killpg", "setsid", "execv", "execve",
        "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle",
        "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
        "posix_spawnp", "putenv", "chroot", "_exit", "abort", "register_at_fork",
    ):  # fmt: skip
        set_both(name, refuse(f"os.{name}"))
    subprocess.Popen = refuse("subprocess.Popen")  # type: ignore[misc]
    try:
        import _posixsubprocess

        _posixsubprocess.fork_exec = refuse("_posixsubprocess.fork_exec")  # type: ignore[attr-defined]
    except ImportError:
        pass
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
            set_both(name, confined(f"os.{name}", getattr(os, name)))
    for name in ("rename", "replace", "link", "symlink"):
        set_both(name, confined(f"os.{name}", getattr(os, name), nargs=2))
    shutil.rmtree = confined("shutil.rmtree", shutil.rmtree)
    shutil.move = confined("shutil.move", shutil.move, nargs=2)
    raw_open, raw_os_open, raw_file_io = _io.open, os.open, _io.FileIO

    def writes(mode) -> bool:
        return any(ch in str(mode) for ch in "wax+")

    def guarded_open(file, mode="r", *args, **kwargs):
        if writes(mode) and not inside(file):
            raise PermissionError(f"writing outside the sandbox directory: {file!r}")
        return raw_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        if writing and not inside(path):
            raise PermissionError(f"writing outside the sandbox directory: {path!r}")
        return raw_os_open(path, flags, *args, **kwargs)

    class GuardedFileIO(raw_file_io):
        def __init__(self, file, mode="r", *args, **kwargs):
            if writes(mode) and not inside(file):
                raise PermissionError(f"writing outside the sandbox directory: {file!r}")
            super().__init__(file, mode, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open  # type: ignore[assignment]
    io.FileIO = _io.FileIO = GuardedFileIO  # type: ignore[misc]
    set_both("open", guarded_os_open)
    # ctypes stays importable: the kernel layers, not this guard, are what stop it.


def _child(cfg: dict, source: str, ns: dict, ctl_r: int, rep_w: int, out_w: int) -> None:
    """The sandbox's first process (PID 1 of its namespace): set up, then become the program."""
    real_exit = _REAL_EXIT
    user_ns = ns["user"]
    uid = cfg.get("uid")
    # The working directory's owner, as seen from here.
    owner = INNER_UID if user_ns else uid if uid is not None else os.geteuid()
    setup: dict = {"mounts": None, "error": None}
    try:
        if ns["mount"]:
            name = os.path.basename(cfg["workdir"])
            setup["mounts"] = _private_mounts(name, cfg["max_disk_bytes"], owner, ns["pid"])
    except OSError as exc:
        setup["error"] = str(exc)  # reported; the program runs in the host's folder instead
    try:
        if not setup["mounts"] and owner != os.geteuid():
            os.chown(cfg["workdir"], owner, owner)
    except OSError as exc:
        setup["error"] = str(exc)
    os.write(rep_w, (json.dumps(setup) + "\n").encode())
    os.close(rep_w)
    decision = os.read(ctl_r, 8)
    os.close(ctl_r)
    if decision != b"run":
        real_exit(3)
    workdir = setup["mounts"]["workdir"] if setup["mounts"] else cfg["workdir"]
    _install_guards(workdir, private_tmp=bool(setup["mounts"] and setup["mounts"]["private_tmp"]))
    if user_ns:
        os.setresgid(INNER_UID, INNER_UID, INNER_UID)
        os.setresuid(INNER_UID, INNER_UID, INNER_UID)
        _drop_capabilities()
    elif uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root to another uid: every capability is dropped
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _set_limits(cfg, count_own=not user_ns and uid is None)
    try:
        os.nice(10)
    except OSError:
        pass
    os.chdir(workdir)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    # Only 0, 1 and 2 reach the program: not the report pipe, not the control pipe.
    os.closerange(3, 1 << 20)
    sys.argv = [cfg.get("program_name", "program.py")]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    del cfg  # the program's frames see as little of ours as possible
    try:
        # A name no file has: a traceback must not open a file of the program's (a FIFO blocks).
        import linecache

        linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")
        code = compile(source, "<program>", "exec")
        del source
        exec(code, namespace)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: B036 - SystemExit and KeyboardInterrupt are failures too
        try:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            real_exit(1)
    real_exit(0)


def _read_line(fd: int, deadline: float, cap: int = 1 << 16) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < cap:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, cap)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


class _Tail:
    """The last ``size`` bytes of everything read (memory stays bounded whatever is written)."""

    def __init__(self, size: int) -> None:
        self.size, self.data, self.total = size, b"", 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data = (self.data + chunk)[-self.size :]


def _drain(fd: int, tail: _Tail) -> bool:
    """Read what is there; False at end of file."""
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    tail.add(chunk)
    return True


def _wait(pid: int, out_r: int, tail: _Tail, timeout_s: float) -> tuple[int, bool]:
    """Wait for the program while keeping the tail of its output; kill it at the wall-clock limit."""
    deadline = time.monotonic() + timeout_s
    pidfd = os.pidfd_open(pid)
    watch = [pidfd, out_r]
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select(watch, [], [], remaining)
            if out_r in ready and not _drain(out_r, tail):
                watch.remove(out_r)
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
                return status, False
    finally:
        os.close(pidfd)
    # Killing the PID-namespace init makes the kernel kill everything in the namespace.
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status, True


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (as that uid: kill(-1) reaches exactly its own processes)."""
    try:
        helper = os.fork()
    except OSError:
        return  # the PID namespace is gone (its init has ended): so is every process in it
    if helper == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(100):
                os.kill(-1, signal.SIGKILL)  # forks are held off while the kernel walks the list
        except OSError:
            pass  # ESRCH: none left
        _REAL_EXIT(0)
    os.waitpid(helper, 0)
    # SIGKILL is delivered at once, but the processes go only once reaped: wait for that (bounded).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _processes_of(uid):
        time.sleep(0.02)


def _processes_of(uid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    return True
            except OSError:
                pass
    return False


def _remove_files_of(uid: int) -> None:
    """Without a private /tmp: what the sandbox's uid left in the shared temporary folders."""
    import shutil

    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                if st.st_uid != uid:
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass


def _cgroup_create(parent: str, pid: int, cfg: dict) -> str | None:
    """A cgroup v2 of its own under the delegated ``parent``: memory and processes in total."""
    path = os.path.join(parent, f"tandem-sandbox-{os.getpid()}")
    os.mkdir(path, 0o755)
    try:
        _write_file(os.path.join(path, "memory.max"), str(cfg["memory_bytes"]))
        if os.path.exists(os.path.join(path, "memory.swap.max")):
            _write_file(os.path.join(path, "memory.swap.max"), "0")
        _write_file(os.path.join(path, "pids.max"), str(cfg["max_processes"]))
        _write_file(os.path.join(path, "cgroup.procs"), str(pid))
    except OSError:
        os.rmdir(path)
        raise
    return path


def _cgroup_remove(path: str) -> None:
    kill = os.path.join(path, "cgroup.kill")
    try:
        if os.path.exists(kill):
            _write_file(kill, "1")
        for _ in range(200):
            try:
                os.rmdir(path)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return
                time.sleep(0.01)
    except OSError:
        pass


def _report(payload: dict) -> None:
    os.write(1, (json.dumps(payload) + "\n").encode())


def main() -> None:
    chunks, size = [], 0
    while size <= MAX_REQUEST_BYTES:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    request = json.loads(b"".join(chunks))
    cfg, source = request["config"], request["program"]
    uid = cfg.get("uid")
    outer_uid = uid if uid is not None else os.geteuid()
    if uid is not None:
        _preimport(source + "\nimport _io, io, posix, shutil, socket, subprocess, _posixsubprocess\n")
    ns = _enter_namespaces(cfg["namespaces"], outer_uid, uid if uid is not None else os.getegid())
    ctl_r, ctl_w = os.pipe()
    rep_r, rep_w = os.pipe()
    out_r, out_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            for fd in (ctl_w, rep_r, out_r, 1):
                os.close(fd)
            _child(cfg, source, ns, ctl_r, rep_w, out_w)
        except BaseException:  # noqa: B036 - a set-up failure must be visible
            traceback.print_exc()
        finally:
            _REAL_EXIT(code)
    for fd in (ctl_r, rep_w, out_w):
        os.close(fd)
    os.set_blocking(out_r, False)
    try:
        setup = json.loads(_read_line(rep_r, time.monotonic() + 30) or b"{}")
    except ValueError:
        setup = {}
    os.close(rep_r)
    mounts = setup.get("mounts") or {}
    cgroup_path, cgroup_error = None, None
    if cfg.get("cgroup_parent"):
        try:
            cgroup_path = _cgroup_create(cfg["cgroup_parent"], pid, cfg)
        except OSError as exc:
            cgroup_error = str(exc)
    isolation = {
        "network_namespace": ns["network"],
        "pid_namespace": ns["pid"],
        "mount_namespace": ns["mount"] and bool(mounts),
        "user_namespace": ns["user"],
        "uid": outer_uid if (uid is not None or ns["user"]) else None,
        "distinct_uid": uid is not None,
        "fresh_proc": bool(mounts.get("fresh_proc")),
        "private_tmp": list(mounts.get("private_tmp", [])),
        "disk_limit_bytes": mounts.get("disk_limit_bytes"),
        "cgroup": cgroup_path is not None,
        "cgroup_memory_bytes": cfg["memory_bytes"] if cgroup_path else None,
        "cgroup_max_processes": cfg["max_processes"] if cgroup_path else None,
        "notes": [n for n in (setup.get("error"), cgroup_error) if n],
    }
    active = {
        "network": isolation["network_namespace"],
        # A PID namespace hides the evaluator only with a /proc of its own.
        "pid": isolation["pid_namespace"] and isolation["fresh_proc"],
        "mount": isolation["mount_namespace"],
        "uid": isolation["distinct_uid"] or isolation["user_namespace"],
        "cgroup": isolation["cgroup"],
    }
    missing = [name for name in cfg.get("require", []) if not active.get(name, False)]
    report = {"version": 1, "isolation": isolation}
    tail = _Tail(cfg["output_tail"])
    try:
        if missing:
            os.write(ctl_w, b"stop")
            os.close(ctl_w)
            os.waitpid(pid, 0)
            report.update(status="refused", returncode=None, missing=missing)
        else:
            os.write(ctl_w, b"run")
            os.close(ctl_w)
            status, timed_out = _wait(pid, out_r, tail, cfg["timeout_s"])
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
            verdict = "timeout" if timed_out else "passed" if code == 0 else "failed"
            report.update(status=verdict, returncode=None if timed_out else code)
    finally:
        # Nothing the program started outlives it: its uid's processes, its cgroup, its files.
        if uid is not None:
            _kill_uid(uid)
            if not isolation["private_tmp"]:
                _remove_files_of(uid)
        if cgroup_path:
            _cgroup_remove(cgroup_path)
    while _drain(out_r, tail):  # what is left in the pipe (non-blocking; writers are gone or stuck)
        if tail.total > (64 << 20):
            break
        if not select.select([out_r], [], [], 0)[0]:
            break
    report["duration_s"] = time.monotonic() - start
    report["output_tail"] = tail.data.decode(errors="replace")
    _report(report)


if __name__ == "__main__":
    main()
