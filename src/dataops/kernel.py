"""The workspace kernel's life, in one place: the numerics it pins, how it
starts, and how the stage runner starts and stops it.

``python -m dataops.kernel -f CONNECTION_FILE`` is the kernel's command in its
kernelspec (dataops.install). It is ipykernel's own launcher, plus one thing:
in a headless stage run (the runner sets $DATAOPS_STAGE) debugpy is not
loaded, as no debugger can attach there (0.1 s a stage). JupyterLab's kernels
keep their debugger.

``start`` and ``stop`` are the runner's speed-ups around jupyter_client, each
measured (README, "Speed"). They rely on these jupyter_client names, which
are not public API, so they are used only with the tested jupyter_client;
with any other version the runner takes jupyter_client's stock behaviour:

* ``AsyncKernelClient._handle_kernel_info_reply``: what the stock ready
  handshake does with the kernel_info reply (records the protocol version);
* ``AsyncKernelManager.provisioner.process``: the kernel's Popen, which only
  the local provisioner has, waited on to reap the kernel at once.
"""

import os
import platform
import sys
import time

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


def start(name, cwd):
    """Launch the notebook's kernel without waiting for it: papermill waits until it is ready."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    options = {"client_factory": _client_class()} if fast_path() else {}
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


def main():
    # As ipykernel_launcher: the current folder leaves sys.path while ipykernel loads.
    if sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    from dataops import STAGE  # already imported: `-m dataops.kernel` runs inside the package

    if os.environ.get(STAGE):
        sys.modules["debugpy"] = None  # ipykernel then runs without its debugger
    # `-m dataops.kernel` imported the package: forget it, so that the notebook's
    # own `import dataops` runs it inside the kernel, as with ipykernel's launcher.
    for name in [name for name in sys.modules if name.split(".")[0] == "dataops"]:
        del sys.modules[name]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
