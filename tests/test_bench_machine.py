"""The benchmarks' machine record (bench/_common.py) and their both-ways logic for a forced
OpenBLAS kernel: what the record says, and the child environments built without
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE while this process's environment stays as it is.
No torch: the PyTorch side is described by a stand-in interpreter. The tests never set those
variables in os.environ; they pass environments as dicts."""

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LSCPU_AVX512 = """Architecture:                            x86_64
Vendor ID:                               AuthenticAMD
Model name:                              AMD EPYC 9R14 96-Core Processor
CPU family:                              25
Model:                                   17
Flags:                                   fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512_bf16 avx512_vnni aes sha_ni
"""
LSCPU_AVX2 = """Model name:                              AMD EPYC
CPU family:                              25
Model:                                   1
Flags:                                   fpu sse sse2 fma sse4_2 avx f16c avx2 bmi2 aes
"""
CPUINFO_AMX = """processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8488C
flags		: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 aes
"""


@pytest.fixture(scope="module")
def common():
    """bench/_common.py, loaded without its allocator settings (MINICOMPACTER_MALLOPT=0 while
    it loads), so that this test process is left as it was."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINICOMPACTER_MALLOPT", "0")
        mp.syspath_prepend(str(ROOT / "bench"))
        spec = importlib.util.spec_from_file_location("bench_common_under_test", ROOT / "bench" / "_common.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    assert module.MALLOC_TUNED is False
    return module


def test_cpu_model_and_vector_extensions_from_lscpu(common):
    model, ext = common.cpu_info(LSCPU_AVX512, "")
    assert model == "AMD EPYC 9R14 96-Core Processor (family 25, model 17)"
    assert ext == ["fma", "sse4_2", "avx", "f16c", "avx2", "avx512f", "avx512dq", "avx512_bf16",
                   "avx512_vnni"]                   # not fpu, sse2, aes, sha_ni
    line = common.describe_cpu(model, ext)
    assert "avx512_bf16" in line and "no AVX-512" not in line
    assert common.describe_cpu(*common.cpu_info(LSCPU_AVX2, "")).endswith(
        "vector extensions: fma sse4_2 avx f16c avx2 (no AVX-512)")


def test_cpu_from_proc_cpuinfo_when_lscpu_says_nothing(common):
    model, ext = common.cpu_info("", CPUINFO_AMX)
    assert model == "Intel(R) Xeon(R) Platinum 8488C"
    assert ext == ["avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"]


def test_perf_env_takes_the_relevant_variables_only(common):
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "OMP_PROC_BIND": "close",
               "MKL_DEBUG_CPU_TYPE": "5", "ATEN_CPU_CAPABILITY": "avx2", "KMP_AFFINITY": "compact",
               "MINICOMPACTER_THREADS": "2", "MALLOC_TOP_PAD_": "1", "HOME": "/root", "PATH": "/bin",
               "LANG": "C", common.KERNEL_RUN: "a label"}
    assert list(common.perf_env(environ)) == sorted(
        ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_PROC_BIND", "MKL_DEBUG_CPU_TYPE",
         "ATEN_CPU_CAPABILITY", "KMP_AFFINITY", "MINICOMPACTER_THREADS", "MALLOC_TOP_PAD_"])


def fake_python(tmp_path, payload):
    """An executable that ignores its arguments and prints `payload` as JSON, like the probe."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\necho '{json.dumps(payload)}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_machine_record_has_every_field(common, tmp_path):
    peer = fake_python(tmp_path, {"version": "9.9.9", "threads": 2, "interop": 2, "capability": "AVX512",
                                  "blas": "mkl", "blas_lib": ["Intel(R) oneAPI MKL 2099"], "dnn": []})
    before = dict(os.environ)
    lines = common.machine(["an extra line"], peer_python=peer)
    assert dict(os.environ) == before
    cpu, libs, blas, threads, torch, env, extra = lines
    assert cpu.startswith("CPU: ") and "vector extensions: " in cpu
    assert f"numpy {common.np.__version__}" in libs
    from threadpoolctl import threadpool_info
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas.startswith("NumPy BLAS: ")
    for p in pools:                                  # each pool: library, version, kernel, threads
        assert f"{p['internal_api']} {p['version']}, kernel {p.get('architecture') or '?'}, " in blas
    assert "a pool of" in threads and "threads for the kernels" in threads
    assert torch == ("PyTorch 9.9.9: 2 threads (interop 2), CPU capability AVX512, BLAS mkl "
                     "(Intel(R) oneAPI MKL 2099)")
    assert env.startswith("environment: ")
    for k, v in common.perf_env().items():
        assert f"{k}=" in env
    assert extra == "an extra line"
    assert not any(line.startswith("PyTorch") for line in common.machine())   # no peer, no line


def test_unforced_env_drops_the_forcing_variables_from_a_copy(common):
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576",
               "OPENBLAS_NUM_THREADS": "1", "PATH": "/bin"}
    kept = dict(environ)
    before = dict(os.environ)
    child = common.unforced_env(environ)
    assert child == {"OPENBLAS_NUM_THREADS": "1", "PATH": "/bin"}
    assert environ == kept and dict(os.environ) == before
    assert common.forced_kernel(environ) == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
    assert common.forced_kernel({"PATH": "/bin"}) == {}


def test_kernel_variants_measure_both_ways_only_when_forced(common, monkeypatch):
    """The kernel each child would report is stood in for by whether it sees the variable."""
    monkeypatch.setattr(common, "blas_architecture",
                        lambda env=None, python=None: "Forced" if "OPENBLAS_CORETYPE" in env else "Picked")
    before = dict(os.environ)
    assert common.kernel_variants({"PATH": "/bin"}) == [("", None)]
    assert common.kernel_runs({"PATH": "/bin"}) == []
    environ = {"OPENBLAS_CORETYPE": "Haswell", "PATH": "/bin"}
    (forced, as_is), (picks, child) = common.kernel_variants(environ)
    assert forced == "OpenBLAS kernel as forced by OPENBLAS_CORETYPE=Haswell: Forced"
    assert as_is is None
    assert picks == "the kernel OpenBLAS picks: Picked"
    assert child == {"PATH": "/bin"}
    runs = common.kernel_runs(environ)                 # each_kernel's child environments
    assert [env for _, env in runs] == [
        {"OPENBLAS_CORETYPE": "Haswell", "PATH": "/bin", common.KERNEL_RUN: forced},
        {"PATH": "/bin", common.KERNEL_RUN: picks}]
    assert common.kernel_runs(dict(environ, **{common.KERNEL_RUN: forced})) == []   # no recursion
    assert environ == {"OPENBLAS_CORETYPE": "Haswell", "PATH": "/bin"}
    assert dict(os.environ) == before


def test_blas_architecture_reports_what_threadpoolctl_does(common):
    if common.forced_kernel():
        pytest.skip("this process runs a forced OpenBLAS kernel")
    from threadpoolctl import threadpool_info
    here = {p.get("architecture") or "?" for p in threadpool_info() if p["user_api"] == "blas"}
    # the child imports numpy only, this process may hold SciPy's OpenBLAS too
    got = common.blas_architecture(common.unforced_env())
    assert got != "?" and set(got.split("/")) <= here
    assert common.blas_architecture(python=sys.executable + "-missing") == "?"
