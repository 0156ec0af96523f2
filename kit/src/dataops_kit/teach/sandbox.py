"""Someone else's work, handled where nothing of the instructor's is in reach.

A classmate's experiment or a submission is code: its notebooks, helpers and
``dvc.yaml`` run when it is reproduced, and git, DVC and Python act on a tree
that holds them. So the instructor's processes never check one out. The host
hands a job the commits as a git bundle (``bundle``: git's plumbing) and the
objects it fetched by md5, and ``run`` does the job in bubblewrap (Debian's and
most distributions' ``bwrap``; Linux only, on the instructor's machine): the
job clones the bundle there and reproduces it (``fresh_run``, the one fresh-
clone reproduction every check, grade and ranking uses) or grades it
(the exercise's grader, whole). What comes back is bounded JSON, and the
verdicts are kept in one store (``Verdicts``).

The sandbox:

* new user, pid, network, IPC, UTS and cgroup namespaces, no capabilities,
  uid 65534: no route to the host's network or its 127.0.0.1 (a loopback of
  its own serves the kernel);
* read-only: the system's ``/usr``, the interpreter's own prefix, the venv,
  ``/etc/fonts`` and ``/etc/ssl/certs``, and the job's inputs, nothing else. Not the instructor's
  home, workspace, class folder, keys, git credentials or DVC's site folder;
  HOME is a throwaway folder. The kernel and the stage runner import the
  clone's own ``src/`` (dataops_kit.runner), and no other process does;
* the clone lives in a tmpfs of ``DISK_BYTES``, and ``/tmp`` in another: the
  only places it can write, gone when it ends;
* limits, per process (``setrlimit``, inherited by every child): CPU
  seconds, address space, file size, and processes (counted by the kernel
  for the whole uid, so the limit is what the uid runs now plus
  ``PROCESSES``); for the whole tree, a cgroup of the run's own
  (``PROCESSES`` tasks, ``TREE_MEMORY_BYTES``) where this user may make one,
  which root must (the kernel does not count root's processes); and
  ``WALL_SECONDS``, after which bwrap is killed and its pid namespace with it
  (docs/instructors/README.md).

When a run ends, every process it left is killed before the outputs are
hashed, and the answer leaves the sandbox as the last line of its output.
"""

import functools
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
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
    if Path("/etc/ssl/certs").is_dir():  # public certificates: libgit2 (pygit2, which DVC reads commits with) loads them
        binds += ["--ro-bind", "/etc/ssl/certs", "/etc/ssl/certs"]
    return binds


def command(inputs: Path) -> list:
    """bwrap's command line: INPUTS (the commits as a git bundle, the objects) bound read-only at /in,
    running this module's `inside` on the request it reads from stdin."""
    return [_bwrap(), "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--proc", "/proc", "--dev", "/dev",
            "--size", str(DISK_BYTES), "--tmpfs", "/work", "--size", str(DISK_BYTES // 4), "--tmpfs", "/tmp",
            *_binds(), "--ro-bind", str(inputs), "/in", "--chdir", "/work", "--clearenv",
            # Who uid 65534 is (DVC asks): files `inside` writes, as no file of the host's is bound.
            "--dir", "/etc", "--symlink", "/tmp/passwd", "/etc/passwd", "--symlink", "/tmp/group", "/etc/group",
            "--setenv", "HOME", "/tmp/home", "--setenv", "PATH", f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin",
            "--setenv", "JUPYTER_PLATFORM_DIRS", "1", "--setenv", "DVC_SITE_CACHE_DIR", "/tmp/dvc-site",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "DVC_NO_ANALYTICS", "1",
            # -I: nothing of the working folder's, nor PYTHON* variables, on this process's import path.
            sys.executable, "-I", "-m", "dataops_kit.teach.sandbox", str(_processes_now() + PROCESSES)]


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


ANSWER_BYTES = 64 << 10  # the answer's JSON, its last line: a grade's criteria, md5s, a dvc.lock, metrics


def bundle(repo: Path, refs: list, inputs: Path) -> Path:
    """INPUTS/repo.bundle: REFS of REPO and their history, written by git's plumbing (no checkout, no
    filter, nothing of theirs run): what a job clones, inside."""
    inputs.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["git", "bundle", "create", "-q", str(inputs / "repo.bundle"), *refs], cwd=repo,
                          capture_output=True, text=True)
    if made.returncode:
        raise RuntimeError(f"git bundle failed: {(made.stderr.strip().splitlines() or [''])[-1]}")
    return inputs


def run(request: dict, inputs: Path, sandboxed: bool = True, wall: float = WALL_SECONDS) -> dict:
    """REQUEST's job (see JOBS) on INPUTS, in the sandbox, or with SANDBOXED False as this user in a
    folder of its own (never for others' work but on the instructor's explicit word). Its answer: a dict
    with "code" and "lines" (bounded: its last line of at most ANSWER_BYTES, each line 300 characters)."""
    from dataops_kit.facts import printable, shell_env  # the host's side only

    group, work = (Cgroup.make(), None) if sandboxed else (None, Path(tempfile.mkdtemp(prefix="dataops-job-")))
    args = command(inputs) if sandboxed else [sys.executable, "-I", "-m", __name__, "0", str(inputs), str(work)]
    try:
        ran = bounded_run(args, json.dumps(request), wall, preexec_fn=group.enter if group else None,
                          env=None if group else {**shell_env(), "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}"})
    except subprocess.TimeoutExpired:
        return {"code": -1, "lines": [f"it did not end within {wall:g} s, and was stopped"]}
    finally:
        if group:
            group.remove()
        if work:
            shutil.rmtree(work, ignore_errors=True)
    last = ran.stdout.rstrip("\n").rsplit("\n", 1)[-1]
    try:
        if len(last) > ANSWER_BYTES:
            raise ValueError(f"an answer of {len(last)} bytes")
        answer = json.loads(last)
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            raise ValueError(last)
    except ValueError:
        detail = (ran.stderr.strip().splitlines() or [f"bwrap exited {ran.returncode}"])[-1]
        return {"code": ran.returncode or -1, "lines": [f"the sandbox failed: {printable(detail, 300)}"]}
    lines = answer.get("lines") if isinstance(answer.get("lines"), list) else []
    return {**answer, "lines": [printable(line, 300) for line in lines[:5]]}


OTHER_CPU = "made on another CPU architecture"


def verdict(ran: dict, wanted: dict):
    """Why a fresh run RAN ({code, lines, md5}) does not make what a dvc.lock records (WANTED {path: md5}),
    or None when it does. Only models/ differing, with the data and metrics the same, is named as
    another CPU's rounding (docs/how-to/other-platforms.md), not as a forgery."""
    if ran["code"]:
        return f"a fresh run fails: {(ran['lines'] or ['dvc repro exited ' + str(ran['code'])])[0]}"
    made = ran.get("md5") if isinstance(ran.get("md5"), dict) else {}
    differ = sorted(path for path, digest in wanted.items() if made.get(path) != digest)
    if differ and all(path.startswith("models/") for path in differ):
        return (f"{', '.join(differ)} differs from a fresh run's while the data and metrics are the same: "
                f"{OTHER_CPU}? (docs/how-to/other-platforms.md: commit the dvc.lock of a Linux x86_64 run)")
    if differ:
        return (f"{differ[0]} is not what a fresh run makes: the recorded file was not made by the pipeline "
                f"(edited by hand, or recorded with dvc commit -f?)")
    return None


class Verdicts:
    """The one store of verdicts on others' work: a JSON file of {key: verdict}, the key naming what was
    judged (a commit or tree), by what (the job, the toolkit's version) and how (sandboxed or not)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.known = json.loads(path.read_text())
        except (OSError, ValueError):
            self.known = {}

    @staticmethod
    def key(what: str, job: str, sandboxed: bool) -> str:
        return f"{what} {job} {toolkit_version()} {'sandboxed' if sandboxed else 'here'}"

    def get(self, key: str, judge):
        """The verdict kept under KEY, or JUDGE()'s, kept at once (a later failure loses nothing judged)."""
        if key not in self.known:
            self.known[key] = judge()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.known, indent=1) + "\n")
        return self.known[key]


@functools.lru_cache(maxsize=None)
def toolkit_version() -> str:
    """The toolkit's own code (read once a process): a change to any of it judges everything again."""
    import dataops_kit

    digest = hashlib.md5()
    for path in sorted(Path(dataops_kit.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


CPU_KNOBS = ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "GLIBC_TUNABLES")  # how another CPU is emulated


def reproductions_cache() -> Path:
    """The DVC cache, objects and run cache, that this user's own reproductions share (make check): a
    stage that ran once with the same notebook, helpers, inputs and knobs is restored, not run again.
    Only reproductions write it, never a student's repository. DVC's run cache does not see the
    toolkit, the interpreter, the packages or the CPU knobs, so each set of them has a folder of its
    own, under DATAOPS_CACHE or ~/.cache/dataops."""
    digest = hashlib.md5(f"{toolkit_version()} {sys.version} {platform.machine()}".encode())
    digest.update(" ".join(f"{name}={os.environ.get(name, '')}" for name in CPU_KNOBS).encode())
    digest.update(" ".join(sorted(os.listdir(sysconfig.get_paths()["purelib"]))).encode())  # name-version.dist-info
    root = Path(os.environ.get("DATAOPS_CACHE") or Path.home() / ".cache" / "dataops")
    return root / "reproductions" / digest.hexdigest()[:12]


def reproduce(repo: Path, ref: str, outputs: list, sandboxed: bool = True, wall: float = WALL_SECONDS) -> dict:
    """A fresh run of REF (a ref of REPO) in a fresh clone: {code, lines, md5 of OUTPUTS, lock, metrics}."""
    with tempfile.TemporaryDirectory(prefix="dataops-inputs-") as inputs:
        bundle(repo, [ref], Path(inputs))
        commit = subprocess.run(["git", "rev-parse", f"{ref}^{{commit}}"], cwd=repo, capture_output=True,
                                text=True).stdout.strip()
        return run({"job": "reproduce", "commit": commit, "outputs": outputs}, Path(inputs), sandboxed, wall)


# --- Inside the sandbox (or, unsandboxed, in a folder of its own) ---

def _limit(processes: int) -> None:
    for name, value in (("RLIMIT_CPU", CPU_SECONDS), ("RLIMIT_AS", MEMORY_BYTES),
                        ("RLIMIT_FSIZE", FILE_BYTES), ("RLIMIT_NPROC", processes), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


_CONTAINED = []  # not empty once `inside` runs in the sandbox: its pid namespace is the run's alone


def _kill_the_rest() -> None:
    """Every other process in the sandbox's pid namespace (all the run started), until none is left;
    outside the sandbox, nothing (they are the user's)."""
    for _ in range(100 if _CONTAINED else 0):
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


def _own_cache(clone: Path, cache: Path = None) -> None:
    """CLONE's DVC cache is its own (or CACHE), whatever its config names (a committed cache.dir points
    nowhere here), and DVC stages nothing in git."""
    for key, value in (("cache.dir", cache or clone / ".dvc" / "cache"), ("core.autostage", "false")):
        subprocess.run(["dvc", "config", "--local", key, str(value)], cwd=clone, stdin=subprocess.DEVNULL,
                       capture_output=True)


def _take_objects(repo: Path, inputs: Path) -> None:
    """The objects the host handed over (INPUTS/objects, by md5) into REPO's cache."""
    if (inputs / "objects").is_dir():
        shutil.copytree(inputs / "objects", repo / ".dvc" / "cache" / "files" / "md5", dirs_exist_ok=True)


def fresh_run(clone: Path, outputs: list, timeout: float = None, cache: Path = None) -> dict:
    """Every stage of CLONE, a fresh clone, run anew by `dvc repro`: {code, lines (its ✗ and ERROR lines),
    md5 {path: md5 or None} of OUTPUTS, lock, metrics, ran (how many stages ran)}. The one reproduction
    every grader, check, ranking and course check uses. Its cache is the clone's own with no run cache,
    or CACHE, shared by the clones of one job (a course's tags), with DVC's run cache: a run one tag
    made is restored, not made again, for the next."""
    _own_cache(clone, cache)
    log = clone.parent / "dvc.log"
    # To a file, not a pipe: a process the run leaves behind cannot hold this one open.
    with open(log, "w") as out:
        try:
            code = subprocess.run(["dvc", "repro", "-q", *([] if cache else ["--no-run-cache"])], cwd=clone,
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return {"code": -1, "lines": [f"it did not end within {timeout:g} s"], "md5": {}}
    _kill_the_rest()
    with open(log, errors="replace") as out:
        said = [line.rstrip("\n")[:300] for line in out if line.strip()]
    lines = [line for line in said if line.startswith(("✗", "ERROR"))] or said[-1:]
    return {"code": code, "lines": lines[:5], "md5": {path: _md5(clone / path) for path in outputs},
            "lock": _text(clone / "dvc.lock"), "metrics": _text(clone / "reports" / "metrics.json"),
            "ran": sum(line.startswith("▶ ") for line in said)}  # the runner's first line for each stage it runs


def _text(path: Path, limit: int = 16 << 10):
    if path.is_symlink() or not path.is_file() or path.stat().st_size > limit:
        return None
    return path.read_text(errors="replace")


def _reproduce_job(repo: Path, request: dict, inputs: Path) -> dict:
    return fresh_run(repo, request["outputs"])


def _grade_job(repo: Path, request: dict, inputs: Path) -> dict:
    """Exercise NUMBER's grader on the submission, as `make check` grades: the scene's marker and branches
    from the host's request, its outputs from the objects the host fetched by md5."""
    from dataops_kit.install import install_workspace
    from dataops_kit.teach import exercises

    for branch, commit in request["branches"].items():
        _git(["branch", "-f", branch, commit], repo)
    (repo / ".git" / exercises.MARKER).write_text(
        json.dumps({"exercise": request["number"], "start": request["start"]}) + "\n")
    (repo / ".venv").symlink_to(Path(sys.prefix))
    install_workspace(repo)
    _take_objects(repo, inputs)
    subprocess.run(["dvc", "checkout", "-q"], cwd=repo, capture_output=True, stdin=subprocess.DEVNULL)
    found = exercises.results(request["number"], repo)
    return {"code": 0, "lines": [], "criteria": [[ok, label[:300], (hint or "")[:300]] for ok, label, hint in found]}


def _review_job(repo: Path, request: dict, inputs: Path) -> dict:
    """DVC's own diffs of the request's base and commit (make review), as plain data: nothing is reproduced."""
    from dataops_kit import review

    _own_cache(repo)
    _take_objects(repo, inputs)
    return {"code": 0, "lines": [], **review.diffs(repo, request["base"], request["commit"])}


def _verify_job(repo: Path, request: dict, inputs: Path) -> dict:
    """A course's check (course verify): each of the request's [tag, commit] in a clone of its own, run
    by fresh_run with one cache for all; its rows [tag, ran, restored, dvc.lock identical (None: no
    pipeline yet), git and DVC clean, seconds, why the run failed or ""]."""
    rows = []
    for tag, commit in request["tags"]:
        clone, begun = repo.parent / "tags" / str(len(rows)), time.perf_counter()
        _git(["clone", "-q", "--no-checkout", str(repo), str(clone)], repo.parent)
        _git(["checkout", "-q", "--detach", commit], clone)
        row = [tag, 0, 0, None]  # no pipeline yet: nothing to run, no dvc.lock
        if (clone / "dvc.yaml").is_file():
            ran = fresh_run(clone, [], CPU_SECONDS, cache=repo.parent / "cache")
            # In a fresh clone, each stage is run or restored from the run cache.
            row = [tag, ran["ran"], _stage_count(clone) - ran["ran"] if ran["code"] == 0 else 0,
                   ran["code"] == 0 and ran["lock"] == _output(["git", "show", f"{commit}:dvc.lock"], clone)]
        status = _output(["dvc", "status"], clone)
        clean = not _output(["git", "status", "--porcelain"], clone) and (
            "up to date" in status or "no data or pipelines" in status)
        failed = ran["lines"][0] if row[3] is False and ran["code"] and ran["lines"] else ""
        rows.append([*row, clean, round(time.perf_counter() - begun, 1), failed])
    return {"code": 0, "lines": [], "rows": rows}


def _stage_count(clone: Path) -> int:
    from dataops_kit.facts import read_yaml, stages

    return len(stages(read_yaml(_text(clone / "dvc.yaml", 1 << 20) or "{}")))


def _output(args: list, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout


JOBS = {"reproduce": _reproduce_job, "grade": _grade_job, "review": _review_job, "verify": _verify_job}


def _git(args: list, cwd: Path) -> None:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise RuntimeError(f"git {args[0]}: {(done.stderr.strip().splitlines() or [''])[-1]}")


def inside(processes: int, inputs: Path = Path("/in"), work: Path = Path("/work")) -> dict:
    """Clone the bundle at the request's commit, then its job. PROCESSES 0: not in a sandbox (no limits)."""
    request = json.loads(sys.stdin.read())
    sys.stdin.close()
    if processes:
        _CONTAINED.append(True)
        Path("/tmp/home").mkdir()
        Path("/tmp/passwd").write_text("nobody:x:65534:65534:nobody:/tmp/home:/usr/sbin/nologin\n")
        Path("/tmp/group").write_text("nogroup:x:65534:\n")
    repo = work / "repo"
    _git(["init", "-q", str(repo)], work)  # the bundle's objects, whatever its refs (a clone takes branches only)
    _git(["bundle", "unbundle", str(inputs / "repo.bundle")], repo)
    _git(["checkout", "-q", "-f", "-B", "main", request["commit"]], repo)
    if processes:
        _limit(processes)
    return JOBS[request["job"]](repo, request, inputs)


if __name__ == "__main__":
    try:
        result = inside(int(sys.argv[1]), *map(Path, sys.argv[2:4]))
    except Exception as error:  # any failure of ours: one line, still the last
        result = {"code": -1, "lines": [f"{type(error).__name__}: {error}"[:300]]}
    print("\n" + json.dumps(result), flush=True)
