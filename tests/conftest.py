"""Shared fixtures: real ``python -m app`` processes on free ports, and shape images."""

from __future__ import annotations

import os

# No test looks for Google credentials on a metadata server (google-auth reads this on import):
# Beam's GCS IO, for one, calls google.auth.default(), which would probe 169.254.169.254.
os.environ.setdefault("NO_GCE_CHECK", "true")
# One OpenMP thread in the workers and what they start (set before torch is imported): two
# workers share the cores, and a team of two in each only spins (app/threads.py; the servers set
# it themselves, and the benchmarks and tests that need more set their torch thread counts).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib  # noqa: E402
import importlib.util  # noqa: E402
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.emulator import EmulatorInfo
from servers import (  # noqa: F401 (for the tests)
    ALL_MODELS,
    INSTRUMENTED,
    PATIENCE_S,
    ROOT,
    WEIGHTS,
    Gate,
    Server,
    free_port,
    gate_of,
    metric,
    serving,
    start_server,
    start_storage,
    wait_until,
)

BUS_JPG = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"

# How the two xdist workers share the files (``pytest_xdist_make_scheduler`` below): a file at a
# time, as ``--dist loadfile``, except that every file using the session's emulator (three
# replica servers and the emulator: about 15 s of CPU to start) runs on one worker, which starts
# it once. The units go out longest first (a file not listed counts 1 s), so that no long
# file is left for one worker alone at the end. Seconds per file (6 s or more): summed test
# times of a whole run on 2026-12-07, 544 s in all (the machine's speed drifts; the order is
# what matters).
SECONDS = {
    "test_packaging.py": 58,
    "test_formats.py": 36,
    "test_rollout.py": 36,
    "test_video.py": 35,
    "test_fleet.py": 32,
    "test_batch.py": 30,
    "test_bench.py": 28,
    "test_stream.py": 23,
    "test_beam.py": 22,
    "test_emulator.py": 21,
    "test_client.py": 18,
    "test_batching.py": 18,
    "test_deploy.py": 17,
    "test_cli.py": 15,
    "test_ab.py": 15,
    "test_lifecycle.py": 14,
    "test_shutdown.py": 14,
    "test_processes.py": 14,
    "test_soak.py": 13,
    "test_console.py": 12,
    "test_decode.py": 11,
    "test_bad_input.py": 9,
    "test_tasks.py": 8,
    "test_layout.py": 8,
    "test_big_images.py": 7,
    "test_first_hour.py": 7,
    "test_storage.py": 7,
}
#: the files whose tests use ``emulator_process``: checked at collection, so a file that starts
#: using it and is not named here stops the run rather than starting a second emulator.
SHARE_THE_EMULATOR = frozenset(
    {
        "test_ab.py",
        "test_beam.py",
        "test_batch.py",
        "test_bench.py",
        "test_big_images.py",
        "test_cli.py",
        "test_client.py",
        "test_console.py",
        "test_emulator.py",
        "test_fleet.py",
        "test_names_and_resume.py",
        "test_storage.py",
        "test_tasks.py",
        "test_video.py",
    }
)
EMULATOR_UNIT = "the session emulator's files"


def work_unit(file_name: str) -> str:
    """The unit a worker takes whole: the emulator's files together, any other file alone."""
    return EMULATOR_UNIT if file_name in SHARE_THE_EMULATOR else file_name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    using = {i.path.name for i in items if "emulator_process" in getattr(i, "fixturenames", ())}
    if using - SHARE_THE_EMULATOR:
        raise pytest.UsageError(
            "tests/conftest.py: SHARE_THE_EMULATOR must name every file whose tests use the "
            f"session emulator: add {sorted(using - SHARE_THE_EMULATOR)}"
        )
    collected = {item.path.name for item in items}
    seconds: dict[str, int] = {}
    for name in collected:
        seconds[work_unit(name)] = seconds.get(work_unit(name), 0) + SECONDS.get(name, 1)

    def rank(item: pytest.Item) -> tuple[int, str]:
        unit = work_unit(item.path.name)
        return -seconds[unit], unit

    items.sort(key=rank)  # stable: each file's own order is kept


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the work units above, handed out in the collection's order."""
    if config.getoption("dist") != "loadfile":
        return None  # another mode asked for on the command line: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(Path(nodeid.split("::", 1)[0]).name)

    config.option.loadscopereorder = False  # xdist would otherwise sort units by test count
    return Scheduler(config, log)


# The suite runs many servers at once on few cores (two workers, emulators with replicas):
# servers that each spin an OpenMP team over every core slow one another down many times over,
# so, as the emulator does for its replicas, each test server gets one torch thread and one
# inference thread, in one process (each process more is a second start: torch, the models).
# Speed is not what the tests check; the session's `server` runs the server's own policy, two
# processes here (test_threads, test_processes).
os.environ.setdefault("SERVE_TORCH_THREADS", "1")
os.environ.setdefault("SERVE_WORKERS", "1")
os.environ.setdefault("SERVE_PROCESSES", "1")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default configuration: the bundled demo models, the server's own thread policy."""
    env = {
        "AIP_DEPLOYED_MODEL_ID": "dm-test-1",
        "SERVE_MAX_IMAGES": "8",
        # the server's own policy
        **{"SERVE_TORCH_THREADS": "", "SERVE_WORKERS": "", "SERVE_PROCESSES": ""},
        "SERVE_MODELS": ALL_MODELS,  # every demo model (the default)
    }
    with serving(tmp_path_factory.mktemp("server"), env) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


# --- The local Vertex AI dedicated endpoint (client/emulator) ---------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A GCS JSON API server for the session (``gcp-storage-emulator``, in memory), and a
    ``google.cloud.storage.Client`` on it: ``STORAGE_EMULATOR_HOST`` is set for the whole
    session, so every server a test starts reads from it too. Buckets: ``inputs`` (servers
    started by the fixtures here allow it), ``weights``, ``outputs``; tests add objects under a
    prefix of their own."""
    from google.cloud import storage

    server = start_storage(tmp_path_factory.mktemp("gcs") / "gcs.log")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", server.url)
        client = storage.Client()
        for bucket in ("inputs", "weights", "outputs"):
            client.create_bucket(bucket)
        yield client
    server.stop()


@pytest.fixture(scope="session")
def emulator(emulator_process: Any) -> EmulatorInfo:
    """A running ``python -m client.emulator``, for the real SDK: the demo server deployed as
    ``shapes-a`` (80 %, on two replicas) and ``shapes-b`` (20 %,
    ``SERVE_DEFAULT_MODEL=shapes-segment``, so its /detect runs the segmentation weights).
    ``shapes-a``'s replicas run the instrumented server (``tests/instrumented_app.py``), each
    with a gate of its own, open unless a test holds it (``shapes_a_gates``).

    Yields a :class:`client.emulator.EmulatorInfo`: ``project``, ``location``, ``endpoint_id``,
    ``endpoint`` (resource name), ``control_plane_url``, ``dedicated_endpoint_dns``, ``ca_cert``,
    ``deployed_models`` (name -> id), ``traffic_split`` (id -> percent), ``pid``, ``servers`` and
    ``server_pids`` (name -> url / pid of its first replica), ``replicas`` (deployed model id ->
    its replicas); ``info.init_kwargs()`` are the ``aiplatform.init``
    arguments and ``info.env()`` the environment below. For the whole session
    ``REQUESTS_CA_BUNDLE`` names its certificate and ``NO_PROXY`` covers loopback (requests reads
    both per request, so ``Endpoint.invoke`` works). Tests that change the traffic split must
    restore it (and a test that kills a replica waits for it to be ready again:
    ``emulator_process.current()`` is the info as it is now). Teardown stops it with SIGTERM and
    fails if any server process survives.
    """
    info: EmulatorInfo = emulator_process.info
    return info


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory: pytest.TempPathFactory, gcs: Any) -> Iterator[Any]:
    """The :class:`client.emulator.Emulator` behind ``emulator``."""
    from client.emulator import Emulator

    workdir = tmp_path_factory.mktemp("emulator")
    emu = Emulator(
        args=[
            *("--deploy", "shapes-a=80", "--deploy", "shapes-b=20", "--replicas", "shapes-a=2"),
            *("--command", f"shapes-a={' '.join(INSTRUMENTED)}", "--probe-interval", "0.5"),
            # restarted at once however often: tests kill shapes-a's replicas on purpose, and
            # the back-off (10 s, doubling until a replica has stayed up 10 minutes) would make
            # each later kill's restart wait longer
            *("--restart-backoff", "0"),
            *("--env", "shapes-a:TEST_GATE_PORT=0"),
            *("--env", "shapes-b:SERVE_DEFAULT_MODEL=shapes-segment"),
            *("--env", "shapes-a:SERVE_ALLOWED_BUCKETS=inputs"),
            *("--env", "shapes-b:SERVE_ALLOWED_BUCKETS=inputs"),
            *("--log-dir", str(workdir / "logs")),
        ],
        # As start_server: Ultralytics offline, with its own config dir (inherited by the servers).
        env={"YOLO_CONFIG_DIR": str(workdir / "yolo-config"), "PYTHONUNBUFFERED": "1"},
        workdir=workdir,
        startup_timeout=240,
    )
    with emu as info, pytest.MonkeyPatch.context() as patch:
        for key, value in info.env().items():
            patch.setenv(key, value)
        yield emu
        pids = emu.current().pids()  # every replica now (a restarted one has a new pid)
    survivors = [pid for pid in pids if pid_alive(pid)]
    assert emu.proc is not None and emu.proc.returncode == 0, emu.output()
    assert not survivors, f"server processes outlived the emulator: {survivors}"


@pytest.fixture
def shapes_a_gates(emulator_process: Any) -> Iterator[Callable[[], list[Gate]]]:
    """The gates of the session emulator's ``shapes-a`` replicas, as a function that reads them
    from the replicas there are now (a killed replica comes back with a gate of its own). The
    counts a gate reports are since its replica started: compare with counts taken before.
    Before the test and after it both replicas are ready; afterwards every gate is open (first
    those that answer, so that a gate a failed test left closed holds nothing up), as the next
    test expects."""
    a = emulator_process.info.deployed_models["shapes-a"]

    def gates() -> list[Gate]:
        return [gate_of(replica.log) for replica in emulator_process.current().replicas[a]]

    def ready() -> bool:
        replicas = emulator_process.current().replicas[a]
        return all(r.state == "ready" and r.pid and pid_alive(r.pid) for r in replicas)

    def open_all() -> None:
        for gate in gates():
            with contextlib.suppress(httpx.TransportError):  # a replica not up (yet)
                gate.open()

    wait_until(ready, "shapes-a's replicas to be ready")
    try:
        yield gates
    finally:
        open_all()
        wait_until(ready, "shapes-a's replicas to be ready")
        open_all()


@pytest.fixture(scope="session")
def emulator_info_file(emulator: EmulatorInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The emulator's info file, for ``--emulator-info``."""
    path = tmp_path_factory.mktemp("emulator-info") / "emulator.json"
    emulator.write(path)
    return path
