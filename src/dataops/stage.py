"""Run one stage notebook headless with papermill: ``python -m dataops.stage notebooks/02_process_data.ipynb``.

This is each stage's ``cmd`` in dvc.yaml. Around papermill it adds what a
class needs: params.yaml is checked before a kernel starts; every cell is
announced as it runs; the executed notebook is kept in reports/ with
papermill's timestamps removed, so identical runs give an identical dvc.lock;
and a failure ends in one readable message, with the executed notebook moved
to reports/failed/ where the failing cell is marked and where ``dvc checkout``
will not overwrite it. Students rerun stages all lesson long, so the runner
also starts the kernel itself, to boot while papermill is imported, and
stops it as soon as the last cell is done (``make bench`` measures the gain).
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

from dataops import WorkspaceError, paths
from dataops.notebook import dumps, tidy_executed
from dataops.params import read


def _say(text):
    print(text, flush=True)


def _headline(cell):
    """The line a student recognises a cell by: its first comment or line."""
    for line in cell.source.splitlines():
        if line.strip():
            return line.strip().lstrip("# ")[:70]
    return ""


def _start_kernel(name, cwd):
    """Launch the notebook's kernel without waiting for it: papermill waits until it is ready."""
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

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

    kernel = AsyncKernelManager(kernel_name=name, client_factory=Client)
    # As papermill's own start: no IPython history database for a headless run.
    run_sync(kernel.start_kernel)(cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"])
    return kernel


def _stop_kernel(kernel):
    """Every cell has finished and written its files: kill the kernel at once.

    Waiting on the process ourselves reaps it as soon as it is gone;
    jupyter_client alone polls every 0.1 s. shutdown_kernel then only tidies up
    (connection file, sockets).
    """
    from jupyter_core.utils import run_sync

    run_sync(kernel.provisioner.kill)()
    kernel.provisioner.process.wait()
    run_sync(kernel.shutdown_kernel)(now=True)


def run(notebook: Path) -> int:
    where = paths()
    stage = notebook.stem.split("_", 1)[-1]
    executed = where.reports / notebook.name
    failed = where.reports / "failed" / notebook.name
    try:
        read(where.params)
    except WorkspaceError as error:
        _say(f"✗ {stage}: {error}")
        return 2

    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    from jupyter_client.kernelspec import NoSuchKernel

    executed.parent.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
    source = json.loads(notebook.read_text())
    code_cells = sum(c["cell_type"] == "code" for c in source["cells"])
    counter = iter(range(1, code_cells + 1))

    def announce(cell, cell_index):
        if cell.cell_type == "code":
            _say(f"  {stage} [{next(counter)}/{code_cells}] {_headline(cell)}")

    _say(f"▶ {stage}: {notebook} → {executed.relative_to(where.root)}")
    started = time.perf_counter()
    kernel = None
    try:
        kernel = _start_kernel(source["metadata"]["kernelspec"]["name"], cwd=notebook.parent)
        # The kernel boots (about 0.5 s) while papermill is imported (about 0.3 s).
        logging.getLogger("papermill").setLevel(logging.ERROR)
        import papermill

        try:
            papermill.execute_notebook(
                # Relative paths: papermill records them in the executed notebook.
                os.path.relpath(notebook), os.path.relpath(executed), cwd=str(notebook.parent),
                progress_bar=False, on_cell_start=announce, km=kernel,
            )
        except papermill.PapermillExecutionError as error:
            failed.parent.mkdir(parents=True, exist_ok=True)
            executed.replace(failed)
            detail = error.evalue if error.ename == "WorkspaceError" else f"{error.ename}: {error.evalue}"
            _say(f"✗ {stage} failed in cell [{error.exec_count}]: {detail}\n"
                 f"  The executed notebook, failing cell marked: {failed.relative_to(where.root)}\n"
                 f"  Your last good data and model are safe in DVC's cache: `dvc checkout --force` restores them.")
            return 1
    except NoSuchKernel as error:
        _say(f"✗ {stage}: {error}. Run `make` to install the workspace's kernel.")
        return 1
    except KeyboardInterrupt:
        _say(f"✗ {stage}: interrupted. Run `dvc repro` again to finish; nothing else is needed.")
        return 130
    finally:
        if kernel is not None:
            _stop_kernel(kernel)

    executed.write_text(dumps(tidy_executed(json.loads(executed.read_text()))))
    _say(f"✓ {stage} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].endswith(".ipynb"):
        _say("usage: python -m dataops.stage notebooks/NN_stage.ipynb")
        return 2
    return run(Path(argv[0]))


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file is written and closed and the kernel is gone: skip tearing
    # down the interpreter (papermill's modules, zmq), 0.13 s per stage.
    os._exit(code)
