"""``edgehub check``: the smoke test a release pipeline runs against a deployed hub (the counterpart
of ``iotedge check``): store volume, disk, certificates, clock, upstream, heads, config version,
the manifest's modules connected.

Each check reads what the deployment has (settings, files, the running hub's probes and metrics on
the metrics port, a TCP/TLS handshake with the upstream) and returns OK, WARN or FAIL with a hint;
it never writes the store, never authenticates as the hub (that would take over its connection)
and never changes the running hub.
"""

from __future__ import annotations

import enum
import hashlib
import json
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from edgehub import __version__
from edgehub.config_file import HubConfig
from edgehub.settings import Settings

CERT_MIN_DAYS: Final = 30
"""A server certificate valid for fewer days than this is a warning (renew before it lapses)."""
CLOCK_FLOOR: Final = datetime(2025, 1, 1, tzinfo=UTC)
"""No sane clock is earlier than this release's year: a device that booted without time is."""
NETWORK_TIMEOUT: Final = 5.0
MOUNTINFO: Final = Path("/proc/self/mountinfo")
EPHEMERAL_FILE_SYSTEMS: Final = frozenset({"overlay", "aufs", "tmpfs", "ramfs"})
"""A container's writable layer or memory: a store there is lost with the container (or a reboot)."""


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: what was checked, its status, what was found, what to do."""

    name: str
    status: Status
    message: str
    hint: str = ""

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "message": self.message, "hint": self.hint}


@dataclass(frozen=True, slots=True)
class Target:
    """What is checked: the settings, the config file (None = built-in default), and where the running
    hub's metrics port answers (None = no running hub to ask)."""

    settings: Settings
    config: HubConfig
    config_path: Path | None
    metrics_url: str | None
    expect_config_version: str | None = None


# --- the running hub -------------------------------------------------------------------------------


def fetch(url: str) -> tuple[int, bytes] | None:
    """(status, body) of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return None


def metric_sum(exposition: str, name: str, label: str | None = None) -> float:
    """The sum of every sample of ``name`` in a Prometheus text exposition (0 when absent), only
    those carrying ``label`` (``id="edge/filter"``) when given."""
    total = 0.0
    for line in exposition.splitlines():
        named = line.startswith(name) and len(line) > len(name) and line[len(name)] in " {"
        if named and (label is None or label in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- the checks --------------------------------------------------------------------------------------


def check_config_version(target: Target) -> Check:
    if target.config_path is None:
        return Check("config", Status.WARN, "no config file: the built-in default (every message "
                     "upstream, no local identities)", "pass the file the hub runs with --config")
    version = config_version(target.config_path)
    if target.expect_config_version is not None and version != target.expect_config_version:
        return Check("config", Status.FAIL, f"{target.config_path} is version {version}, "
                     f"expected {target.expect_config_version}",
                     "the new manifest is not in place: check the deployment step")
    return Check("config", Status.OK, f"{target.config_path}: version {version}, valid "
                 f"({len(target.config.routes)} routes, {len(target.config.identities)} identities); "
                 "the hub re-reads it on change")


def config_version(path: Path) -> str:
    """``$version`` of the hub's desired properties when the file has one (a manifest from IoT Hub),
    else the schema version and the first 12 hex digits of the file's SHA-256."""
    data = path.read_bytes()
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    desired = document
    if isinstance(document, dict) and isinstance(content := document.get("modulesContent"), dict):
        hub = content.get("$edgeHub")
        desired = hub.get("properties.desired") if isinstance(hub, dict) else None
    if isinstance(desired, dict) and isinstance(desired.get("$version"), int | str):
        return str(desired["$version"])
    schema = desired.get("schemaVersion") if isinstance(desired, dict) else None
    return f"{schema or '?'}+sha256:{hashlib.sha256(data).hexdigest()[:12]}"


def mount_point_of(path: Path, mountinfo: str) -> tuple[str, str]:
    """(mount point, file system type) of the mount holding ``path``, from /proc/self/mountinfo text."""
    best, kind = "/", ""
    resolved = str(path.resolve())
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        point = fields[4].replace("\\040", " ")
        fs_type = fields[fields.index("-") + 1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs_type
    return best, kind


def check_storage_volume(target: Target, mountinfo: str | None = None) -> Check:
    folder = target.settings.storage_folder
    if not folder.is_dir():
        return Check("storage", Status.FAIL, f"StorageFolder {folder} does not exist",
                     "mount the volume there (the hub creates the folder only when it can)")
    probe = folder / ".edgehub-check"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return Check("storage", Status.FAIL, f"StorageFolder {folder} is not writable: {exc.strerror}",
                     "give the hub's user (uid 1000 in the image) write access: fsGroup or chown")
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return Check("storage", Status.WARN, f"{folder}: cannot tell which mount holds it", "")
    point, kind = mount_point_of(folder, mountinfo)
    if kind in EPHEMERAL_FILE_SYSTEMS:
        where = f"{folder} is on {point} ({kind}): a container's own layer or memory, not a volume"
        return Check("storage", Status.WARN, where,
                     "messages are lost with the container: mount a volume or host folder at StorageFolder")
    return Check("storage", Status.OK, f"{folder} is on {point} ({kind or 'unknown'}), not a container layer")


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def check_disk(target: Target) -> Check:
    folder = target.settings.storage_folder
    if not folder.is_dir():
        return Check("disk", Status.FAIL, f"{folder} does not exist", "")
    free = shutil.disk_usage(folder).free
    limit = target.config.max_store_size_bytes
    if limit is None:
        return Check("disk", Status.WARN, f"{_mib(free)} free, no store limit: the store may fill the disk",
                     "set storeAndForwardConfiguration.storeLimits.maxSizeBytes (rate x size x TTL)")
    used = _folder_bytes(folder / "store")
    if free < limit - used:
        growth = f"the store may grow by {_mib(limit - used)} to its limit of {_mib(limit)}"
        return Check("disk", Status.FAIL, f"{_mib(free)} free, but {growth}",
                     "free disk space or lower storeLimits.maxSizeBytes")
    return Check("disk", Status.OK, f"{_mib(free)} free for a store of {_mib(used)} (limit {_mib(limit)})")


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def server_certificate_file(settings: Settings) -> tuple[Path, str]:
    """The server certificate the hub serves and where it comes from (production, workload, dev)."""
    from edgehub.tls import DEV_SERVER_CERT_FILE
    from edgehub.workload import SERVER_CERT_FILE

    if settings.server_certificate_file is not None:
        return settings.server_certificate_file, "production"
    if settings.workload_uri is not None:
        return settings.storage_folder / "certs" / SERVER_CERT_FILE, "workload"
    return settings.storage_folder / "certs" / DEV_SERVER_CERT_FILE, "dev"


def check_certificates(target: Target, now: datetime) -> Check:
    from cryptography import x509

    path, source = server_certificate_file(target.settings)
    if not path.is_file():
        status = Status.WARN if source == "dev" else Status.FAIL
        return Check("certificates", status, f"no server certificate at {path} ({source})",
                     "the hub writes it at start: is it running with this StorageFolder?")
    try:
        leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except ValueError as exc:
        return Check("certificates", Status.FAIL, f"{path}: not a PEM certificate: {exc}", "")
    days = (leaf.not_valid_after_utc - now) / timedelta(days=1)
    described = f"{source} certificate {path}, expires {leaf.not_valid_after_utc:%Y-%m-%d} ({days:.0f} days)"
    if days <= 0:
        return Check("certificates", Status.FAIL, f"expired: {described}", _renew_hint(source))
    if source == "dev":
        return Check("certificates", Status.WARN, f"{described}: a dev certificate, not for production",
                     "set ServerCertificateFile and ServerPrivateKeyFile")
    if days < CERT_MIN_DAYS:
        return Check("certificates", Status.WARN, f"{described}: fewer than {CERT_MIN_DAYS} days left",
                     _renew_hint(source))
    return Check("certificates", Status.OK, described)


def _renew_hint(source: str) -> str:
    if source == "workload":
        return "restart the module: the hub asks the workload API for a new certificate at start"
    if source == "dev":
        return "restart the hub: it renews the dev certificate; for production set ServerCertificateFile"
    return "replace ServerCertificateFile and ServerPrivateKeyFile, then restart the hub"


def check_clock(target: Target, now: datetime) -> Check:
    from cryptography import x509

    if now < CLOCK_FLOOR:
        return Check("clock", Status.FAIL, f"the clock says {now:%Y-%m-%d %H:%M} UTC",
                     "set the time (NTP): SAS tokens and certificates fail with a wrong clock")
    path, _ = server_certificate_file(target.settings)
    if path.is_file():
        try:
            leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
        except ValueError:
            leaf = None
        if leaf is not None and now < leaf.not_valid_before_utc:
            return Check("clock", Status.FAIL, f"the clock ({now:%Y-%m-%d %H:%M} UTC) is before the server "
                         f"certificate's start ({leaf.not_valid_before_utc:%Y-%m-%d %H:%M})",
                         "set the time (NTP)")
    return Check("clock", Status.OK, f"{now:%Y-%m-%d %H:%M:%S} UTC")


def check_upstream(target: Target, metrics: str | None) -> Check:
    from edgehub.upstream.config import UpstreamTransport, upstream_config
    from edgehub.upstream.transport import tls_context

    config = upstream_config(target.settings)
    if config is None:
        return Check("upstream", Status.WARN, "standalone: no EdgeHubConnectionString nor workload API, "
                     "$upstream messages wait in the store",
                     "set EdgeHubConnectionString to connect upstream")
    where = f"{config.url} as {config.identity}"
    try:
        with socket.create_connection((config.host, config.port), timeout=NETWORK_TIMEOUT) as raw:
            if config.tls:
                context = tls_context(config.ca_file, config.ca_pem)
                with context.wrap_socket(raw, server_hostname=config.host):
                    pass
    except ssl.SSLError as exc:
        return Check("upstream", Status.FAIL, f"{where}: TLS handshake failed: {exc.reason or exc}",
                     "trust the parent's CA with UpstreamCaFile, and check the clock")
    except OSError as exc:
        return Check("upstream", Status.FAIL, f"{where}: unreachable: {exc.strerror or exc}",
                     "check the host name, the network, a firewall"
                     + ("; Amqp falls back to AmqpWs (443) by itself, else try UpstreamProtocol=AmqpWs"
                        if config.amqp and config.transport is UpstreamTransport.TCP else "")
                     + "; or try UpstreamProtocol=MqttWs (443)")
    if metrics is None:
        return Check("upstream", Status.WARN, f"{where}: reachable; no running hub to tell whether it "
                     "authenticated", "run check against the running hub (its metrics port)")
    went_offline = metric_sum(metrics, "edgehub_offline_count_total")
    came_back = metric_sum(metrics, "edgehub_offline_duration_seconds_count")
    if went_offline > came_back:
        return Check("upstream", Status.FAIL, f"{where}: reachable, but the hub is not connected",
                     "the hub's log says why ('upstream … unreachable: …'): a refused key, identity or token")
    return Check("upstream", Status.OK, f"{where}: reachable and the hub is connected")


def manifest_modules(path: Path | None) -> list[str]:
    """The modules a deployment manifest runs (``$edgeAgent`` ``modules`` not stopped); [] otherwise."""
    if path is None:
        return []
    try:
        document = json.loads(path.read_bytes())
        modules = document["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(modules, dict):
        return []
    return sorted(name for name, module in modules.items()
                  if not (isinstance(module, dict) and module.get("status") == "stopped"))


def check_modules(target: Target, metrics: str | None) -> Check:
    modules = manifest_modules(target.config_path)
    if not modules:
        return Check("modules", Status.OK, "no modules in the config file to look for")
    if metrics is None:
        return Check("modules", Status.WARN, f"cannot tell whether {', '.join(modules)} are connected: "
                     "no running hub's metrics", "run check against the running hub (its metrics port)")
    device = target.settings.edge_device_id
    offline = []
    for module in modules:
        label = f'id="{device}/{module}"'
        connects = metric_sum(metrics, "edgehub_client_connect_success_total", label)
        if connects - metric_sum(metrics, "edgehub_client_disconnect_total", label) <= 0:
            offline.append(module)
    if offline:
        return Check("modules", Status.FAIL, f"not connected to the hub: {', '.join(offline)}",
                     "a module starting may take a minute; else its logs say why (its key, its token)")
    return Check("modules", Status.OK, f"connected: {', '.join(modules)}")


def _enabled_ports(settings: Settings) -> list[tuple[str, int]]:
    ports = []
    if settings.mqtt.enabled:
        ports += [("mqtt", settings.mqtt.port)] + ([("mqtt plain", settings.mqtt.plain_port)]
                                                   if settings.mqtt.plain_port else [])
    if settings.http.enabled:
        ports.append(("http", settings.http.port))
    return [(name, port) for name, port in ports if port]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=NETWORK_TIMEOUT):
            return True
    except OSError:
        return False


def check_heads(target: Target) -> Check:
    closed = [f"{name} {port}" for name, port in _enabled_ports(target.settings) if not _port_open(port)]
    if target.metrics_url is None:
        if closed:
            return Check("heads", Status.FAIL, f"not listening: {', '.join(closed)}", "is the hub running?")
        return Check("heads", Status.WARN, "every enabled port accepts connections; no metrics port "
                     "to ask /ready (Metrics__Listener__Port=0)", "")
    answer = fetch(target.metrics_url + "/ready")
    if answer is None:
        return Check("heads", Status.FAIL, f"nothing answers at {target.metrics_url}/ready",
                     "is the hub running? check Metrics__Listener__Port")
    status, body = answer
    try:
        document = json.loads(body)
    except ValueError:
        document = {}
    heads = document.get("heads", {}) if isinstance(document, dict) else {}
    unbound = sorted(name for name, part in heads.items() if not part.get("bound"))
    if status != 200 or unbound or closed:
        problems = [f"/ready answered {status}"] + [f"{name} not bound" for name in unbound]
        return Check("heads", Status.FAIL, "; ".join(problems + [f"not listening: {c}" for c in closed]),
                     "the hub's log names the port it could not bind (in use, or below 1024 without rights)")
    return Check("heads", Status.OK, f"ready; bound: {', '.join(sorted(heads)) or 'no heads'}")


# --- running them ------------------------------------------------------------------------------------


def run_checks(target: Target, now: datetime | None = None) -> list[Check]:
    at = now or datetime.now(UTC)
    metrics = None
    if target.metrics_url is not None and (answer := fetch(target.metrics_url + "/metrics")) is not None:
        metrics = answer[1].decode("utf-8", "replace") if answer[0] == 200 else None
    checks: Sequence[Callable[[], Check]] = (
        lambda: check_config_version(target),
        lambda: check_storage_volume(target),
        lambda: check_disk(target),
        lambda: check_certificates(target, at),
        lambda: check_clock(target, at),
        lambda: check_upstream(target, metrics),
        lambda: check_heads(target),
        lambda: check_modules(target, metrics),
    )
    return [check() for check in checks]


def exit_code(checks: Iterable[Check], *, strict: bool = False) -> int:
    """0 when nothing failed (warnings allowed unless ``strict``), 1 otherwise."""
    statuses = {check.status for check in checks}
    return 1 if Status.FAIL in statuses or (strict and Status.WARN in statuses) else 0


def report(checks: Sequence[Check], *, as_json: bool) -> str:
    counts = {status.value.lower(): sum(c.status is status for c in checks) for status in Status}
    if as_json:
        return json.dumps({"version": __version__, "checks": [c.as_json() for c in checks],
                           "summary": counts}, indent=2)
    lines = [f"edgehub {__version__} check"]
    for check in checks:
        lines.append(f"[{check.status.value:<4}] {check.name:<13} {check.message}")
        if check.hint and check.status is not Status.OK:
            lines.append(f"{'':20}hint: {check.hint}")
    lines.append(f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed")
    return "\n".join(lines)


def probe(settings: Settings) -> bool:
    """The container health probe: /ready on the metrics port, or every enabled port accepting a
    connection when the metrics port is off."""
    if settings.metrics_port:
        answer = fetch(f"http://127.0.0.1:{settings.metrics_port}/ready")
        return answer is not None and answer[0] == 200
    return all(_port_open(port) for _, port in _enabled_ports(settings))

