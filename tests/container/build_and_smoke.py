#!/usr/bin/env python3
"""Build the serving image and prove it serves as Vertex AI runs it (README: "Container image").

    python3 tests/container/build_and_smoke.py [--engine podman|docker] [--work-dir DIR]
        [--keep-image] [--measure] [--torch-index-url URL] [--base-image IMAGE]

From a bare Debian 12 machine (as root; no Docker, no image registry needed) it installs what it
needs (the project's .venv with the README's set-up command when it is missing; podman, buildah,
runc and debootstrap from Debian's packages), makes a Python 3.11 base image with debootstrap
when there is none, builds the Dockerfile, then runs the image as Vertex does and checks it:
/health, /detect, /segment, /annotate, /stream (a small video made here), /models, the user id,
the HEALTHCHECK command, SIGTERM drain and exit code 0, Vertex's default health route through
AIP_HEALTH_ROUTE, and gs:// weights through AIP_STORAGE_URI read from a GCS API server on this
host (gcp-storage-emulator, loopback, --network host). It prints the build time, the image size,
the versions in the image against this venv's, and each check; it exits 1 on any failure.

With Docker as the engine (``--engine docker``, or found answering ``docker info``) the same
checks run through the docker CLI (BuildKit).

Podman keeps its storage, configuration and temporary files under ``--work-dir``; at the end the
containers are removed and, unless ``--keep-image``, the images and that storage too (``podman
system reset`` on that storage only). ``--measure`` adds the rebuild timings: cached, after an
app/ edit, with another SERVE_MODELS, with another EXTRAS (each from a copy of the build context,
so the work tree is never edited).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
# The README's set-up command (the test extra holds gcp-storage-emulator and the storage client).
VENV_INSTALL = 'python3 -m venv .venv && .venv/bin/pip install -q -c .ci/constraints.txt -e ".[server,emulator,test]"'
LOCAL_BASE = "localhost/vertex-yolo-base:py311-bookworm"
IMAGE = "localhost/vertex-yolo:smoke"
HOST_PACKAGES = ("podman", "buildah", "runc", "debootstrap")
# What the build context holds (.dockerignore's allow-list); copied so a measured edit never
# touches the work tree.
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "LICENSE", "app", "client",
           ".ci/constraints.txt")  # fmt: skip
VERTEX_HEALTH_ROUTE = "/v1/endpoints/E/deployedModels/D:predict"
PATIENCE_S = 300.0  # how long a started container may take to answer (a bound for a hang only)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_venv()  # re-executes this script in the project's venv when run from elsewhere
    smoke = Smoke(args)
    try:
        smoke.run()
    except Failure as exc:
        print(f"FAILED: {exc}", flush=True)
        return 1
    finally:
        smoke.cleanup()
    print(f"OK: every check passed ({smoke.passed} checks)", flush=True)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=("podman", "docker"), help="default: docker if it answers")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "vertex-yolo-container",
        help="podman's storage, configuration and the base's root file system (default: %(default)s)",
    )
    p.add_argument("--keep-image", action="store_true", help="keep the images (and podman storage)")
    p.add_argument("--measure", action="store_true", help="also time the rebuilds")
    p.add_argument(
        "--torch-index-url",
        help="TORCH_INDEX_URL build argument (default: the index pip uses on this host, "
        "whose Linux torch is the CUDA build; give https://download.pytorch.org/whl/cpu for the "
        "Dockerfile's CPU default)",
    )
    p.add_argument(
        "--base-image",
        default=LOCAL_BASE,
        help="BASE_IMAGE build argument; the default is made here with debootstrap when missing "
        "(default: %(default)s; python:3.11-slim needs a registry)",
    )
    p.add_argument("--tag", default=IMAGE, help="the image's tag (default: %(default)s)")
    return p.parse_args(argv)


class Failure(Exception):
    """A check that did not hold, or a step that failed: the message says which."""


def ensure_venv() -> None:
    """Run in the project's venv (it has the server, the storage client and the GCS API server);
    make it with the README's set-up command when it is missing."""
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return
    if not VENV_PYTHON.exists():
        print(f"$ {VENV_INSTALL}", flush=True)
        subprocess.run(VENV_INSTALL, shell=True, cwd=ROOT, check=True)
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


def sh(argv: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True,
       capture: bool = True, cwd: Path | None = None, stdin: bytes | None = None,
       ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command; on failure (with ``check``) raise :class:`Failure` with its output's tail."""
    proc = subprocess.run(
        list(argv),
        env=env,
        cwd=cwd,
        input=stdin.decode() if stdin is not None else None,
        capture_output=capture,
        text=True,
    )
    if check and proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-3000:]
        raise Failure(f"{shlex.join(argv)} exited {proc.returncode}\n{tail}")
    return proc


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.2f} {unit}" if unit == "GB" else f"{n:.0f} {unit}"
        n /= 1000
    raise AssertionError


class Engine:
    """The container engine's CLI (podman or docker), with podman's storage under the work dir."""

    def __init__(self, name: str, work: Path):
        self.name = name
        self.work = work
        self.env = dict(os.environ)
        self.ulimits: list[str] = []
        if name == "podman":
            self.env |= self.podman_config(work)

    def podman_config(self, work: Path) -> dict[str, str]:
        """containers.conf and storage.conf of our own: runc (crun refuses hybrid cgroups),
        cgroupfs and a file events log (no systemd), ulimits this host can grant (no
        CAP_SYS_RESOURCE), storage and temporary files under ``work``."""
        import resource

        work.mkdir(parents=True, exist_ok=True)
        (work / "tmp").mkdir(exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        # (runc refused nproc 65536 under a hard limit of 96367 here; 32768 it grants)
        nofile, nproc = (n if n != resource.RLIM_INFINITY and n < 32768 else 32768
                         for n in (nofile, nproc))  # fmt: skip
        self.ulimits = [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]
        (work / "containers.conf").write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{work}/podman-events.log"\n'
            'runtime = "runc"\n'
            "[containers]\n"
            f"default_ulimits = {json.dumps(self.ulimits)}\n"
            'log_driver = "k8s-file"\n'
        )
        (work / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/storage"\nrunroot = "{work}/run"\n'
        )
        return {
            "CONTAINERS_CONF": str(work / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(work / "storage.conf"),
            "TMPDIR": str(work / "tmp"),
        }

    def __call__(self, *argv: str, check: bool = True, capture: bool = True,
                 stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return sh([self.name, *argv], env=self.env, check=check, capture=capture, stdin=stdin)

    def image_exists(self, ref: str) -> bool:
        return self("image", "inspect", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def choose_engine(wanted: str | None) -> str:
    if wanted:
        return wanted
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return "docker"
    return "podman"


def install_host_packages(engine: str, base_needed: bool) -> None:
    """Debian's own podman, buildah, runc and debootstrap (what is missing); Docker only needs
    debootstrap, and only to make the base."""
    wanted = [p for p in HOST_PACKAGES if engine == "podman" or p == "debootstrap"]
    if engine == "docker" and not base_needed:
        wanted = []
    missing = [p for p in wanted if not shutil.which(p) and not Path("/usr/sbin", p).exists()]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise Failure(f"missing {', '.join(missing)}, and no apt-get to install them")
    print(f"installing {' '.join(missing)} (apt-get)", flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    sh(["apt-get", "update", "-q"], env=env)
    sh(["apt-get", "install", "-y", "-q", *missing], env=env)


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses for bookworm (deb822 or one-line sources)."""
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources"))
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
            if "bookworm" in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt").glob("sources.list.d/*.list")]:
        if path.exists():
            for line in path.read_text().splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
                if m:
                    return m[1]
    return "http://deb.debian.org/debian"


def host_ca_bundle() -> Path | None:
    """The certificate bundle this host's pip trusts (its package index may sit behind a proxy
    with a CA of its own): given to the build as a secret, never copied into an image."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def host_pip_index() -> str:
    """The index pip uses on this host (PIP_INDEX_URL, then pip's configuration, then PyPI)."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True,
        text=True,
    )
    value = proc.stdout.strip()
    return value if proc.returncode == 0 and value else "https://pypi.org/simple"


def make_base(engine: Engine, tag: str) -> float:
    """A Python 3.11 base without a registry: Debian 12 by debootstrap, a venv at /opt/venv
    with a current pip (Debian's pip 23 cannot use the system trust store), imported as ``tag``.
    Returns the seconds it took."""
    start = time.perf_counter()
    rootfs = engine.work / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    mirror = debian_mirror()
    print(f"making the base {tag}: debootstrap bookworm from {mirror}", flush=True)
    sh(["debootstrap", "--variant=minbase",
        "--include=python3,python3-pip,python3-venv,ca-certificates", "bookworm", str(rootfs),
        mirror])  # fmt: skip
    ca = host_ca_bundle()
    chroot_env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        **{k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")},
    }
    pip_args = []
    if ca:  # used for this one download, removed before the import
        shutil.copy(ca, rootfs / "tmp/host-ca.pem")
        pip_args = ["--cert", "/tmp/host-ca.pem"]
    index = host_pip_index()
    sh(["chroot", str(rootfs), "python3", "-m", "venv", "/opt/venv"], env=chroot_env)
    sh(["chroot", str(rootfs), "/opt/venv/bin/pip", "install", "-q", "--no-cache-dir",
        "--index-url", index, *pip_args, "-U", "pip"], env=chroot_env)  # fmt: skip
    for leftover in ("tmp/host-ca.pem",):
        (rootfs / leftover).unlink(missing_ok=True)
    sh(["chroot", str(rootfs), "sh", "-c",
        "apt-get clean && rm -rf /var/lib/apt/lists/* /root/.cache"], env=chroot_env)  # fmt: skip
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
    )
    changes = [
        "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV VIRTUAL_ENV=/opt/venv",
        "ENV LANG=C.UTF-8",
        'CMD ["python"]',
    ]
    importer = subprocess.run(
        [engine.name, "import", *[a for c in changes for a in ("--change", c)], "-", tag],
        stdin=tar.stdout,
        env=engine.env,
        capture_output=True,
        text=True,
    )
    tar.wait()
    if importer.returncode != 0 or tar.returncode != 0:
        raise Failure(f"{engine.name} import of the base failed: {importer.stderr[-2000:]}")
    shutil.rmtree(rootfs)
    return time.perf_counter() - start


class Smoke:
    """The whole run: set-up, build, the checks, clean-up. ``passed`` counts checks that held."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.passed = 0
        self.containers: list[str] = []
        self.storage = None
        self.engine: Engine | None = None
        self.made_base = False
        self.builds = 0

    # -- reporting ------------------------------------------------------------------------------
    def check(self, what: str, ok: bool, detail: str = "") -> None:
        line = f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail else "")
        print(line, flush=True)
        if not ok:
            raise Failure(line)
        self.passed += 1

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> None:
        args = self.args
        name = choose_engine(args.engine)
        local_base = args.base_image == LOCAL_BASE
        install_host_packages(name, base_needed=local_base)
        self.engine = engine = Engine(name, args.work_dir.resolve())
        print(f"engine: {name} ({engine('--version').stdout.strip()})", flush=True)
        if local_base and not engine.image_exists(args.base_image):
            self.made_base = True
            seconds = make_base(engine, args.base_image)
            size = engine.image_size(args.base_image)
            print(f"base {args.base_image}: {seconds:.0f} s, {human(size)}", flush=True)

        context = self.make_context()
        torch_index = args.torch_index_url or host_pip_index()
        seconds = self.build(context, {"TORCH_INDEX_URL": torch_index})
        size = engine.image_size(args.tag)
        print(f"build: {seconds:.1f} s (TORCH_INDEX_URL={torch_index})", flush=True)
        print(f"image {args.tag}: {human(size)}", flush=True)
        self.print_layers()
        self.check_versions()
        self.check_vertex_run()
        self.check_vertex_defaults_and_storage()
        if args.measure:
            self.measure_rebuilds(context, torch_index)

    def make_context(self) -> Path:
        """A copy of the build context (what .dockerignore lets through, and the Dockerfile)."""
        context = self.args.work_dir.resolve() / "context"
        if context.exists():
            shutil.rmtree(context)
        for rel in CONTEXT:
            src, dst = ROOT / rel, context / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dst)
        return context

    def build(self, context: Path, build_args: dict[str, str], tag: str | None = None) -> float:
        """One build of the Dockerfile; returns its seconds. The host's CA bundle goes in as the
        ``pip_ca`` secret and the host's pip index as PIP_INDEX_URL (build-time configuration
        the Dockerfile takes without being edited)."""
        assert self.engine is not None
        build_args = {"BASE_IMAGE": self.args.base_image} | build_args
        if os.environ.get("PIP_INDEX_URL") or host_pip_index() != "https://pypi.org/simple":
            build_args.setdefault("PIP_INDEX_URL", host_pip_index())
        argv = ["build", "-t", tag or self.args.tag]
        if self.engine.name == "podman":
            argv += ["--network", "host"]  # no container network to set up (netavark, iptables)
            argv += ["--format", "docker"]  # the OCI format drops HEALTHCHECK
            # buildah sets its own rlimits (not containers.conf's): ones this host can grant
            argv += [f"--ulimit={u}" for u in self.engine.ulimits]
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        ca = host_ca_bundle()
        if ca:
            argv += ["--secret", f"id=pip_ca,src={ca}"]
        argv.append(str(context))
        env = self.engine.env | ({"DOCKER_BUILDKIT": "1"} if self.engine.name == "docker" else {})
        print(f"$ {self.engine.name} {shlex.join(argv)}", flush=True)
        self.builds += 1
        log = self.args.work_dir.resolve() / f"build-{self.builds}.log"
        start = time.perf_counter()
        with log.open("w") as out:
            proc = subprocess.run([self.engine.name, *argv], env=env, stdout=out, stderr=out)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise Failure(f"build failed ({log}):\n{log.read_text()[-4000:]}")
        text = log.read_text()
        cached = text.count("Using cache") + text.count(" CACHED")  # podman, BuildKit
        print(f"  ({cached} steps from the cache; log {log})", flush=True)
        return seconds

    def print_layers(self) -> None:
        assert self.engine is not None
        out = self.engine("history", "--format", "{{.Size}}\t{{.CreatedBy}}", self.args.tag)
        for line in out.stdout.splitlines():
            size, _, created = line.partition("\t")
            if size.strip() not in ("0B", "0 B", "0"):
                print(f"  layer {size.strip():>9}  {created.strip()[:110]}", flush=True)

    def check_versions(self) -> None:
        """The image runs what the tests ran: torch, torchvision, ultralytics as in this venv."""
        from importlib.metadata import version

        assert self.engine is not None
        names = (
            "torch",
            "torchvision",
            "ultralytics-opencv-headless",
            "numpy",
            "opencv-python-headless",
        )
        probe = (
            "import json, importlib.metadata as m; "
            f"print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
        )
        out = self.engine("run", "--rm", "--network", "host", self.args.tag, "python", "-c", probe)
        image = json.loads(out.stdout.strip().splitlines()[-1])
        for name in names:
            here = version(name)
            # a local label (2.14.1+cpu) is the same release built for another device
            same = image[name].split("+")[0] == here.split("+")[0]
            self.check(f"{name} in the image is the venv's", same, f"{image[name]} (venv {here})")

    # -- running as Vertex does -----------------------------------------------------------------
    def start(self, env: dict[str, str], health: str) -> tuple[str, str]:
        """``run -d`` as Vertex runs the image (its CMD, the AIP_* variables, host network);
        waits until ``health`` answers 200. Returns the container's name and base URL."""
        from servers import free_port

        assert self.engine is not None
        port = free_port()
        name = f"vertex-yolo-smoke-{os.getpid()}-{len(self.containers)}"
        argv = ["run", "-d", "--name", name, "--network", "host"]
        for key, value in ({"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": health} | env).items():
            argv += ["-e", f"{key}={value}"]
        self.engine(*argv, self.args.tag)
        self.containers.append(name)
        url = f"http://127.0.0.1:{port}"
        start = time.perf_counter()
        self.wait_healthy(name, url + health)
        print(f"  {name} healthy at {health} after {time.perf_counter() - start:.1f} s", flush=True)
        return name, url

    def wait_healthy(self, name: str, url: str) -> None:
        import httpx

        assert self.engine is not None
        deadline = time.monotonic() + PATIENCE_S
        while True:
            state = self.engine("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state not in ("running", "created", "configured"):
                logs = self.engine("logs", name, check=False)
                raise Failure(f"{name} is {state}:\n{(logs.stdout + logs.stderr)[-3000:]}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise Failure(f"{url} not healthy after {PATIENCE_S:.0f} s")
            time.sleep(0.5)

    def check_vertex_run(self) -> None:
        """The image's defaults, as Vertex runs a model uploaded with health route /health."""
        import httpx

        from app.config import DEMO_MODELS
        from app.demo.shapes import moving_shape, write_video
        from helpers import encode, scenes

        assert self.engine is not None
        print("run 1: AIP_HEALTH_ROUTE=/health, the bundled demo models", flush=True)
        name, url = self.start({"AIP_DEPLOYED_MODEL_ID": "smoke-1"}, "/health")
        health = httpx.get(url + "/health").json()
        self.check("/health 200 ok", health.get("status") == "ok", json.dumps(health)[:120])
        logs = self.engine("logs", name, check=False)
        found = re.search(r"with (\d+) processes", logs.stdout + logs.stderr)
        expected = min(len(os.sched_getaffinity(0)), 4)  # no CPU quota given to the container
        self.check(
            "a server process per core, at most 4",
            (int(found.group(1)) if found else 1) == expected,
            found.group(0) if found else "one process",
        )

        models = httpx.get(url + "/models").json()["models"]
        names = sorted(m["name"] for m in models)
        demo = sorted(name for name, _ in DEMO_MODELS)  # one per Ultralytics task
        self.check("/models: every demo model", names == demo, ", ".join(names))

        image, shapes = scenes(1)[0]
        png = {"content": encode(image), "headers": {"Content-Type": "image/png"}}
        r = httpx.post(url + "/detect", **png, timeout=60)
        found = sorted(d["class_name"] for d in r.json()["results"][0]["detections"])
        drawn = sorted(s.name for s in shapes)
        self.check("/detect", r.status_code == 200 and found == drawn, f"{found} (drawn {drawn})")
        self.check(
            "X-Deployed-Model-Id", r.headers.get("x-deployed-model-id") == "smoke-1",
            r.headers.get("x-deployed-model-id", ""),
        )  # fmt: skip
        r = httpx.post(url + "/segment", **png, timeout=60)
        masks = [d for d in r.json()["results"][0]["detections"] if d["mask"]["polygons"]]
        self.check("/segment", r.status_code == 200 and len(masks) == len(shapes),
                   f"{len(masks)} masks")  # fmt: skip
        r = httpx.post(url + "/annotate?format=png", **png, timeout=60)
        self.check(
            "/annotate",
            r.status_code == 200 and r.content.startswith(b"\x89PNG")
            and r.headers.get("x-detection-count") == str(len(shapes)),
            f"PNG {len(r.content)} bytes, {r.headers.get('x-detection-count')} detections",
        )  # fmt: skip

        video = self.args.work_dir.resolve() / "clip.mp4"
        write_video(video, (frame for frame, _ in moving_shape(12)))
        events = self.stream(url, video.read_bytes(), "track=bytetrack")
        frames = [e for e in events if e[0] == "frame"]
        end = [json.loads(d) for kind, d in events if kind == "end"]
        tracks = end[0].get("tracks") if end else None
        self.check("/stream", len(frames) == 12 and tracks == 1,
                   f"{len(frames)} frame events, end {end[0] if end else None}")  # fmt: skip

        uid = self.engine("exec", name, "id", "-u").stdout.strip()
        self.check("runs as uid 1000", uid == "1000", f"id -u: {uid}")
        self.check_healthcheck(name)
        self.check_sigterm_drain(name, url)

    def stream(self, url: str, body: bytes, query: str = "") -> list[tuple[str, str]]:
        """POST /stream; the (event, data) pairs of the whole answer."""
        import httpx

        events: list[tuple[str, str]] = []
        headers = {"Content-Type": "video/mp4"}
        with httpx.stream("POST", f"{url}/stream?{query}", content=body, headers=headers,
                          timeout=120) as r:  # fmt: skip
            if r.status_code != 200:
                raise Failure(f"/stream answered {r.status_code}: {r.read()[:300]!r}")
            kind = "message"
            for line in r.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((kind, line[5:].strip()))
                    kind = "message"
        return events

    def check_healthcheck(self, name: str, route: str = "/health") -> None:
        """The image's HEALTHCHECK: kept in the image (podman's OCI format drops it), and its
        command run in the container (``podman healthcheck run``; Docker: exec its command)."""
        assert self.engine is not None
        config = json.loads(
            self.engine("inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout
        )
        test = (config or {}).get("Test") or []
        self.check("HEALTHCHECK in the image", test[1:] == ["python", "-m", "app", "--healthcheck"],
                   json.dumps(test))  # fmt: skip
        if self.engine.name == "podman":
            proc = self.engine("healthcheck", "run", name, check=False)
            detail = f"podman healthcheck run: exit {proc.returncode} {proc.stdout.strip()}"
        else:
            proc = self.engine("exec", name, *test[1:], check=False)
            detail = f"docker exec {' '.join(test[1:])}: exit {proc.returncode}"
        self.check(f"HEALTHCHECK healthy ({route})", proc.returncode == 0, detail)

    def check_sigterm_drain(self, name: str, url: str) -> None:
        """SIGTERM (``stop``) while a stream is in flight: the stream ends with the problem 503
        ``shutting-down`` after the frames already computed, and the container exits 0."""
        import httpx

        from app.demo.shapes import moving_shape, write_video

        assert self.engine is not None
        video = self.args.work_dir.resolve() / "long.mp4"
        write_video(video, (frame for frame, _ in moving_shape(600)))
        events: list[tuple[str, str]] = []
        headers = {"Content-Type": "video/mp4"}
        stopper: subprocess.Popen[str] | None = None
        with httpx.stream("POST", url + "/stream", content=video.read_bytes(), headers=headers,
                          timeout=120) as r:  # fmt: skip
            kind = "message"
            for line in r.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((kind, line[5:].strip()))
                    if kind == "frame" and stopper is None:  # the gate: a frame is out
                        stopper = subprocess.Popen(
                            [self.engine.name, "stop", "-t", "60", name],
                            env=self.engine.env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            text=True,
                        )
                    kind = "message"
        assert stopper is not None
        stopper.wait()
        last_kind, last = events[-1]
        problem = json.loads(last) if last_kind == "error" else {}
        frames = sum(1 for kind, _ in events if kind == "frame")
        self.check(
            "SIGTERM drains the stream in flight",
            problem.get("code") == "shutting-down" and 0 < frames < 600,
            f"{frames} frames, then {last_kind} {problem.get('code')}",
        )
        code = self.engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        self.check("exit code after SIGTERM", code == "0", code)
        logs = self.engine("logs", name, check=False)
        tail = [line for line in (logs.stdout + logs.stderr).splitlines() if line][-1:]
        print(f"  last log line: {tail[0][:200] if tail else ''}", flush=True)

    def check_vertex_defaults_and_storage(self) -> None:
        """Vertex's default health route (a model uploaded without one) and weights from the
        model's artifact URI: AIP_STORAGE_URI=gs://..., read from the GCS API server here."""
        import httpx

        from helpers import encode, scenes
        from servers import start_storage

        work = self.args.work_dir.resolve()
        self.storage = start_storage(work / "gcs.log")
        os.environ["STORAGE_EMULATOR_HOST"] = self.storage.url
        from google.cloud import storage

        client = storage.Client()
        bucket = client.create_bucket("artifacts")
        weights = ROOT / "app/demo/weights/shapes-detect.pt"
        bucket.blob("model-a/from-gcs.pt").upload_from_filename(str(weights))
        print(f"run 2: AIP_HEALTH_ROUTE={VERTEX_HEALTH_ROUTE}, "
              f"AIP_STORAGE_URI=gs://artifacts/model-a ({self.storage.url})", flush=True)  # fmt: skip
        env = {
            "AIP_STORAGE_URI": "gs://artifacts/model-a",
            "STORAGE_EMULATOR_HOST": self.storage.url,
            "AIP_DEPLOYED_MODEL_ID": "smoke-2",
        }
        name, url = self.start(env, VERTEX_HEALTH_ROUTE)
        r = httpx.get(url + VERTEX_HEALTH_ROUTE)
        self.check(f"{VERTEX_HEALTH_ROUTE} 200", r.status_code == 200, r.text[:100])
        r = httpx.get(url + "/health")
        self.check("/health is not the health route", r.status_code == 404, str(r.status_code))
        models = httpx.get(url + "/models").json()["models"]
        names = [m["name"] for m in models]
        self.check("/models serves the gs:// weights", names == ["from-gcs"], ", ".join(names))
        image, shapes = scenes(2)[1]
        r = httpx.post(url + "/detect", content=encode(image),
                       headers={"Content-Type": "image/png"}, timeout=60)  # fmt: skip
        found = sorted(d["class_name"] for d in r.json()["results"][0]["detections"])
        drawn = sorted(s.name for s in shapes)
        self.check("/detect with the gs:// model", r.status_code == 200 and found == drawn,
                   f"{r.headers.get('x-model-name')}: {found}")  # fmt: skip
        self.check_healthcheck(name, VERTEX_HEALTH_ROUTE)
        assert self.engine is not None
        start = time.perf_counter()
        self.engine("stop", "-t", "60", name)
        code = self.engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        self.check("idle stop", code == "0", f"exit {code} in {time.perf_counter() - start:.1f} s")

    # -- rebuild timings ------------------------------------------------------------------------
    def measure_rebuilds(self, context: Path, torch_index: str) -> None:
        """Rebuild timings, each from the context as the step before left it."""
        assert self.engine is not None
        base = {"TORCH_INDEX_URL": torch_index}
        tag = self.args.tag + "-variant"
        seconds = self.build(context, base)
        print(f"rebuild, nothing changed: {seconds:.1f} s", flush=True)
        pins = context / ".ci/constraints.txt"
        stamp = time.time()  # each edit new, so no earlier run's layers match it
        pins.write_text(pins.read_text() + f"# a change to the tests' pins {stamp}\n")
        seconds = self.build(context, base, tag)
        print(f"rebuild after a change in the tests' pins: {seconds:.1f} s", flush=True)
        init = context / "app/__init__.py"
        init.write_text(init.read_text() + f"\n# an edit {stamp}\n")
        seconds = self.build(context, base, tag)
        print(f"rebuild after an app/ edit: {seconds:.1f} s", flush=True)
        seconds = self.build(context, base | {"SERVE_MODELS": "cfg=yolo11n.yaml"}, tag)
        print(f"rebuild with SERVE_MODELS=cfg=yolo11n.yaml: {seconds:.1f} s", flush=True)
        seconds = self.build(context, base | {"EXTRAS": "server,export"}, tag)
        size = self.engine.image_size(tag)
        print(
            f"rebuild with EXTRAS=server,export: {seconds:.1f} s, image {human(size)}", flush=True
        )

    # -- clean-up -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        engine = self.engine
        if self.storage is not None:
            self.storage.stop()
        if engine is None:
            return
        for name in self.containers:
            engine("rm", "-f", name, check=False)
        if self.args.keep_image:
            print(f"kept {self.args.tag} (and {engine.name}'s storage)", flush=True)
            return
        if engine.name == "podman":
            engine("system", "reset", "-f", check=False)
            shutil.rmtree(engine.work, ignore_errors=True)
        else:
            engine("rmi", "-f", self.args.tag, self.args.tag + "-variant", check=False)
            if self.made_base:
                engine("rmi", "-f", self.args.base_image, check=False)
        print("cleaned up: containers and images removed", flush=True)


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
