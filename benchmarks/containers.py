"""Container benchmarks: the support image's size, its build times, and how soon a service in it
is healthy; the replay image's size beside it.

    python -m benchmarks.containers [--quick] [--out PATH] [--only GROUP,...] [--base-image IMAGE]

Groups (all by default):

* ``size``: the support image's size against its 300 MB limit (a target), and the replay image's;
* ``build``: a cold build (``--no-cache``: every package downloaded and installed again), a warm
  build (nothing changed: the build cache answers every step) and a code-change build (a module
  edited in a copy of the build context: only the project layer is rebuilt), medians of a few;
* ``run``: ``docker run`` of the metrics service (hardened as compose runs it) to the first 200
  from its ``/health`` (polled every 20 ms from the host), and to Docker's own ``healthy``
  (checked every 250 ms with ``--health-interval``: ``--health-start-interval`` needs Docker
  API 1.44), medians of a few.

Images are built from ``--base-image`` (default ``$QUAYSIDE_BASE_IMAGE``, else the offline
``local/debian:bookworm`` when the engine has it, else ``python:3.11-slim``) with host networking,
under tags of their own, removed afterwards with every intermediate image their cold builds made.
Prints one table and writes the result file (default ``benchmarks/results/containers.json``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from benchmarks._common import machine_info, skipped, write_result

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("size", "build", "run")
SUPPORT_DOCKERFILE = "support/Dockerfile"
REPLAY_DOCKERFILE = "docker/replay.Dockerfile"
MAX_SUPPORT_BYTES = 300_000_000
IMAGE_UID = 10001  # the support image's own user (support/Dockerfile)

# name: (full, quick)
PLAN = {"cold_builds": (3, 1), "warm_builds": (5, 3), "code_builds": (3, 2), "runs": (5, 3)}


def plan(quick: bool) -> dict:
    return {k: v[1] if quick else v[0] for k, v in PLAN.items()}


def docker(*args: str, timeout: float = 600.0, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def default_base_image() -> str:
    if os.environ.get("QUAYSIDE_BASE_IMAGE"):
        return os.environ["QUAYSIDE_BASE_IMAGE"]
    local = subprocess.run(["docker", "image", "inspect", "local/debian:bookworm"], capture_output=True, timeout=60)
    return "local/debian:bookworm" if local.returncode == 0 else "python:3.11-slim"


class Builder:
    """Builds under tags of its own; remembers every image a build made, to remove them all."""

    def __init__(self, base_image: str):
        self.base_image = base_image
        self.tags: list[str] = []
        self.made: list[str] = []  # intermediate and final image ids of --no-cache builds

    def build(self, dockerfile: str, *, context: Path = ROOT, no_cache: bool = False) -> tuple[str, float]:
        tag = f"quayside-bench:{uuid.uuid4().hex[:10]}"
        cmd = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={self.base_image}", "-f"]
        cmd += [str(context / dockerfile), "-t", tag, *(["--no-cache"] if no_cache else []), str(context)]
        started = time.perf_counter()
        out = docker(*cmd, timeout=3600.0)
        seconds = time.perf_counter() - started
        self.tags.append(tag)
        if no_cache:
            self.made += re.findall(r"^ ---> ([0-9a-f]{12})$", out, re.M)
        return tag, seconds

    def size(self, tag: str) -> int:
        return int(docker("image", "inspect", tag, "--format", "{{.Size}}").strip())

    def cleanup(self) -> None:
        for tag in self.tags:  # keep parents: they are the cache of the next warm build
            docker("rmi", "--no-prune", tag, check=False)
        for image in reversed(self.made):  # but a cold build's images are ours alone
            docker("rmi", image, check=False)


def context_copy(dest: Path) -> Path:
    """The build context (what .dockerignore lets through) copied, with one module edited."""
    for name in ("pyproject.toml", "README.md", "requirements.lock", "requirements-support.lock"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for name in ("quayside", "core", "support"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    (dest / "docker").mkdir()
    for name in ("healthcheck.py", "replay.Dockerfile"):
        shutil.copy2(ROOT / "docker" / name, dest / "docker" / name)
    shutil.copy2(ROOT / ".dockerignore", dest / ".dockerignore")
    with open(dest / "support" / "common" / "logs.py", "a") as f:
        f.write(f"\n# edited by the benchmark {uuid.uuid4().hex}\n")
    return dest


def summary(samples: list[float]) -> dict:
    return {
        "seconds_median": round(statistics.median(samples), 3),
        "seconds_max": round(max(samples), 3),
        "detail": {"runs": len(samples), "seconds": [round(s, 3) for s in samples]},
    }


def run_size(builder: Builder, rows: list[dict], tags: dict[str, str]) -> None:
    for image, dockerfile in (("support", SUPPORT_DOCKERFILE), ("replay", REPLAY_DOCKERFILE)):
        if image not in tags:
            tags[image], _ = builder.build(dockerfile)
        size = builder.size(tags[image])
        row = {"name": f"{image} image size", "key": f"{image}_image_size", "group": "size"}
        row |= {"value": round(size / 1e6, 1), "unit": "MB", "better": "lower", "detail": {"bytes": size}}
        if image == "support":
            row |= {"target": "< 300 MB", "verdict": "PASS" if size < MAX_SUPPORT_BYTES else "FAIL"}
        rows.append(row)


def run_build(builder: Builder, rows: list[dict], tags: dict[str, str], cfg: dict) -> None:
    cold = [builder.build(SUPPORT_DOCKERFILE, no_cache=True)[1] for _ in range(cfg["cold_builds"])]
    rows.append({"name": "support image: cold build", "key": "build_cold", "group": "build", **summary(cold)})
    tags["support"], _ = builder.build(SUPPORT_DOCKERFILE)  # the cache as the cold builds left it
    warm = [builder.build(SUPPORT_DOCKERFILE)[1] for _ in range(cfg["warm_builds"])]
    rows.append(
        {"name": "support image: warm build (no change)", "key": "build_warm", "group": "build", **summary(warm)}
    )
    code = []
    for _ in range(cfg["code_builds"]):
        with tempfile.TemporaryDirectory(prefix="quayside-bench-context-") as tmp:
            code.append(builder.build(SUPPORT_DOCKERFILE, context=context_copy(Path(tmp)))[1])
    row = {"name": "support image: build after a code change", "key": "build_code", "group": "build", **summary(code)}
    rows.append(row)


def _health_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def run_healthy(builder: Builder, rows: list[dict], tags: dict[str, str], cfg: dict) -> None:
    import socket

    from quayside.core.feed.ring import FeedWriter

    if "support" not in tags:
        tags["support"], _ = builder.build(SUPPORT_DOCKERFILE)
    shm = Path("/dev/shm") / f"quayside-bench-{uuid.uuid4().hex[:10]}"
    shm.mkdir()
    os.chown(shm, -1, IMAGE_UID)
    shm.chmod(0o2770)  # rings made here belong to the image user's group
    writer = FeedWriter(shm / "feed", 1 << 12)
    answered, healthy = [], []
    try:
        for _ in range(cfg["runs"]):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            name = f"quayside-bench-{uuid.uuid4().hex[:10]}"
            cmd = ["run", "-d", "--rm", "--name", name, "--network", "host", "--init", "--read-only"]
            cmd += ["--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]
            cmd += ["-v", "/dev/shm:/dev/shm", "-e", f"QUAYSIDE_FEED__RING={shm / 'feed'}"]
            cmd += ["-e", f"QUAYSIDE_HTTP__PORT={port}", "--health-start-period", "60s"]
            cmd += ["--health-interval", "250ms", tags["support"], "metrics"]
            started = time.perf_counter()
            docker(*cmd)
            try:
                first = None
                while True:
                    if first is None and _health_ok(port):
                        first = time.perf_counter() - started
                    status = docker("inspect", name, "--format", "{{.State.Health.Status}}").strip()
                    if status == "healthy":
                        healthy.append(time.perf_counter() - started)
                        answered.append(first if first is not None else healthy[-1])
                        break
                    if status == "unhealthy" or time.perf_counter() - started > 120:
                        raise RuntimeError(f"{name} is {status}: {docker('logs', name, check=False)[-2000:]}")
                    time.sleep(0.02)
            finally:
                docker("rm", "-f", name, check=False)
    finally:
        writer.close()
        shutil.rmtree(shm, ignore_errors=True)
    rows.append({"name": "docker run → /health 200", "key": "run_to_health", "group": "run", **summary(answered)})
    rows.append({"name": "docker run → healthy", "key": "run_to_healthy", "group": "run", **summary(healthy)})


def format_table(rows: list[dict]) -> str:
    head = ["benchmark", "median", "max", "runs", "target", "verdict"]
    body = []
    for r in rows:
        if "value" in r:
            median, most, runs = f"{r['value']:g} {r['unit']}", "", ""
        else:
            median, most, runs = f"{r['seconds_median']:.2f} s", f"{r['seconds_max']:.2f} s", str(r["detail"]["runs"])
        body.append([r["name"], median, most, runs, r.get("target", ""), r.get("verdict", "")])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in (1, 2, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.containers", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer builds and runs (one cold build)")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "containers.json",
        help="JSON result file (default: benchmarks/results/containers.json)",
    )
    p.add_argument("--only", metavar="GROUP,...", help=f"run only these groups: {', '.join(GROUPS)}")
    p.add_argument("--base-image", help="base image to build from (default: see the module's help)")
    args = p.parse_args(argv)
    args.groups = list(GROUPS)
    if args.only:
        args.groups = [g.strip() for g in args.only.split(",") if g.strip()]
        unknown = sorted(set(args.groups) - set(GROUPS))
        if unknown:
            p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return skipped(args.out, "containers", "no Docker engine (run `bash .ci/docker.sh` and export its DOCKER_HOST)")
    cfg = plan(args.quick)
    started = time.time()
    machine = machine_info(ROOT)
    builder = Builder(args.base_image or default_base_image())
    rows: list[dict] = []
    errors: list[dict] = []
    tags: dict[str, str] = {}
    runners = {
        "build": lambda: run_build(builder, rows, tags, cfg),  # first: its cold builds leave the cache warm
        "size": lambda: run_size(builder, rows, tags),
        "run": lambda: run_healthy(builder, rows, tags, cfg),
    }
    try:
        for group in [g for g in runners if g in args.groups]:
            print(f"{group} ...", file=sys.stderr, flush=True)
            try:
                runners[group]()
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                errors.append({"group": group, "error": str(exc)})
                print(f"{group}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: removing the benchmark's images", file=sys.stderr)
        return 130
    finally:
        builder.cleanup()
    machine["loadavg_at_end"] = list(os.getloadavg())
    size = next((r for r in rows if r["key"] == "support_image_size"), None)
    targets = [
        {
            "id": "support-image-size",
            "description": "the support image is under 300 MB",
            "verdict": size["verdict"] if size else "NOT RUN",
            "evidence": f"{size['value']} MB from {builder.base_image}" if size else "the size group did not run",
        }
    ]
    print()
    print(format_table(rows))
    print()
    for t in targets:
        print(f"{t['verdict']:<8} {t['id']}: {t['description']} ({t['evidence']})")
    notes = [
        f"built from {builder.base_image} with the legacy builder and --network host",
        "build and run times include this machine's load (loadavg in machine); compare medians of one run",
    ]
    result = {
        "benchmark": "containers",
        "quick": args.quick,
        "groups": args.groups,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine,
        "config": {**cfg, "base_image": builder.base_image},
        "measurements": rows,
        "targets": targets,
        "errors": errors,
        "notes": notes,
    }
    write_result(args.out, result)
    print(f"wrote {args.out} ({result['seconds']} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
