"""The workspace kernel (dataops_kit.runner.kernel): the preloaded kernel and the stock path, debugpy
only where a debugger can attach, and WorkspaceError as one line through IPython's own protocol."""

import os
import re
import subprocess

import pytest

from helpers import edit_cell, kernels_in, run, set_param, workspace_env


def kernel_says(root, code, env=None):
    """Run code in a real 'dataops' kernel started the way the runner starts it; what it printed."""
    from dataops_kit.runner import kernel

    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        manager = kernel.start("dataops", cwd=root / "notebooks")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    client = manager.blocking_client()
    client.start_channels()
    printed = []
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(code, timeout=60, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "") if msg["msg_type"] == "stream" else
            "\n".join(msg["content"].get("traceback", [])) if msg["msg_type"] == "error" else ""))
    finally:
        client.stop_channels()
        kernel.stop(manager)
    return reply["content"], "".join(printed)


def test_a_headless_stage_kernel_skips_debugpy_and_jupyterlabs_keeps_it(clone):
    code = "import sys; print('debugpy' in sys.modules and sys.modules['debugpy'] is not None)"
    assert kernel_says(clone, code, {"DATAOPS_STAGE": "train_model"})[1].strip() == "False"
    assert kernel_says(clone, code)[1].strip() == "True"


def test_a_workspace_error_shows_as_one_line_through_render_traceback(clone):
    content, printed = kernel_says(clone, "from dataops import WorkspaceError\nraise WorkspaceError('params.yaml: x')")
    assert content["status"] == "error" and content["ename"] == "WorkspaceError"
    assert printed == "WorkspaceError: params.yaml: x"


def kernels_that_imported(output, package):
    """How many processes imported `package` themselves, in the output of a run with PYTHONPROFILEIMPORTTIME=1."""
    return len(re.findall(rf"^import time:.*\|\s+{package}$", output, re.MULTILINE))


@pytest.mark.parametrize("case", ["preloaded", "stock"])
def test_later_stages_fork_a_preloaded_kernel_and_the_stock_path_still_works(workspace, case):
    set_param(workspace, "process.test_size", 0.25)
    env = {"PYTHONPROFILEIMPORTTIME": "1", "DATAOPS_STOCK_KERNEL": "1" if case == "stock" else ""}
    result = run("dvc repro", cwd=workspace, env=env)
    assert all(f"✓ {name}" in result.stdout for name in ("process_data", "train_model", "evaluate"))
    # Preloaded: every stage's kernel is a fork of the preloaded process, which
    # imported pandas once (its own output goes nowhere), so no kernel imports it.
    # Stock: every kernel imports it. Nothing is left running either way, and no
    # file (its socket is abstract).
    assert kernels_that_imported(result.stderr, "pandas") == (0 if case == "preloaded" else 3)
    assert kernels_in(workspace, wait=1) == [], "no kernel nor preloaded process left running"
    assert "up to date" in run("dvc status", cwd=workspace).stdout
    assert "NOTE: When using" not in result.stdout, "a forked kernel prints nothing of its own"


def test_killing_the_preloaded_process_leaves_the_running_stage_alone(workspace):
    edit_cell(workspace, "04_evaluate.ipynb", "predicted = model.predict(X)",
              "import time; time.sleep(4)\npredicted = model.predict(X)")
    set_param(workspace, "process.test_size", 0.25)
    stage = subprocess.Popen(["dvc", "repro"], cwd=workspace, env={**os.environ, **workspace_env(workspace)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed = []
    for line in stage.stdout:
        printed.append(line)
        if line.startswith("  evaluate [2/"):
            zygotes = [p for p in kernels_in(workspace) if "dataops_kit.runner.kernel" in p.cmdline()
                       and p.parent() and "dataops_kit.runner.kernel" not in p.parent().cmdline()]
            assert zygotes, "evaluate's kernel is a fork of a preloaded process"
            for zygote in zygotes:
                zygote.kill()
    printed.append(stage.stdout.read())
    assert stage.wait(timeout=120) == 0, "".join(printed)
    assert "✓ evaluate" in "".join(printed)
    assert "up to date" in run("dvc status", cwd=workspace).stdout
    assert kernels_in(workspace, wait=2) == []


def test_the_preloaded_process_forks_kernels_for_its_own_user_only():
    """A peer of another uid is refused before anything is read from it (SO_PEERCRED),
    and so is a request that is not a kernel's."""
    import socket

    from dataops_kit.runner.kernel import _read_request

    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"\x00\x00\x00\x02{}")
        assert _read_request(ours) == (None, [], None)  # no descriptors, no argv: not a kernel request
    if os.getuid() != 0:
        pytest.skip("making a peer of another uid needs root")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0dataops-test-{os.getpid()}".encode()
    server.bind(name)
    server.listen(1)
    child = os.fork()
    if child == 0:  # another user connects and sends a well-formed request
        try:
            os.setuid(65534)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(name)
            body = b'{"argv": ["-c", "print(1)"], "env": {}, "cwd": "/"}'
            socket.send_fds(client, [len(body).to_bytes(4, "big") + body], [0, 1, 2])
            client.recv(1)
        finally:
            os._exit(0)
    connection = server.accept()[0]
    with server, connection:
        assert _read_request(connection) == (None, [], None)
    os.waitpid(child, 0)
