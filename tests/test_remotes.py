"""Push, wipe, pull: every tracked file comes back byte for byte, through the
default local remote and through a real SSH server on 127.0.0.1."""

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import free_port, locked_md5, md5, run

SSHD = Path("/usr/sbin/sshd")


def tracked_outputs(root):
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return [out["path"] for stage in lock["stages"].values() for out in stage["outs"]]


def wipe_and_pull(root, remote):
    outputs = tracked_outputs(root)
    run(f"dvc push -r {remote}", cwd=root)
    shutil.rmtree(root / ".dvc" / "cache")
    for out in outputs:
        (root / out).unlink()
    result = run(f"dvc pull -r {remote}", cwd=root)
    for out in outputs:
        assert md5(root / out) == locked_md5(root, out), out
    assert "up to date" in run("dvc status", cwd=root).stdout
    return result


def test_default_local_remote_round_trips_every_file(workspace):
    assert "local" in run("dvc remote default", cwd=workspace).stdout
    wipe_and_pull(workspace, "local")
    assert any((workspace.parent / "dvc-storage").rglob("*")), "the remote is the folder beside the clone"


@pytest.fixture
def sshd(tmp_path):
    """OpenSSH on a free port of 127.0.0.1, with a fresh host key and one client key."""
    if not SSHD.exists():
        reason = "needs Debian's openssh-server (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(keys / name)], check=True)
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {keys / 'host'}
AuthorizedKeysFile {keys / 'client.pub'}
PidFile {keys / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, keys / "client"
    server.terminate()
    server.wait(timeout=10)


def test_ssh_remote_round_trips_every_file(workspace, sshd, tmp_path):
    port, key = sshd
    storage = tmp_path / "ssh-storage"
    run(f"dvc remote add classroom ssh://{getpass.getuser()}@127.0.0.1:{port}{storage}", cwd=workspace)
    run(f"dvc remote modify --local classroom keyfile {key}", cwd=workspace)
    wipe_and_pull(workspace, "classroom")
    assert any(storage.rglob("*"))
