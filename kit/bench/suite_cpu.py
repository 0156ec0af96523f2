"""Where the test suite's CPU goes: every process's CPU time, by kind and by test file.

    sudo .venv/bin/python kit/bench/suite_cpu.py                  # the whole suite, as `make test` runs it
    sudo .venv/bin/python kit/bench/suite_cpu.py tests/test_pipeline.py -n 2

The suite is bound by CPU (2 cores busy most of a run), so its wall time is
about its CPU time over the cores. This counts that CPU with the kernel's
process accounting (`accton`; Debian's package `acct`; needs root): every
process that ends during the run, also those that leave no Python behind to
ask (forks without exec, processes ended by a signal). A startup
hook in the venv (a .pth file, in place only for the run, and acting only
where SUITE_CPU_LOG is set) records each of the venv's Python processes'
command line and the test it started in (PYTEST_CURRENT_TEST), which names
the kinds: stage kernels, papermill
runners, each `dvc` command. Processes of the fresh venvs that some tests
build, and programs that are not Python, are named by their command.
"""

import collections
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

DEFAULT = ["--nbval-lax", "-n", "auto", "--maxprocesses", "4"]  # make test's arguments
HOOK = '''import os
if os.environ.get("SUITE_CPU_LOG"):
    try:
        with open("/proc/self/cmdline", "rb") as own:
            command = own.read().replace(b"\\0", b" ").decode(errors="replace")
        line = "\\t".join([str(os.getpid()), os.environ.get("PYTEST_CURRENT_TEST", "-"), command])
        fd = os.open(os.environ["SUITE_CPU_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, (line.replace("\\n", " ") + "\\n").encode())
        os.close(fd)
    except OSError:
        pass
'''


def kind(command: str) -> str:
    """What a venv Python process was, from its command line."""
    words = command.split()
    if "ipykernel_launcher" in command or "kernelapp" in command:
        return "stage kernel"
    if "dataops_kit.runner.stage" in words or any(word.endswith("dataops-run") for word in words):
        return "papermill runner"
    for at, word in enumerate(words):
        if word.endswith("/dvc") or word == "dvc":
            return "dvc " + (words[at + 1] if at + 1 < len(words) else "")
    if "pytest" in command or "exec(eval(sys.stdin.readline()))" in command:  # how execnet starts a worker
        return "pytest"
    return "python " + " ".join(Path(word).name for word in words[1:3])


def accounting(pacct: Path) -> dict:
    """{pid: (command name, CPU seconds, parent pid, forked without exec)} from dump-acct."""
    found = {}
    dumped = subprocess.run(["dump-acct", str(pacct)], capture_output=True, text=True, check=True).stdout
    for line in dumped.splitlines():
        field = [part.strip() for part in line.split("|")]
        # comm | version | user | system | elapsed | uid | gid | memory | io | pid | ppid | flags | ...; in 1/100 s
        found[int(field[9])] = (field[0], (float(field[2]) + float(field[3])) / 100, int(field[10]), "F" in field[11])
    return found


def tally(processes: dict, started: dict):
    """CPU seconds by kind of process, and by test file (a process counts for the test its
    nearest recorded ancestor started in)."""
    by_kind, by_file = collections.Counter(), collections.Counter()
    for pid, (name, cpu, parent, forked) in processes.items():
        if pid in started:
            what = kind(started[pid][1])
        elif forked and parent in started:
            what = "fork of a " + kind(started[parent][1])
        else:
            what = name + " (not the venv's Python)"
        by_kind[what] += cpu
        test, seen, visited = "-", pid, set()
        while seen not in visited:  # a reused pid can make a parent chain loop
            visited.add(seen)
            if started.get(seen, ("-",))[0] != "-":
                test = started[seen][0]
                break
            if seen not in processes:
                break
            seen = processes[seen][2]
        by_file[test.split("::")[0] if test != "-" else "(not traced to a test)"] += cpu
    return by_kind, by_file


def main() -> int:
    args = sys.argv[1:] or DEFAULT
    if os.geteuid() != 0 or not (shutil.which("accton") and shutil.which("dump-acct")):
        print("needs root and process accounting: sudo apt-get install acct, then run this with sudo")
        return 2
    site = Path(sysconfig.get_paths()["purelib"])
    hook, pth = site / "_suite_cpu_hook.py", site / "zz_suite_cpu.pth"
    folder = Path(tempfile.mkdtemp(prefix="suite-cpu-"))
    pacct, log = folder / "pacct", folder / "started.log"
    pacct.touch()
    hook.write_text(HOOK)
    pth.write_text("import _suite_cpu_hook\n")
    began = time.monotonic()
    try:
        subprocess.run(["accton", str(pacct)], check=True, capture_output=True)
        try:
            code = subprocess.run([str(Path(sys.executable).parent / "pytest"), *args],
                                  env={**os.environ, "SUITE_CPU_LOG": str(log)}).returncode
            time.sleep(2)  # processes that end just after their dvc command (kernels)
        finally:
            subprocess.run(["accton", "off"], capture_output=True)
    finally:
        hook.unlink(missing_ok=True)
        pth.unlink(missing_ok=True)
    wall = time.monotonic() - began
    started = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        pid, test, command = line.split("\t", 2)
        started[int(pid)] = (test, command)
    by_kind, by_file = tally(accounting(pacct), started)
    total = sum(by_kind.values())
    print(f"\npytest exited {code}; wall {wall:.0f} s; CPU {total:.0f} s, "
          f"{total / wall / os.cpu_count():.0%} of {os.cpu_count()} cores\n")
    for title, counts in (("kind of process", by_kind), ("test file", by_file)):
        print(f"| {title} | CPU s |\n|---|---:|")
        for what, cpu in counts.most_common(20):
            print(f"| {what} | {cpu:.1f} |")
        print()
    shutil.rmtree(folder)
    return code


if __name__ == "__main__":
    sys.exit(main())
