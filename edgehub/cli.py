"""The ``edgehub`` command: run, check-config, stats; maps failures to exit codes.

Exit codes (DESIGN §4): 0 ok, 2 bad settings or config, 3 store cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgehub import __version__
from edgehub.errors import ConfigError, StoreOpenError

if TYPE_CHECKING:
    from edgehub.hub import HubAssembly
    from edgehub.settings import StoreBackend

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STORE = 3

log = logging.getLogger("edgehub")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgehub", description="Store-and-forward edge message hub.")
    parser.add_argument("--version", action="version", version=f"edgehub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the hub in the foreground (SIGTERM/SIGINT stop it cleanly)")
    run.add_argument("--config", type=Path, help="edgeHub desired properties or deployment manifest (JSON)")
    check = commands.add_parser("check-config", help="validate settings (env) and a config file")
    check.add_argument("--config", type=Path, help="config file to validate")
    stats = commands.add_parser(
        "stats", help="queue lengths, oldest message age and size per endpoint: asks the running hub "
        "(GET /stats on the metrics port), else reads the stopped hub's store",
    )
    stats.add_argument("--storage", type=Path, help="store folder (default: StorageFolder)")
    stats.add_argument("--port", type=int,
                       help="metrics port of the running hub (default: Metrics__Listener__Port)")
    stats.add_argument("--url", help="/stats URL of the running hub (default: http://127.0.0.1:{port}/stats)")
    stats.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "stats":
        return stats(args.storage, port=args.port, url=args.url, as_json=args.json)
    return run(args.config)


def _print_problems(error: ConfigError) -> None:
    for location, reason in error.problems:
        print(f"error: {location}: {reason}", file=sys.stderr)


def check_config(config_path: Path | None) -> int:
    from edgehub.config_file import default_config, load_config_file
    from edgehub.routing.router import compile_routes
    from edgehub.settings import load_settings

    problems: list[tuple[str, str]] = []
    try:
        load_settings()
    except ConfigError as error:
        problems.extend(error.problems)
    try:
        config = load_config_file(config_path) if config_path else default_config()
        compile_routes(config.routes)
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        _print_problems(ConfigError(problems))
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return EXIT_CONFIG
    print(f"ok: settings and {config_path or 'the default config'} are valid")
    return EXIT_OK


STATS_TIMEOUT = 2.0
"""Seconds ``edgehub stats`` waits for a running hub before reading the store itself."""


def stats(storage: Path | None, *, port: int | None = None, url: str | None = None,
          as_json: bool = False) -> int:
    from edgehub.settings import load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    port = settings.metrics_port if port is None else port
    if url is None and port:
        url = f"http://127.0.0.1:{port}/stats"
    live = _running_hub_stats(url) if url is not None and storage is None else None
    if live is not None:
        _print_live_stats(live, url or "", as_json)
        return EXIT_OK
    return _offline_stats(storage or settings.storage_folder, settings.store_backend, as_json)


def _running_hub_stats(url: str) -> dict[str, Any] | None:
    """The running hub's /stats, or None when nothing answers there (the hub is stopped)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=STATS_TIMEOUT) as response:
            document = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return document if isinstance(document, dict) and document.get("serving") else None


def _print_live_stats(document: dict[str, Any], url: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"source": url, **document}, indent=2))
        return
    print(f"running hub at {url}: {document['store_bytes']} store bytes, "
          f"{document['connected_clients']} connected clients")
    print(f"{'endpoint':<48} {'priority':>10} {'length':>9} {'oldest age s':>13}")
    for queue in document["queues"]:
        age = "-" if queue["oldest_age_seconds"] is None else f"{queue['oldest_age_seconds']:.1f}"
        print(f"{queue['endpoint']:<48} {queue['priority']:>10} {queue['length']:>9} {age:>13}")


def _offline_stats(storage: Path, backend: StoreBackend, as_json: bool) -> int:
    from edgehub.hub import store_folder
    from edgehub.store.open import open_store

    folder = store_folder(storage)
    try:
        store = open_store(folder, backend=backend, sync=False, low_memory=True,
                           max_size_bytes=None, recovery="fail", read_only=True)
    except StoreOpenError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_STORE
    try:
        snapshot = store.stats()
    finally:
        store.close()
    now = time.time() * 1000
    if as_json:
        print(json.dumps({"source": str(folder), "store_bytes": snapshot.size_bytes,
                          "messages": snapshot.message_count, "queues": [
                              {"endpoint": q.queue.endpoint, "priority": q.queue.priority, "length": q.length,
                               "oldest_age_seconds": None if q.oldest_enqueued_ms is None
                               else round((now - q.oldest_enqueued_ms) / 1000, 3), "bytes": q.bytes}
                              for q in snapshot.queues]}, indent=2))
        return EXIT_OK
    print(f"stopped hub, store {folder}: {snapshot.message_count} messages, {snapshot.size_bytes} bytes")
    print(f"{'endpoint':<48} {'priority':>10} {'length':>9} {'oldest age s':>13} {'bytes':>12}")
    for queue in snapshot.queues:
        age = "-" if queue.oldest_enqueued_ms is None else f"{(now - queue.oldest_enqueued_ms) / 1000:.1f}"
        q = queue.queue
        print(f"{q.endpoint:<48} {q.priority:>10} {queue.length:>9} {age:>13} {queue.bytes:>12}")
    return EXIT_OK


def run(config_path: Path | None) -> int:
    from edgehub.hub import assemble
    from edgehub.logs import configure_logging
    from edgehub.settings import load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    try:
        assembly: HubAssembly = assemble(settings, config_path)
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    except StoreOpenError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_STORE
    with asyncio.Runner(loop_factory=_loop_factory(settings.optimize_for_performance)) as runner:
        return runner.run(_serve(assembly))


def _loop_factory(optimize_for_performance: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed; plain asyncio in low-memory mode (uvloop costs ~10 MiB RSS)
    and where it is absent (Windows, some ARM builds: DESIGN §3)."""
    if not optimize_for_performance:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(assembly: HubAssembly) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await assembly.start()
    for line in assembly.describe():
        print(line, flush=True)
    await stop.wait()
    log.info("stopping: flushing pending writes and closing the store")
    await assembly.stop()
    log.info("stopped")
    return EXIT_OK
