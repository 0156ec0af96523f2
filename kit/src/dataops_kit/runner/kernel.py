"""The workspace kernel: the numerics it pins, and how the stage runner starts
and stops it, through jupyter_client's public doors only.

The kernelspec (written by ``dataops_kit.install``) runs ipykernel's own
launcher and names ``PreloadedProvisioner`` (a ``jupyter_client.kernel_provisioners``
entry point of this package). In JupyterLab, nbval and any run by hand it
starts kernels exactly as jupyter_client's ``LocalProvisioner`` does.

Under `dvc repro` it adds the preloaded kernel. Most of a stage's time is
imports (scipy, scikit-learn, pandas, numpy, IPython: about 1.5 s a kernel).
The first stage that feeds another starts one process (the zygote) that
imports them once; its own kernel and each later stage's kernel are forks of
it. The zygote is tied to the `dvc` command: it exits when that ends.

* It listens on an abstract Unix socket (Linux): no file, so no folder to
  check and then trust, nothing left behind when it is killed.
* Both ends check the other's uid (SO_PEERCRED): a kernel is only ever
  forked for, and only ever asked of, the same user.
* A forked kernel does not watch the zygote: killing the zygote leaves a
  running stage alone. It watches the runner that asked for it instead
  (a pidfd), and exits when that is gone.
* Anything else (another OS, a kernel without the pins, no dvc above the
  runner, DATAOPS_STOCK_KERNEL=1, any failure to reach a zygote) gets a
  stock kernel: the preloaded kernel only ever saves time.
"""

import asyncio
import json
import os
import platform
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.provisioning import LocalProvisioner

KERNEL = "dataops"  # the kernelspec every notebook names, installed by `make` with same_bytes_env()
PROVISIONER = "dataops-preloaded"

# glibc's names for the CPU features that pick its libm variants (exp, log, pow
# with or without FMA), in the spellings of glibc >= 2.33 and of 2.26-2.32;
# a name a glibc does not know is ignored.
_GLIBC_ABOVE_X86_64_V2 = ["AVX", "AVX2", "FMA", "FMA4", "AVX512F", "AVX512VL", "AVX512BW", "AVX512DQ", "AVX512CD"]
_GLIBC_MASK = "glibc.cpu.hwcaps=" + ",".join(
    [f"-{name}" for name in _GLIBC_ABOVE_X86_64_V2] + [f"-{name}_Usable" for name in _GLIBC_ABOVE_X86_64_V2])


def same_bytes_env(machine=None, system=None) -> dict:
    """What the kernel pins so that every CPU of an architecture computes the same bytes.

    x86_64 (docs/explanation/same-bytes.md): the fitted model changed in its
    last bits with OpenBLAS's CPU-specific kernel, its number of threads and
    glibc's libm variant (FMA or not). Each is pinned to what every CPU able
    to run the pinned wheels supports: Nehalem kernels, one thread, plain SSE2 libm.
    arm64 Linux: the model changed with OpenBLAS's kernel there too; generic
    ARMV8 with one thread gave one md5 on every profile measured.
    """
    machine = (machine or platform.machine()).lower()
    system = system or platform.system()
    if machine in ("x86_64", "amd64"):
        env = {"OPENBLAS_CORETYPE": "Nehalem", "OPENBLAS_NUM_THREADS": "1"}
        if system == "Linux":
            env["GLIBC_TUNABLES"] = _GLIBC_MASK
        return env
    if machine in ("aarch64", "arm64") and system == "Linux":
        return {"OPENBLAS_CORETYPE": "ARMV8", "OPENBLAS_NUM_THREADS": "1"}
    return {}


class ReadyClient(AsyncKernelClient):
    async def wait_for_ready(self, timeout=None):
        """jupyter_client's handshake (a kernel_info reply, then one IOPub message
        to show that output will arrive) without its last step, listening 0.2 s
        for more IOPub messages only to drop them (nbclient ignores any message
        that answers none of its cells). A kernel speaking another major
        protocol version gets the stock handshake, which adapts to it."""
        from queue import Empty

        deadline = time.monotonic() + (timeout or 60)
        while time.monotonic() < deadline:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
                if reply["msg_type"] == "kernel_info_reply":
                    if reply["content"].get("protocol_version", "5").split(".")[0] != "5":
                        return await super().wait_for_ready(timeout)
                    await self.iopub_channel.get_msg(timeout=0.2)
                    return
            except Empty:
                pass
            if not await self.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
        raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")


def start(name, cwd, later_stages=False):
    """Launch the notebook's kernel without waiting for it: papermill waits until
    it is ready. `later_stages`: whether a stage after this one could use a
    preloaded kernel, so that starting one is worth it."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    if os.environ.get("DATAOPS_STOCK_KERNEL") != "1":
        owner = dvc_process()
        os.environ[ZYGOTE] = f"{owner}:{int(later_stages)}" if owner else ""
    kernel = AsyncKernelManager(kernel_name=name, client_class="dataops_kit.runner.kernel.ReadyClient")
    # As papermill's own start: no IPython history database for a headless run.
    run_sync(kernel.start_kernel)(cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
    return kernel


def stop(kernel):
    """Every cell has finished and written its files: kill the kernel and wait
    for it (the provisioner's wait returns the moment it is gone), then let
    jupyter_client tidy up (connection file, sockets)."""
    from jupyter_core.utils import run_sync

    async def kill():
        if kernel.has_kernel:
            await kernel.provisioner.kill()
            await kernel.provisioner.wait()
        await kernel.shutdown_kernel(now=True)

    run_sync(kill)()


# --- The preloaded kernel ----------------------------------------------------

ZYGOTE = "DATAOPS_ZYGOTE"  # set by the runner: "<dvc pid>:<1 if later stages may use it>", or empty
# Imported in the zygote for what it leaves in a library: dataops.model trusts
# skops' types once (0.3 to 0.5 s). The module itself is forgotten before a
# kernel runs a cell, and the zygote is keyed on its code.
PRELOADED = "dataops.model"
_KEY_VARS = ("PYTHON", "OPENBLAS_", "GOTO", "OMP_", "MKL_", "NPY_", "GLIBC_", "LD_", "MPL", "DATAOPS_ROOT")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _peer(connection) -> tuple:
    """(pid, uid) of the process at the other end of a Unix socket, as the kernel saw it connect."""
    pid, uid, _ = _CRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return pid, uid


def dvc_process():
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


def _address(owner, env) -> bytes:
    """The zygote's abstract socket name for this dvc command, this user and
    whatever shapes the imported code (interpreter, pins, helper module)."""
    import hashlib
    import importlib.util

    key = hashlib.sha256(f"{sys.executable}\0{sys.version}".encode())
    for name in sorted(env):
        if name.startswith(_KEY_VARS):
            key.update(f"\0{name}={env[name]}".encode())
    spec = importlib.util.find_spec(PRELOADED)
    key.update(Path(spec.origin).read_bytes() if spec and spec.origin else b"")
    return f"\0dataops-kernel-{os.getuid()}-{owner}-{key.hexdigest()[:24]}".encode()


class ForkedKernel:
    """A kernel the zygote forked, with the part of Popen's interface that
    LocalProvisioner uses. It is the zygote's child, not ours: a pidfd
    follows it, and the zygote reaps it."""

    stdin = stdout = stderr = None

    def __init__(self, pid):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.returncode = None

    def poll(self):
        if self.returncode is None and select.select([self.pidfd], [], [], 0)[0]:
            self.returncode = -signal.SIGKILL  # its status went to the zygote: gone is all we know
            os.close(self.pidfd)
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            select.select([self.pidfd], [], [], timeout)
        return self.poll()

    def send_signal(self, number):
        if self.poll() is None:
            signal.pidfd_send_signal(self.pidfd, number)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)



# ipykernel's launcher, without debugpy: no debugger can attach to a headless stage's kernel (0.1 s a stage).
HEADLESS = ("import sys; del sys.path[0]; sys.modules['debugpy'] = None; "
            "from ipykernel import kernelapp; kernelapp.launch_new_instance()")


class PreloadedProvisioner(LocalProvisioner):
    """LocalProvisioner, whose kernels under `dvc repro` may be forks of a preloaded process."""

    async def launch_kernel(self, cmd, **kwargs):
        env = kwargs.get("env") or {}
        owner, _, spawn = env.get(ZYGOTE, "").partition(":")
        forked = None
        if (owner.isdigit() and sys.platform == "linux" and env.get("OPENBLAS_NUM_THREADS") == "1"
                and cmd[1:3] == ["-m", "ipykernel_launcher"]):
            try:
                forked = _request_kernel(_address(owner, env), owner, spawn == "1", cmd, env, kwargs.get("cwd"))
            except OSError:
                forked = None
        if forked is None:
            if env.get("DATAOPS_STAGE") and cmd[1:3] == ["-m", "ipykernel_launcher"]:
                cmd = [cmd[0], "-c", HEADLESS, *cmd[3:]]
            return await super().launch_kernel(cmd, **kwargs)
        self.process, self.pid, self.pgid = forked, forked.pid, forked.pid
        self.cwd = kwargs.get("cwd")
        return self.connection_info

    async def wait(self):
        """As LocalProvisioner's, but woken the moment the kernel ends (a pidfd), not within 0.1 s."""
        process = self.process
        if process is not None:
            if process.poll() is not None:
                return await super().wait()
            try:
                pidfd = process.pidfd if isinstance(process, ForkedKernel) else os.pidfd_open(process.pid)
            except OSError:  # already reaped, or no pidfd on this system: the stock poll
                return await super().wait()
            ready = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_reader(pidfd, ready.set)
            try:
                await ready.wait()
            finally:
                loop.remove_reader(pidfd)
                if pidfd != getattr(process, "pidfd", None):
                    os.close(pidfd)
        return await super().wait()



def _connect(address):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.connect(address)
        return server
    except OSError:
        server.close()
        return None


def _request_kernel(address, owner, spawn, cmd, env, cwd):
    """A ForkedKernel the zygote forked for this process (started first if `spawn`
    and none listens), or None: then a stock kernel starts."""
    server = _connect(address)
    if server is None:
        if not spawn:
            return None
        import subprocess

        # This stage's kernel is a fork too: one process imports the libraries, not two at once
        # (a stock kernel beside the zygote doubled the pipeline's peak memory, for no time saved).
        subprocess.Popen([sys.executable, "-m", "dataops_kit.runner.kernel", owner, address[1:].decode()],
                         env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while server is None and time.monotonic() < deadline:
            time.sleep(0.02)
            server = _connect(address)
        if server is None:
            return None
    with server:
        if _peer(server)[1] != os.getuid():
            return None  # someone else holds the name: never hand them a kernel's keys
        request = json.dumps({"argv": cmd[3:], "env": env, "cwd": str(cwd or os.getcwd())}).encode()
        socket.send_fds(server, [len(request).to_bytes(4, "big") + request], [0, 1, 2])
        # A zygote still importing answers when it is done: sooner than a kernel started now.
        server.settimeout(30)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = server.recv(64)
            if not chunk:
                return None
            reply += chunk
        return ForkedKernel(int(reply))


def zygote(owner: int, name: str):
    """Listen at once, import what kernels need, then fork one kernel per
    request of the same user, until the dvc command ends."""
    import threading

    try:
        dvc = os.pidfd_open(owner)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(b"\0" + name.encode())  # taken: another zygote serves this dvc command
    except OSError:
        return
    server.listen(8)
    _watch_while_importing(dvc)
    if threading.active_count() > 1:
        return  # an import started a thread: a fork could deadlock (clients then start stock kernels)
    import gc

    gc.collect()
    gc.freeze()  # a fork's collector leaves the imported objects' pages alone: shared, not copied
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # kernels are reaped as they end
    while True:
        if server not in select.select([server, dvc], [], [], 600)[0]:
            return  # dvc ended (or ten idle minutes: a dvc that hangs)
        with server.accept()[0] as connection:
            request, fds, runner = _read_request(connection)
            if request is None:
                continue
            child = os.fork()
            if child == 0:
                server.close()
                os.close(dvc)
                _become_kernel(fds, request, runner)
            try:
                connection.sendall(f"{child}\n".encode())
            except OSError:
                pass
            for fd in (runner, *fds):
                os.close(fd)


def _read_request(connection):
    """(request, the runner's stdio fds, a pidfd of the runner) from a
    connection of this user's, or (None, [], None)."""
    fds = []
    try:
        pid, uid = _peer(connection)
        if uid != os.getuid():
            return None, [], None
        connection.settimeout(10)
        message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
        while len(message) < 4 or len(message) < 4 + int.from_bytes(message[:4], "big"):
            chunk = connection.recv(1 << 16)
            if not chunk:
                raise OSError("the request was cut short")
            message += chunk
        request = json.loads(message[4:])
        if len(fds) != 3 or not isinstance(request.get("argv"), list):
            raise ValueError("not a kernel request")
        return request, fds, os.pidfd_open(pid)
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        return None, [], None


def _watch_while_importing(dvc):
    """Import what the stages' kernels import; if the dvc command ends first, exit at once."""
    import threading

    wake, done = os.pipe()

    def watch():
        if dvc in select.select([dvc, wake], [], [])[0]:
            os._exit(0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _import_libraries()
    os.write(done, b"-")
    watcher.join()
    os.close(wake)
    os.close(done)


def _import_libraries():
    """What the notebooks import (the helper module is forgotten in each fork)."""
    import importlib

    sys.modules["debugpy"] = None  # a headless stage's kernel has no debugger to attach
    # As ipykernel does before any cell runs; matplotlib reads it when imported.
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for module in ("ipykernel.kernelapp", "matplotlib.figure", "pandas", "ruamel.yaml", "sklearn.datasets",
                   "sklearn.ensemble", "sklearn.linear_model", "sklearn.metrics", "sklearn.model_selection",
                   "sklearn.svm", PRELOADED):
        importlib.import_module(module)  # not pyplot: it sets itself up for the kernel's IPython on import
    # pandas picks this when imported: 20 inside a kernel, 0 (fit the terminal) outside one, as here.
    sys.modules["pandas"].set_option("display.max_columns", 20)


def _become_kernel(fds, request, runner):
    """In the forked child: take the runner's files, folder and environment,
    then run ipykernel as its launcher would. Never returns."""
    import threading

    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for name in [name for name in sys.modules if name.split(".")[0] == "dataops"]:
            del sys.modules[name]  # the notebook's `import dataops` runs the helpers afresh

        def lifeline():  # the runner that asked for this kernel is gone (killed): so is the kernel
            select.select([runner], [], [])
            os._exit(1)

        threading.Thread(target=lifeline, daemon=True).start()
        from ipykernel import kernelapp

        # No parent to watch (1 is init, which never goes away): the zygote may die, the kernel goes on.
        kernelapp.launch_new_instance(argv=[*request["argv"], "--IPKernelApp.parent_handle=1"])
    except BaseException:  # never back into the zygote's loop
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    # As ipykernel_launcher: the current folder is not on the import path.
    if sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    try:
        zygote(int(sys.argv[1]), sys.argv[2])
    finally:
        os._exit(0)  # at once: tearing down scikit-learn's modules would keep it alive 0.3 s past dvc
