"""The workspace kernel's life, in one place: the numerics it pins, how it
starts, and how the stage runner starts and stops it.

``python -m dataops.kernel -f CONNECTION_FILE`` is the kernel's command in its
kernelspec (dataops.install). It is ipykernel's own launcher, plus two things
in a headless stage run (the runner sets $DATAOPS_STAGE): debugpy is not
loaded, as no debugger can attach there (0.1 s a stage), and under `dvc
repro` the kernel may be a fork of a preloaded process (below). JupyterLab's
kernels keep their debugger and start as ipykernel's do.

``start`` and ``stop`` are the runner's speed-ups around jupyter_client, each
measured (README, "Speed"). They rely on these jupyter_client names, which
are not public API, so they are used only with the tested jupyter_client;
with any other version the runner takes jupyter_client's stock behaviour:

* ``AsyncKernelClient._handle_kernel_info_reply``: what the stock ready
  handshake does with the kernel_info reply (records the protocol version);
* ``AsyncKernelManager.provisioner.process``: the kernel's Popen, which only
  the local provisioner has, waited on to reap the kernel at once.

The third speed-up, the preloaded kernel below, uses no private name; it
relies on the pinned libraries starting no thread when imported (checked
for Python threads; OpenBLAS is held to one thread by the pins), as a fork
of a process with threads can deadlock. ``DATAOPS_STOCK_KERNEL=1`` turns all
three off.
"""

import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

KERNEL = "dataops"  # the kernelspec every notebook names, installed by `make` with same_bytes_env()
TESTED = "8.10.0"  # jupyter_client, as pinned in requirements.txt

# glibc's names for the CPU features that pick its libm variants (exp, log, pow
# with or without FMA), in the spellings of glibc >= 2.33 and of 2.26-2.32;
# a name a glibc does not know is ignored.
_GLIBC_ABOVE_X86_64_V2 = ["AVX", "AVX2", "FMA", "FMA4", "AVX512F", "AVX512VL", "AVX512BW", "AVX512DQ", "AVX512CD"]
_GLIBC_MASK = "glibc.cpu.hwcaps=" + ",".join(
    [f"-{name}" for name in _GLIBC_ABOVE_X86_64_V2] + [f"-{name}_Usable" for name in _GLIBC_ABOVE_X86_64_V2])


def same_bytes_env(machine=None, system=None) -> dict:
    """What the kernel pins so that every x86_64 CPU computes the same bytes.

    Measured (README, "Same bytes on every machine"): the fitted logistic
    regression changed in its last bits with OpenBLAS's CPU-specific kernel,
    with its number of threads (OpenBLAS splits dot products by core count)
    and with glibc's libm variant (FMA or not). Each is pinned to a choice that
    every CPU able to run the pinned numpy wheels (x86-64-v2) supports:
    OpenBLAS's Nehalem kernels, one thread, glibc's plain SSE2 libm. numpy's
    own SIMD paths were measured too and change nothing, so they stay fast.
    Other architectures (arm64) run other code altogether: nothing to pin.
    """
    machine = (machine or platform.machine()).lower()
    system = system or platform.system()
    if machine not in ("x86_64", "amd64"):
        return {}
    env = {"OPENBLAS_CORETYPE": "Nehalem", "OPENBLAS_NUM_THREADS": "1"}
    if system == "Linux":
        env["GLIBC_TUNABLES"] = _GLIBC_MASK
    return env


def fast_path() -> bool:
    """Use the speed-ups below: only with the tested jupyter_client (DATAOPS_STOCK_KERNEL=1 turns them off)."""
    import jupyter_client

    return jupyter_client.__version__ == TESTED and os.environ.get("DATAOPS_STOCK_KERNEL") != "1"


def _client_class():
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient

    class Client(AsyncKernelClient):
        async def wait_for_ready(self, timeout=None):
            """jupyter_client's handshake (a kernel_info reply, then one IOPub message to
            show that output will arrive) without its last step: listening 0.2 s for
            more IOPub messages only to drop them. nbclient ignores any message that
            does not answer one of its cells."""
            deadline = time.monotonic() + (timeout or 60)
            while time.monotonic() < deadline:
                self.kernel_info()
                try:
                    reply = await self.shell_channel.get_msg(timeout=1)
                    if reply["msg_type"] == "kernel_info_reply":
                        await self.iopub_channel.get_msg(timeout=0.2)
                        self._handle_kernel_info_reply(reply)
                        return
                except Empty:
                    pass
                if not await self.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
            raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")

    return Client


def start(name, cwd, later_stages=False):
    """Launch the notebook's kernel without waiting for it: papermill waits until it is ready.

    Under `dvc repro` the kernel may be a fork of a preloaded one (see "The
    preloaded kernel" below); `later_stages` says whether stages after this
    one could use one, so that it is worth starting."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    fast = fast_path()
    options = {"client_factory": _client_class()} if fast else {}
    preload = fast and os.environ.get("DVC_STAGE") and sys.platform == "linux" and same_bytes_env()
    owner = _dvc_process() if preload else None
    if owner:
        os.environ[ZYGOTE] = f"{owner}:{int(later_stages)}"
    kernel = AsyncKernelManager(kernel_name=name, **options)
    # As papermill's own start: no IPython history database for a headless run.
    run_sync(kernel.start_kernel)(cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
    return kernel


def stop(kernel):
    """Every cell has finished and written its files: kill the kernel at once.

    Waiting on the process ourselves reaps it as soon as it is gone;
    jupyter_client alone polls every 0.1 s. shutdown_kernel then only tidies
    up (connection file, sockets)."""
    from jupyter_core.utils import run_sync

    process = getattr(kernel.provisioner, "process", None) if fast_path() else None
    if process is not None:
        run_sync(kernel.provisioner.kill)()
        process.wait()
    run_sync(kernel.shutdown_kernel)(now=True)


# --- The preloaded kernel ("zygote") -----------------------------------------
#
# Most of a stage's time is imports: scipy, scikit-learn, pandas, numpy,
# IPython, about 1.5 s in every kernel. Under `dvc repro` the kernel of the
# first stage that feeds another starts, beside itself, one process that
# imports them once; each
# later stage's kernel is then a fork of it: a new process that has never run
# a cell, with those modules already in memory (README, "Speed"). It is tied
# to the `dvc` command that ran the stages and exits as soon as that ends.
# The workspace's own modules are not kept: each kernel imports them afresh,
# as the notebooks name them.
#
# Where it is used: Linux, under DVC, with the tested jupyter_client and the
# numerics pins (the runner decides: see `start`); anywhere else, and when
# anything that shapes the imported code differs (interpreter, pins, import
# path), a kernel starts as before.

ZYGOTE = "DATAOPS_ZYGOTE"  # set by the runner for its kernel: "<dvc pid>:<1 if later stages may use it>"
# One workspace module is imported too, for what it leaves in a library:
# dataops.model imports skops with the workspace's narrower trust, which takes
# skops 0.3 to 0.5 s. The module itself is forgotten before a kernel runs a
# cell (the stages that use it import it afresh and declare it in dvc.yaml),
# and the zygote is keyed on its code, so skops' state always comes from the
# model.py on disk.
PRELOADED = "model"
_KEY_VARS = ("PYTHON", "OPENBLAS_", "GOTO", "OMP_", "MKL_", "NPY_", "GLIBC_", "LD_", "MPL", "DATAOPS_ROOT")


def _dvc_process():
    """The pid of the `dvc` command that runs this stage (this process's parent,
    past a shell), or None when no dvc started it (a stage run by hand)."""
    pid = os.getppid()
    for _ in range(3):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if b"dvc" in [os.path.basename(arg) for arg in argv]:
            return pid
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's parent
    return None


def _zygote_path(owner):
    """The zygote's socket for this dvc command and this kernel's imports."""
    import hashlib
    import tempfile

    key = hashlib.sha256(f"{sys.executable}\0{sys.version}".encode())
    for name in sorted(os.environ):
        if name.startswith(_KEY_VARS):
            key.update(f"\0{name}={os.environ[name]}".encode())
    key.update(Path(__file__).with_name(f"{PRELOADED}.py").read_bytes())
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"dataops-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        return None  # not ours alone: never hand a kernel to whoever listens there
    path = folder / f"{owner}-{key.hexdigest()[:20]}"
    return path if len(os.fsencode(path)) < 100 else None  # a Unix socket's path has room for about 107 bytes


def _hand_off():
    """Become a proxy for a kernel forked from this dvc command's zygote, or
    return False: none is ready yet (one is started if later stages may use it)."""
    owner, _, spawn = os.environ.get(ZYGOTE, "").partition(":")
    if not owner.isdigit() or os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        return False  # a kernel without the pins may start BLAS threads on import: never fork it
    try:
        path = _zygote_path(owner)
        forked = path and _request_kernel(path, owner, spawn == "1")
    except OSError:  # no room for a socket or a lock (a read-only or full disk): as without a zygote
        forked = None
    if not forked:
        return False
    pid, server = forked
    # jupyter_client signals this process (an interrupt, a kill): pass it on. A
    # SIGKILL cannot be passed on: the kernel sees this end close, and exits.
    # So does it when the runner that started this process is gone (killed).
    import select

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, lambda number, frame: os.kill(pid, number))
    runner = os.pidfd_open(os.getppid())
    while server in select.select([server, runner], [], [])[0] and server.recv(1):
        pass  # until the kernel or the runner ends
    return True


def _request_kernel(path, owner, spawn):
    """(pid, connection) of a kernel the zygote forked for this process, or None."""
    import socket

    deadline = time.monotonic() + 30
    while True:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.connect(str(path))
            break
        except OSError:
            server.close()
        if not _zygote_starting(path):  # none, nor one on its way: start one for the stages after this
            if spawn:
                import subprocess

                subprocess.Popen([sys.executable, "-m", "dataops.kernel", "--zygote", owner, str(path)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
            return None
        if time.monotonic() > deadline:
            return None
        # One is importing: it started a stage ago, so it is ready sooner than a
        # kernel started now would be, and it does not compete with it for the CPU.
        time.sleep(0.02)
    try:
        request = json.dumps({"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
        socket.send_fds(server, [len(request).to_bytes(4, "big") + request], [0, 1, 2])
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = server.recv(64)
            if not chunk:
                raise OSError("the zygote went away before forking")
            reply += chunk
        return int(reply), server
    except (OSError, ValueError):
        server.close()
        return None


def _zygote_starting(path):
    """Whether a zygote holds the lock (it does from its start to its end). Only
    read: a lock file made here would be left behind whenever none starts."""
    import fcntl

    try:
        lock = os.open(f"{path}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(lock)


def _zygote(owner, path):
    """Import what kernels need, then fork one kernel per request, until the dvc command ends."""
    import fcntl
    import select
    import socket
    import threading

    lock = open(f"{path}.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        dvc = os.pidfd_open(owner)
    except OSError:
        return  # another one is starting, or the dvc command is already gone
    try:
        _preload(dvc, path)
        if threading.active_count() > 1:
            return  # an import started a thread: forking now could deadlock the kernel
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Path(path).unlink(missing_ok=True)
        server.bind(path)
        server.listen(4)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # kernels are reaped as they end
        while True:
            ready = select.select([server, dvc], [], [], 600)[0]
            if server not in ready:  # dvc ended (or ten idle minutes: a dvc that hangs)
                return
            connection = server.accept()[0]
            try:
                message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
                while len(message) < 4 or len(message) < 4 + int.from_bytes(message[:4], "big"):
                    chunk = connection.recv(1 << 16)
                    if not chunk:
                        raise OSError("the request was cut short")
                    message += chunk
                request = json.loads(message[4:])
            except (OSError, ValueError):
                connection.close()
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                lock.close()
                os.close(dvc)
                _become_kernel(connection, fds, request)
            connection.sendall(f"{pid}\n".encode())
            connection.close()
            for fd in fds:
                os.close(fd)
    finally:
        Path(path).unlink(missing_ok=True)
        Path(f"{path}.lock").unlink(missing_ok=True)
        os._exit(0)  # at once: tearing down scikit-learn's modules would keep it alive 0.3 s past dvc


def _preload(dvc, path):
    """Import what the stages' kernels import, while watching the dvc command:
    when it ends first, so does this process, at once."""
    import select
    import threading

    wake, done = os.pipe()

    def watch():
        if dvc in select.select([dvc, wake], [], [])[0]:
            Path(f"{path}.lock").unlink(missing_ok=True)
            os._exit(0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _import_libraries()
    os.write(done, b"-")
    watcher.join()
    os.close(wake)
    os.close(done)


def _import_libraries():
    """What the notebooks import. Of the workspace's own modules, which are stage
    dependencies, each kernel imports afresh what it uses (see PRELOADED)."""
    sys.modules["debugpy"] = None  # as a headless stage's kernel (see main)
    # As ipykernel does before any cell runs; matplotlib reads it when imported.
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    import ipykernel.kernelapp  # noqa: F401
    # Not pyplot nor matplotlib_inline: those set themselves up for the kernel's IPython on import.
    import matplotlib.figure  # noqa: F401
    import pandas  # noqa: F401
    import ruamel.yaml  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.svm  # noqa: F401

    import importlib

    importlib.import_module(f"dataops.{PRELOADED}")  # forgotten in each fork (_become_kernel)


def _forget_dataops():
    """Forget the workspace's own modules: the notebook's `import dataops` runs them afresh, in the kernel."""
    for name in [name for name in sys.modules if name.split(".")[0] == "dataops"]:
        del sys.modules[name]


def _become_kernel(connection, fds, request):
    """In the forked child: take the requesting process's files, folder and
    environment, then run ipykernel as `python -m dataops.kernel` would."""
    import threading

    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    _forget_dataops()  # as main does: the notebook's `import dataops` runs it afresh

    def lifeline():  # the requesting process is gone (killed): so is this kernel
        while connection.recv(1):
            pass
        os._exit(1)

    threading.Thread(target=lifeline, daemon=True).start()
    try:
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
    except BaseException:  # as an uncaught error would, but never back into the zygote's loop
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def main():
    # As ipykernel_launcher: the current folder leaves sys.path while ipykernel loads.
    if sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    if sys.argv[1:2] == ["--zygote"]:
        return _zygote(int(sys.argv[2]), sys.argv[3])
    from dataops import STAGE  # already imported: `-m dataops.kernel` runs inside the package

    if os.environ.get(STAGE):
        if os.environ.get(ZYGOTE) and _hand_off():
            return
        sys.modules["debugpy"] = None  # ipykernel then runs without its debugger
    # `-m dataops.kernel` imported the package: forget it, so that the notebook's
    # own `import dataops` runs it inside the kernel, as with ipykernel's launcher.
    _forget_dataops()
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
