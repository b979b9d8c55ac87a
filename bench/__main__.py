"""Run the benchmarks: `python -m bench [--quick] [--only NAME ...] [--database ...]`.

`make bench` is the quick mode (a few seconds of load each, about two minutes in all) and
`make bench-full` the full one. Each benchmark starts its own Redis, database, clamd, gunicorn
and workers, prints its figures next to a baseline run side by side, and stops everything it
started. bench/RESULTS.md records a run and says how each figure was produced.
"""

import argparse
import logging
import os
import platform
import subprocess
import sys
import time
import traceback

from bench import fanout, intake, pipeline_overhead, spike, worker_preload
from bench.stack import ROOT, BenchError, postgres_server

BENCHMARKS = ("intake", "spike", "overhead", "preload", "fanout", "release")


def machine():
    cpu = next((line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown")
    memory_kib = next(int(line.split()[1]) for line in open("/proc/meminfo")
                      if line.startswith("MemTotal:"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({cpu}), {memory_kib // 1024} MiB RAM, "
            f"{platform.platform()}, Python {platform.python_version()}\n"
            f"load average at start: {load}; commit {commit}"
            f"{' with uncommitted changes' if dirty else ''}")


def databases(choice):
    server = postgres_server()
    if choice == "auto":
        return ["postgres" if server else "sqlite"]
    wanted = ["sqlite", "postgres"] if choice == "both" else [choice]
    if "postgres" in wanted and server is None:
        raise SystemExit("no PostgreSQL server: set BENCH_DATABASE_URL or start one on 5432")
    return wanted


def grade_release(quick, database, keep):
    from bench import grade_release as release

    entry = getattr(release, "main", None) or getattr(release, "run", None)
    if entry is None:
        print("  bench/grade_release.py has no main(); skipped")
        return []
    argv = [*(["--quick"] if quick else []), *(["--postgres"] if database == "postgres" else []),
            *(["--keep"] if keep else [])]
    status = entry(argv)
    if status:
        raise BenchError(f"grade release benchmark exited with status {status}")
    return []


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds of load each")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    parser.add_argument("--database", choices=("auto", "sqlite", "postgres", "both"),
                        default="auto",
                        help="auto: a throwaway PostgreSQL database when a server answers, "
                             "else SQLite")
    parser.add_argument("--keep", action="store_true", help="keep each run's logs")
    args = parser.parse_args(argv)
    # The app logs every step at INFO; here only warnings belong next to the figures.
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")

    runners = {
        "intake": intake.run,
        "spike": spike.run,
        "overhead": pipeline_overhead.run,
        "preload": worker_preload.run,
        "fanout": fanout.run,
        "release": grade_release,
    }
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{command.strip()}\n{machine()}\n", flush=True)
    began = time.monotonic()
    tables, failed = [], []
    for database in databases(args.database):
        for name in args.only:
            load = " ".join(f"{value:.2f}" for value in os.getloadavg())
            print(f"== {name} ({database}; load average {load})", flush=True)
            started = time.monotonic()
            try:
                produced = runners[name](args.quick, database, keep=args.keep)
            except Exception as exc:
                failed.append(name)
                print(f"  {name} failed: {exc}", flush=True)
                if not isinstance(exc, BenchError):
                    traceback.print_exc()
                continue
            for table in produced:
                print(table.render() + "\n", flush=True)
            tables += produced
            print(f"  ({name} took {time.monotonic() - started:.0f} s)\n", flush=True)
    print(f"all benchmarks took {time.monotonic() - began:.0f} s; "
          f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
