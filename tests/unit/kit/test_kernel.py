"""The numerics every kernel is pinned to, per platform (dataops_kit.runner.kernel)."""

from dataops_kit.runner.kernel import same_bytes_env


def test_the_kernel_pins_what_changed_the_bytes():
    env = same_bytes_env("x86_64", "Linux")
    assert env["OPENBLAS_CORETYPE"] == "Nehalem" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert "-FMA," in env["GLIBC_TUNABLES"] and "-AVX2," in env["GLIBC_TUNABLES"]
    assert "GLIBC_TUNABLES" not in same_bytes_env("AMD64", "Windows")
    assert same_bytes_env("arm64", "Darwin") == {}
    # arm64 Linux: generic ARMV8 kernels, one thread gave one md5 on every profile measured.
    assert same_bytes_env("aarch64", "Linux") == {"OPENBLAS_CORETYPE": "ARMV8", "OPENBLAS_NUM_THREADS": "1"}


def test_the_kernel_mark_is_one_name_in_the_kit_and_in_the_helpers_it_cannot_import():
    from dataops import KERNEL_MARK as read_by_the_helpers
    from dataops_kit.runner.kernel import KERNEL_MARK

    assert read_by_the_helpers == KERNEL_MARK
