"""The ``edgehub`` command: run, check-config, stats, check, identity; maps failures to exit codes.

Exit codes (docs/architecture.md §4): 0 ok, 1 ``check`` found a failure, 2 bad settings or config,
3 store cannot be opened.
"""

from __future__ import annotations

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
    import argparse

    from edgehub.assembly import HubAssembly
    from edgehub.settings import StoreBackend

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STORE = 3

log = logging.getLogger("edgehub")


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="edgehub", description="Store-and-forward edge message hub.")
    parser.add_argument("--version", action="version", version=f"edgehub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the hub in the foreground (SIGTERM/SIGINT stop it cleanly)")
    run.add_argument("--config", type=Path, help="edgeHub desired properties or deployment manifest (JSON)")
    check = commands.add_parser("check-config", help="validate settings (env) and a config file")
    check.add_argument("--config", type=Path, help="config file to validate")
    check.add_argument("--print-version", action="store_true",
                       help="print only the file's config version (what `edgehub check` expects), when valid")
    stats = commands.add_parser(
        "stats", help="queue lengths, oldest message age and size per endpoint: asks the running hub "
        "(GET /stats on the metrics port), else reads the stopped hub's store",
    )
    stats.add_argument("--storage", type=Path, help="store folder (default: StorageFolder)")
    stats.add_argument("--port", type=int,
                       help="metrics port of the running hub (default: Metrics__Listener__Port)")
    stats.add_argument("--url", help="/stats URL of the running hub (default: http://127.0.0.1:{port}/stats)")
    stats.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of a table")
    _check_parser(commands)
    _identity_parser(commands)
    return parser


def _check_parser(commands: Any) -> None:
    check = commands.add_parser(
        "check", help="smoke test of a deployed hub: store volume, disk, certificates, clock, upstream, "
        "heads, config version; OK/WARN/FAIL each, exit 1 on a failure",
    )
    check.add_argument("--config", type=Path, help="the config file the hub runs with")
    check.add_argument("--url", help="the running hub's metrics port (default: http://127.0.0.1:"
                       "{Metrics__Listener__Port})")
    check.add_argument("--expect-config-version", metavar="VERSION",
                       help="fail unless the config file is this version ($version, or as check prints it)")
    check.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    check.add_argument("--json", action="store_true", help="print JSON (for pipelines)")
    check.add_argument("--probe", action="store_true",
                       help="container health probe only: /ready on the metrics port (or every enabled "
                       "port accepting connections when it is off); exit 0 or 1, no output")


def _identity_parser(commands: Any) -> None:
    identity = commands.add_parser("identity", help="the config file's identities: add, list, remove, token")
    actions = identity.add_subparsers(dest="action", required=True)
    for name, text in (("add", "add a device or module with new keys; prints its connection string"),
                       ("list", "list the identities"),
                       ("remove", "remove an identity"),
                       ("token", "print a SAS token (the MQTT password) for an identity")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--config", type=Path, required=True, help="the config file to read or edit")
        if name != "list":
            action.add_argument("id", help="DEVICE or DEVICE/MODULE (the MQTT client id)")
    actions.choices["add"].add_argument("--create", action="store_true",
                                        help="create the file (no routes) when it does not exist")
    actions.choices["list"].add_argument("--json", action="store_true", help="print JSON")
    token = actions.choices["token"]
    token.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (default 3600)")
    token.add_argument("--secondary", action="store_true", help="sign with the secondary key")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    plain, config = plain_run(arguments)
    if plain:
        return run(config)
    args = _parser().parse_args(arguments)
    if args.command == "check-config":
        return check_config(args.config, print_version=args.print_version)
    if args.command == "stats":
        return stats(args.storage, port=args.port, url=args.url, as_json=args.json)
    if args.command == "check":
        return check(args)
    if args.command == "identity":
        return identity(args)
    return run(args.config)


def plain_run(argv: Sequence[str]) -> tuple[bool, Path | None]:
    """Whether ``argv`` is ``run`` or ``run --config FILE`` (the hub's own command lines), and the
    file: recognised without argparse, which with gettext costs a running hub 0.5 MiB for its whole
    life. Any other form, also of ``run``, goes to the parser (same meaning, its errors and help)."""
    if list(argv) == ["run"]:
        return True, None
    if len(argv) == 3 and argv[0] == "run" and argv[1] == "--config" and not argv[2].startswith("-"):
        return True, Path(argv[2])
    return False, None


def _print_problems(error: ConfigError) -> None:
    for location, reason in error.problems:
        print(f"error: {location}: {reason}", file=sys.stderr)


def check_config(config_path: Path | None, *, print_version: bool = False) -> int:
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
    if print_version and config_path is not None:
        from edgehub.check import config_version

        print(config_version(config_path))
        return EXIT_OK
    print(f"ok: settings and {config_path or 'the default config'} are valid")
    return EXIT_OK


def identity(args: argparse.Namespace) -> int:
    from edgehub import identity_cli
    from edgehub.settings import load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        _print_problems(error)
        return EXIT_CONFIG
    return identity_cli.main(args, settings)


def check(args: argparse.Namespace) -> int:
    from edgehub import check as checks
    from edgehub.config_file import default_config, load_config_file
    from edgehub.routing.router import compile_routes
    from edgehub.settings import load_settings

    try:
        settings = load_settings()
        if args.probe:
            return EXIT_OK if checks.probe(settings) else 1
        config = load_config_file(args.config) if args.config else default_config()
        compile_routes(config.routes)
    except ConfigError as error:
        if args.probe:
            return 1
        _print_problems(error)
        return EXIT_CONFIG
    url = args.url or (f"http://127.0.0.1:{settings.metrics_port}" if settings.metrics_port else None)
    target = checks.Target(settings, config, args.config, url.rstrip("/") if url else None,
                           args.expect_config_version)
    results = checks.run_checks(target)
    print(checks.report(results, as_json=args.json))
    return checks.exit_code(results, strict=args.strict)


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
    from edgehub.assembly import store_folder
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
    from edgehub.assembly import assemble
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
    """uvloop where it is installed; plain asyncio in low-memory mode (uvloop costs about 1.5 MiB RSS)
    and where it is absent (Windows, some ARM builds: docs/architecture.md §3)."""
    if not optimize_for_performance:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


YOUNG_GENERATION_THRESHOLD = 20_000
"""Allocations between two young-generation collections in performance mode (CPython's default: 700)."""


def _tune_collector() -> None:
    """Performance mode, once started: move what start-up built (modules, settings, routes, the
    identity table) out of the cyclic collector's reach, and collect the young generation every
    YOUNG_GENERATION_THRESHOLD allocations. Each message allocates a few dozen tracked objects that
    reference counting frees, so the default threshold runs a collection every few dozen messages
    for almost nothing; measured in docs/performance.md. Low-memory mode keeps the defaults."""
    import gc

    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


async def _serve(assembly: HubAssembly) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await assembly.start()
    if not assembly.hub.settings.optimize_for_performance:
        from edgehub.resident import page_out_shared_objects

        page_out_shared_objects()
    else:
        _tune_collector()
    for line in assembly.describe():
        print(line, flush=True)
    failed = asyncio.ensure_future(assembly.hub.failed.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    stopped.cancel()
    log.info("stopping: flushing pending writes and closing the store")
    try:
        await assembly.stop()
    except Exception:
        if assembly.hub.store_failure is None:
            raise
        log.exception("error while stopping a hub with a damaged store")
    if assembly.hub.store_failure is not None:  # docs/architecture.md §1 invariant 8
        print(f"error: {assembly.hub.store_failure}", file=sys.stderr)
        return EXIT_STORE
    log.info("stopped")
    return EXIT_OK
