"""The ``edgehub`` command: run, check-config, stats; maps failures to exit codes.

Exit codes (DESIGN §4): 0 ok, 2 bad settings or config, 3 store cannot be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgehub import __version__
from edgehub.errors import ConfigError, StoreOpenError

if TYPE_CHECKING:
    from edgehub.hub import HubAssembly

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
    stats = commands.add_parser("stats", help="queue lengths, oldest message age and size per endpoint")
    stats.add_argument("--storage", type=Path, help="store folder (default: StorageFolder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "stats":
        return stats(args.storage)
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


def stats(storage: Path | None) -> int:
    from edgehub.hub import store_folder
    from edgehub.settings import load_settings
    from edgehub.store.open import open_store

    try:
        settings = load_settings()
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    folder = store_folder(storage or settings.storage_folder)
    try:
        store = open_store(folder, backend=settings.store_backend, sync=False, low_memory=True,
                           max_size_bytes=None, recovery="fail", read_only=True)
    except StoreOpenError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_STORE
    try:
        snapshot = store.stats()
    finally:
        store.close()
    now = time.time() * 1000
    print(f"store {folder}: {snapshot.message_count} messages, {snapshot.size_bytes} bytes")
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
