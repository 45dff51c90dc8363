"""``Emulator``: start the emulator from Python (tests, demos) and get its :class:`EmulatorInfo`.

It runs ``python -m client.emulator`` as a subprocess rather than in-process, so the emulator owns
its signals and children exactly as on the command line, and a test can SIGTERM or SIGKILL it.
"""

from __future__ import annotations

import json
import os
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


class EmulatorError(RuntimeError):
    """The emulator exited or was not ready in time; the message holds the end of its output."""


class Emulator:
    """A ``python -m client.emulator`` child process.

    Give a ``config`` (passed as a JSON config file) and/or raw CLI ``args`` (applied on top,
    e.g. ``["--deploy", "shapes-a=80", ...]``); neither means the demo at 50/50. ``env`` is added
    to this process's environment for the emulator, which passes it on to every server.

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
        startup_timeout: float = 300.0,
    ) -> None:
        self.config, self.args, self.env = config, list(args), dict(env or {})
        self.startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
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
        argv = [sys.executable, "-m", "client.emulator", "--info-file", str(info_file)]
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
            )
        deadline = time.monotonic() + self.startup_timeout
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

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM it (it stops its servers), SIGKILL after ``timeout``; return its exit code."""
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
        """Remove the temp dir made by :meth:`start` (its output log included)."""
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
