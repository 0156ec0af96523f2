"""Reproduce someone else's work with nothing of the instructor's in reach.

A classmate's experiment or a submission is code: its notebooks, helpers and
``dvc.yaml`` run when it is reproduced. ``reproduce`` runs ``dvc repro`` on a
copy of it inside bubblewrap (Debian's and most distributions' ``bwrap``;
Linux only, on the instructor's machine, never a student's):

* new user, pid, network, IPC, UTS and cgroup namespaces, no capabilities,
  uid 65534: no route to the host's network or its 127.0.0.1 (a loopback of
  its own serves the kernel);
* read-only: the system's ``/usr``, the interpreter's own prefix, the venv
  and ``/etc/fonts``, nothing else. Not the instructor's home, workspace, class folder,
  keys, git credentials or DVC's site folder; HOME is a throwaway folder.
  Only the kernel and the stage runner import the copy's ``src/``
  (dataops_kit.runner); ``PYTHONPATH`` is a folder holding only a link to
  the copy's ``src/dataops`` besides, so nothing else of the copy's can
  stand in for a library (a ``src/dvc/`` is never the ``dvc`` that runs);
* the copy lives in a tmpfs of ``DISK_BYTES``, and ``/tmp`` in another: the
  only places it can write, gone when it ends;
* limits, per process (``setrlimit``, inherited by every child): CPU
  seconds, address space, file size, and processes (counted by the kernel
  for the whole uid, so the limit is what the uid runs now plus
  ``PROCESSES``); for the whole tree, a cgroup of the run's own
  (``PROCESSES`` tasks, ``TREE_MEMORY_BYTES``) where this user may make one,
  which root must (the kernel does not count root's processes); and
  ``WALL_SECONDS``, after which bwrap is killed and its pid namespace with it
  (docs/instructors/README.md).

When the run ends, every process it left is killed before the outputs are
hashed, and the result leaves the sandbox as the last line of its output.
"""

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CPU_SECONDS = 600
MEMORY_BYTES = 6 << 30  # address space of one process: a kernel with scikit-learn maps about 2 GB
TREE_MEMORY_BYTES = 3 << 30  # every process of the run, and its tmpfs files, together (cgroup)
FILE_BYTES = 256 << 20
PROCESSES = 256  # processes and threads of the run together (cgroup), or of the uid's (rlimit)
CGROUPS = Path("/sys/fs/cgroup")
DISK_BYTES = 1 << 30
WALL_SECONDS = 900
INSIDE = Path("/work/repo")
IMPORTS = Path("/tmp/dataops-import")  # holds one link: dataops -> the copy's src/dataops
MISSING = "the sandbox needs bubblewrap (Linux): sudo apt-get install bubblewrap"


class Unavailable(Exception):
    """No sandbox on this machine: the message says what to install."""


def _bwrap() -> str:
    found = shutil.which("bwrap")
    if not found:
        raise Unavailable(MISSING)
    return found


def check() -> None:
    """Raise Unavailable, in one line, where no sandbox can be made on this machine."""
    try:
        made = subprocess.run([_bwrap(), "--unshare-all", "--uid", "65534", "--gid", "65534", *_binds(),
                               "--proc", "/proc", "--dev", "/dev", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"bubblewrap did not start ({error}): {MISSING}") from None
    if made.returncode:
        detail = (made.stderr.strip().splitlines() or [f"exit {made.returncode}"])[-1]
        raise Unavailable(f"bubblewrap cannot make a sandbox here ({detail}; are unprivileged user namespaces "
                          f"allowed?)")
    if os.getuid() == 0:  # the kernel does not count root's processes against RLIMIT_NPROC
        group = Cgroup.make()
        if group is None:
            raise Unavailable(f"as root, the sandbox bounds its processes with a cgroup, and none can be made "
                              f"under {CGROUPS}: grade as a normal user")
        group.remove()


class Cgroup:
    """A cgroup of its own for one run, bounding its processes and memory as a whole, where this user
    may make one (root, or a delegated cgroup v2): v2's pids and memory, or v1's pids and memory
    hierarchies, each below the cgroup this process is in. ``Cgroup.make()`` is None elsewhere."""

    def __init__(self, folders: list):
        self.folders = folders

    @classmethod
    def make(cls):
        v2 = (CGROUPS / "cgroup.controllers").is_file()
        own = dict(line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines())
        name = f"dataops-sandbox-{os.getpid()}-{time.monotonic_ns()}"
        made = cls([])
        try:
            places = ([(CGROUPS / own[""].lstrip("/"), {"pids.max": PROCESSES, "memory.max": TREE_MEMORY_BYTES})]
                      if v2 else [(CGROUPS / "pids" / own["pids"].lstrip("/"), {"pids.max": PROCESSES}),
                                  (CGROUPS / "memory" / own["memory"].lstrip("/"),
                                   {"memory.limit_in_bytes": TREE_MEMORY_BYTES})])
            for base, limits in places:
                (base / name).mkdir()
                made.folders.append(base / name)
                for file, value in limits.items():
                    (base / name / file).write_text(str(value))
        except (OSError, KeyError, ValueError):
            made.remove()
            return None
        return made

    def enter(self) -> None:
        """Put the calling process (and so all it starts) in the cgroup: a child's preexec_fn."""
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        """Kill whatever is left in it, then remove it."""
        for folder in self.folders:
            for _ in range(500):
                try:
                    left = (folder / "cgroup.procs").read_text().split()
                    for pid in left:
                        os.kill(int(pid), signal.SIGKILL)
                    if not left:
                        folder.rmdir()
                        break
                except FileNotFoundError:  # gone already
                    break
                except ProcessLookupError:
                    continue
                except OSError:  # EBUSY while the killed processes exit
                    pass
                time.sleep(0.01)


def _binds() -> list:
    """The read-only parts of the machine a run needs, and nothing else."""
    binds = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):  # merged /usr: links; older systems: folders
        path = Path("/", name)
        if path.is_symlink():
            binds += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            binds += ["--ro-bind", str(path), str(path)]
    for path in {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.prefix)}:
        binds += ["--ro-bind", str(path), str(path)]
    if Path("/etc/fonts").is_dir():  # matplotlib asks fontconfig, which otherwise writes an error into the output
        binds += ["--ro-bind", "/etc/fonts", "/etc/fonts"]
    return binds


def command(copy: Path) -> list:
    """bwrap's command line: COPY bound read-only at /in, run by this module's `inside`."""
    return [_bwrap(), "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--proc", "/proc", "--dev", "/dev",
            "--size", str(DISK_BYTES), "--tmpfs", "/work", "--size", str(DISK_BYTES // 4), "--tmpfs", "/tmp",
            *_binds(), "--ro-bind", str(copy), "/in", "--chdir", "/work", "--clearenv",
            # Who uid 65534 is (DVC asks): files `inside` writes, as no file of the host's is bound.
            "--dir", "/etc", "--symlink", "/tmp/passwd", "/etc/passwd", "--symlink", "/tmp/group", "/etc/group",
            "--setenv", "HOME", "/tmp/home", "--setenv", "PATH", f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin",
            "--setenv", "PYTHONPATH", str(IMPORTS), "--setenv", "JUPYTER_PLATFORM_DIRS", "1",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "DVC_NO_ANALYTICS", "1",
            # -P: nothing of the working folder's on this process's import path (it imports stdlib alone).
            sys.executable, "-P", "-m", "dataops_kit.teach.sandbox", str(_processes_now() + PROCESSES)]


def _processes_now() -> int:
    """How many processes this uid runs now: the kernel's process limit counts them all."""
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            pass
    return count


OUTPUT_BYTES = 1 << 20  # what the host keeps of each of the sandbox's streams: their last MB


def bounded_run(args: list, text: str, wall: float, keep: int = OUTPUT_BYTES, **options):
    """subprocess.run(ARGS, input=TEXT, text=True, timeout=WALL), keeping only the last KEEP bytes of
    stdout and of stderr: a run that floods them costs the host no more than that."""
    import threading

    kept = {}

    def drain(name, stream):
        tail = bytearray()
        for block in iter(lambda: stream.read(1 << 16), b""):
            tail += block
            del tail[:max(0, len(tail) - keep)]
        kept[name] = tail.decode(errors="replace")
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          **options) as process:
        readers = [threading.Thread(target=drain, args=item, daemon=True)
                   for item in (("stdout", process.stdout), ("stderr", process.stderr))]
        for reader in readers:
            reader.start()
        try:
            process.stdin.write(text.encode())
            process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = process.wait(wall)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        for reader in readers:
            reader.join()
    return subprocess.CompletedProcess(args, code, kept.get("stdout", ""), kept.get("stderr", ""))


def reproduce(copy: Path, outputs: list, wall: float = WALL_SECONDS) -> dict:
    """Run ``dvc repro`` on a copy of COPY in the sandbox. Returns {"code", "lines" (its ✗ and
    ERROR lines), "md5" {path: md5 or None} of OUTPUTS, "lock" (the dvc.lock it wrote)}."""
    from dataops_kit.facts import printable  # the host's side only: the sandbox's imports stdlib alone

    request = json.dumps({"outputs": outputs})
    group = Cgroup.make()
    try:
        ran = bounded_run(command(copy), request, wall, preexec_fn=group.enter if group else None)
    except subprocess.TimeoutExpired:
        return {"code": -1, "lines": [f"it did not end within {wall:g} s, and was stopped"], "md5": {}}
    finally:
        if group:
            group.remove()
    last = (ran.stdout.rstrip("\n").rsplit("\n", 1) or [""])[-1]
    try:
        result = json.loads(last)
        if not isinstance(result, dict) or "code" not in result:
            raise ValueError(last)
    except ValueError:
        detail = (ran.stderr.strip().splitlines() or [f"bwrap exited {ran.returncode}"])[-1]
        return {"code": ran.returncode or -1, "lines": [f"the sandbox failed: {printable(detail, 300)}"], "md5": {}}
    lines = result.get("lines") if isinstance(result.get("lines"), list) else []
    return {**result, "lines": [printable(line, 300) for line in lines]}


# --- Inside the sandbox (stdlib only, imported before the copy exists) ---

def _limit(processes: int) -> None:
    for name, value in (("RLIMIT_CPU", CPU_SECONDS), ("RLIMIT_AS", MEMORY_BYTES),
                        ("RLIMIT_FSIZE", FILE_BYTES), ("RLIMIT_NPROC", processes), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _kill_the_rest() -> None:
    """Every other process in the sandbox's pid namespace (all the run started), until none is left."""
    for _ in range(100):
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
        if not others:
            return
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def _md5(path: Path):
    if path.is_symlink() or not path.is_file():
        return None
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inside(processes: int) -> dict:
    request = json.loads(sys.stdin.read())
    sys.stdin.close()
    Path("/tmp/home").mkdir()
    Path("/tmp/passwd").write_text("nobody:x:65534:65534:nobody:/tmp/home:/usr/sbin/nologin\n")
    Path("/tmp/group").write_text("nogroup:x:65534:\n")
    shutil.copytree("/in", INSIDE, symlinks=True)
    IMPORTS.mkdir()
    (IMPORTS / "dataops").symlink_to(INSIDE / "src" / "dataops")
    # The copy's own cache and DVC folder, whatever its config names (a committed cache.dir points nowhere
    # here), and no staging in git (pygit2 would look for the host's certificates, not bound here).
    for key, value in (("cache.dir", INSIDE / ".dvc" / "cache"), ("core.site_cache_dir", "/tmp/dvc-site"),
                       ("core.autostage", "false")):
        subprocess.run(["dvc", "config", "--local", key, str(value)], cwd=INSIDE, stdin=subprocess.DEVNULL,
                       capture_output=True)
    _limit(processes)
    # To a file, not a pipe: a process the run leaves behind cannot hold this one open.
    with open("/tmp/dvc.log", "w") as log:
        code = subprocess.run(["dvc", "repro", "-q", "--no-run-cache"], cwd=INSIDE, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT).returncode
    _kill_the_rest()
    with open("/tmp/dvc.log", errors="replace") as log:
        said = [line.rstrip("\n") for line in log if line.strip()]
    lines = [line for line in said if line.startswith(("✗", "ERROR"))] or said[-1:]
    lock = INSIDE / "dvc.lock"
    return {"code": code, "lines": lines[:5],
            "md5": {path: _md5(INSIDE / path) for path in request["outputs"]},
            "lock": lock.read_text(errors="replace") if lock.is_file() and not lock.is_symlink() else None}


if __name__ == "__main__":
    try:
        result = inside(int(sys.argv[1]))
    except Exception as error:  # any failure of ours: one line, still the last
        result = {"code": -1, "lines": [f"{type(error).__name__}: {error}"[:300]], "md5": {}}
    print("\n" + json.dumps(result), flush=True)
