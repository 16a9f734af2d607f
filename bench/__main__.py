"""`python -m bench` (`make bench`): run every `bench/bench_*.py` and print what it measures.

Each benchmark module runs in a child process of its own (`python -m bench --one NAME`), so
that one benchmark's event loop, processes and mounts cannot disturb the next, and a crash
in one does not stop the others. In the child, a module with an `if __name__ == "__main__"`
block runs as `python -m bench.bench_x` would (with its own default arguments); a module
without one has its `main()` called with no arguments (awaited when it is a coroutine).

    python -m bench                 # all of them
    python -m bench node registrar  # those whose name contains one of the words
    python -m bench --list
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import runpy
import subprocess
import sys
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def discover(words: Sequence[str] = ()) -> list[str]:
    """Module names `bench.bench_*`, sorted, filtered by `words` (any substring matches)."""
    names = sorted(f"bench.{p.stem}" for p in BENCH_DIR.glob("bench_*.py"))
    if words:
        names = [n for n in names if any(w in n for w in words)]
    return names


def run_one(name: str) -> int:
    """In the child: run benchmark module `name`."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        print(f"no module {name}", file=sys.stderr)
        return 2
    source = Path(spec.origin).read_text()
    if '__name__ == "__main__"' in source or "__name__ == '__main__'" in source:
        sys.argv = [spec.origin]
        runpy.run_module(name, run_name="__main__", alter_sys=True)
        return 0
    module = importlib.import_module(name)
    main = getattr(module, "main", None)
    if main is None:
        print(f"{name} has neither a main() nor a __main__ block", file=sys.stderr)
        return 2
    result = main()
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result if isinstance(result, int) else 0


async def _await(awaitable: Awaitable[object]) -> object:
    return await awaitable


def run_all(names: Sequence[str]) -> int:
    results: list[tuple[str, int, float]] = []
    for name in names:
        print(f"\n=== {name} " + "=" * max(0, 70 - len(name)), flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run([sys.executable, "-m", "bench", "--one", name],
                                  cwd=REPO_ROOT, check=False).returncode
        except KeyboardInterrupt:
            print(f"\ninterrupted during {name}", file=sys.stderr)
            return 130
        seconds = time.monotonic() - started
        results.append((name, code, seconds))
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"=== {name}: {status} in {seconds:.1f} s", flush=True)
    print("\nSummary")
    for name, code, seconds in results:
        print(f"  {name:<32} {'ok' if code == 0 else f'exit {code}':<10} {seconds:8.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="Run the benchmarks in bench/bench_*.py.")
    parser.add_argument("words", nargs="*",
                        help="run only benchmarks whose module name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--one", metavar="MODULE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return run_one(args.one)
    names = discover(args.words)
    if args.list:
        print("\n".join(names))
        return 0
    if not names:
        print("no benchmark matches" if args.words else f"no bench_*.py in {BENCH_DIR}",
              file=sys.stderr)
        return 1
    return run_all(names)


if __name__ == "__main__":
    sys.exit(main())
