"""The workspace kernel: the numerics it pins, and how the stage runner starts
and stops it, through jupyter_client's public doors only.

The kernelspec (written by ``dataops_kit.install``) runs ipykernel's own
launcher with jupyter_client's default provisioner, the same kernel in
JupyterLab, nbval and ``dvc repro``, on every operating system. The runner
starts it before it imports papermill, so the two overlap, and hands it to
papermill (``km=``); ``ReadyClient``, a documented ``client_class``, answers
ready without stock's 0.2 s wait for stray IOPub messages.
"""

import asyncio
import platform
import time

from jupyter_client.asynchronous import AsyncKernelClient

KERNEL = "dataops"  # the kernelspec every notebook names, installed by `make` with same_bytes_env()
KERNEL_MARK = "DATAOPS_KERNEL"  # set by that kernelspec; src/dataops reads it (a copy there, as it imports no toolkit)

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


def start(name, cwd):
    """Launch the notebook's kernel without waiting for it: papermill waits until it is ready."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    kernel = AsyncKernelManager(kernel_name=name, client_class="dataops_kit.runner.kernel.ReadyClient")
    # As papermill's own start: no IPython history database for a headless run.
    run_sync(kernel.start_kernel)(cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
    return kernel


def stop(kernel):
    """Every cell has finished and written its files: kill the kernel and wait
    for it, then let jupyter_client tidy up (connection file, sockets)."""
    from jupyter_core.utils import run_sync

    async def kill():
        if kernel.has_kernel:
            await kernel.provisioner.kill()
            # provisioner.wait() polls every 0.1 s; a killed kernel is gone in a few ms.
            while await kernel.provisioner.poll() is None:
                await asyncio.sleep(0.005)
            await kernel.provisioner.wait()
        await kernel.shutdown_kernel(now=True)

    run_sync(kill)()
