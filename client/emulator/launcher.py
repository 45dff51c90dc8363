"""``Emulator``: start the emulator from Python (tests, demos) and get its :class:`EmulatorInfo`.

It runs ``python -m client.emulator`` as a subprocess rather than in-process, so the emulator owns
its signals and children exactly as on the command line, and a test can SIGTERM or SIGKILL it.
The emulator's temp dir (certificate and private key) is made inside the launcher's work dir, so
:meth:`Emulator.cleanup` removes it even after a SIGKILL; and on Linux the emulator is killed if
the process that started it dies (start it from the main thread: the signal follows the thread).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from client.emulator.config import EmulatorConfig
from client.emulator.info import EmulatorInfo
from client.emulator.processes import die_with_me

# Beyond the emulator's own startup timeout: its imports, certificate and sockets. The emulator
# gives up first, with a better message (the failing server's log tail).
STARTUP_GRACE_S = 30.0


class EmulatorError(RuntimeError):
    """The emulator exited or was not ready in time; the message holds the end of its output."""


class Emulator:
    """A ``python -m client.emulator`` child process.

    Give a ``config`` (passed as a JSON config file) and/or raw CLI ``args`` (applied on top,
    e.g. ``["--deploy", "shapes-a=80", ...]``); neither means the demo at 50/50. ``env`` is added
    to this process's environment for the emulator, which passes it on to every server (but
    ``AIP_*``). ``workdir`` holds its output, info file and temp dir (default: a temp dir).
    ``startup_timeout`` is the emulator's ``--startup-timeout`` (default: the config's, 300 s).

    Example:
        with Emulator(args=["--deploy", "shapes-a=80", "--deploy", "shapes-b=20"]) as info:
            os.environ.update(info.env())
            aiplatform.init(**info.init_kwargs())
            aiplatform.Endpoint(info.endpoint_id).invoke("/models", b"", {})
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float | None = None,
    ) -> None:
        self.config, self.args, self.env = config, list(args), dict(env or {})
        self.startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._state: Path | None = None
        self.workdir = Path(workdir) if workdir else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: EmulatorInfo | None = None

    @property
    def output_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "emulator.log"

    def output(self, lines: int = 60) -> str:
        """The last lines of the emulator's stdout and stderr (its servers log to their own files)."""
        try:
            text = self.output_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> EmulatorInfo:
        """Start it and wait for its info file; raise :class:`EmulatorError` if it fails."""
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="emulator-run-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        info_file = self.workdir / "info.json"
        info_file.unlink(missing_ok=True)  # a stale one would read as ready at once
        self._state = Path(tempfile.mkdtemp(prefix="state-", dir=self.workdir))
        argv = [sys.executable, "-m", "client.emulator", "--info-file", str(info_file)]
        argv += ["--work-dir", str(self._state)]
        wait = (self.config or EmulatorConfig()).startup_timeout
        if self.startup_timeout is not None:
            wait = self.startup_timeout
            argv += ["--startup-timeout", str(wait)]
        if self.config is not None:
            config_file = self.workdir / "config.json"
            config_file.write_text(json.dumps(self.config.to_dict()))
            argv += ["--config", str(config_file)]
        with self.output_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv + self.args,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_me(),
            )
        deadline = time.monotonic() + wait + STARTUP_GRACE_S
        while not info_file.exists():
            if self.proc.poll() is not None:
                raise EmulatorError(
                    f"the emulator exited with {self.proc.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(f"the emulator was not ready in time:\n{self.output()}")
            time.sleep(0.1)
        self.info = EmulatorInfo.load(info_file)
        return self.info

    def current(self) -> EmulatorInfo:
        """The info file as it is now (the emulator rewrites it when a replica or the split
        changes)."""
        assert self.workdir is not None, "start() first"
        return EmulatorInfo.load(self.workdir / "info.json")

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM it (its replicas drain for up to the grace period, 30 s by default, then it
        closes), SIGKILL after ``timeout``; return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        """Remove the emulator's temp dir, and the work dir if :meth:`start` made it (its output
        log included)."""
        if self._state is not None:
            shutil.rmtree(self._state, ignore_errors=True)
            self._state = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmulatorInfo:
        try:
            return self.start()
        except BaseException:
            self.stop()
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()
