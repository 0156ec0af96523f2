"""What comes back from the sandbox is bounded (dataops_kit.teach.sandbox.bounded_run), whatever a run writes."""

import resource

from dataops_kit.teach import sandbox


def test_a_run_that_floods_its_output_costs_the_host_only_the_last_megabyte():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ran = sandbox.bounded_run(["sh", "-c", "cat; head -c 200000000 /dev/zero | tr '\\0' x; echo; echo '{\"code\": 0}';"
                               "head -c 100000000 /dev/zero >&2"], "asked\n", 120)
    assert ran.returncode == 0 and ran.stdout.endswith('\n{"code": 0}\n') and "asked" not in ran.stdout
    assert len(ran.stdout) == len(ran.stderr) == sandbox.OUTPUT_BYTES
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB: far under the 300 MB sent
