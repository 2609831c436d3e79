"""Byte layouts of the store's keys and values (docs/architecture.md §5), shared by every backend.

Pure functions over bytes with precompiled structs: no I/O, no state, no JSON or
pickle on the per-message path.

Layouts (all integers big-endian, so keys sort as numbers):

- queue prefix: ``endpoint utf-8 ‖ 0x00 ‖ priority u32``
- messages: ``id u64`` → record
- record: RECORD_HEAD (``enqueued u64, max expiry u64, nrefs u16, refs bytes u32,
  strings format u8, nprops u16, nsys u16, strings bytes u32``), the refs
  (``nrefs expiries u64``, ``nrefs prefix lengths u16``, the prefixes), the
  property strings (keys and values, application then system, UTF-8 joined by
  NUL; or, when a string holds a NUL, ``u32`` lengths then the strings), the body
- queues: ``prefix ‖ id u64`` → ``id u64 ‖ expiry u64``, plus ``index time u64``
  when the expiry was already past the last expire run (see MessageStore); or, for a
  message with this one ref whose index time is not below that of the queue's previous such
  entry (a solo entry, format 3), ``id u64 ‖ expiry u64 ‖ index time u64 ‖ record size u32 ‖
  enqueued u64``: the message then has no expiry entry, since its queue's solo entries are in
  index-time order and an expire run removes the expired ones at the queue's head
- checkpoints: ``prefix`` → last delivered id u64 (every ref of the queue up to it is
  delivered), plus, in format 2 only while refs above it were delivered out of order
  (``drainOrder`` newestFirst), the highest such id u64; see MessageStore
- expiry: ``expiry u64 ‖ id u64`` → ``record size u32`` ‖ the record up to the
  end of its refs, so expiry runs and reopen never read bodies (every message but a solo one)
- twins: ``identity id utf-8`` → the twin record (JSON; edgehub.twins.service owns it)
- sessions: ``client id utf-8`` → a persistent MQTT session record (JSON;
  edgehub.heads.mqtt.session_store owns it)

Format 1 is what a new store starts as: every queue's delivered refs are a prefix, one id.
Format 2 adds the second checkpoint id; a store is marked 2 by the first out-of-order delivery,
in the same write batch, so a store only ever drained oldest first stays 1 and an older hub
still opens it, while an older hub refuses a format 2 store plainly (NewerFormatError, never a
quarantine). A format 1 store opens unchanged: its 8-byte checkpoint values are format 2's
"nothing delivered out of order". Format 3 adds solo queue entries; a store is marked 3 by the
first append that writes one, in the same batch, so an older hub refuses it plainly the same way.
A store of format 1 or 2 opens unchanged and gets solo entries for its new messages.

The twins table was added without a format bump: it is additive (the message layouts
did not change), a store without it opens and gets it (RocksDB creates the missing
column family, SQLite the missing table; read-only opens read it as empty). A hub from
before twins refuses a RocksDB store that has the family (RocksDB wants every family
opened) with a plain open error, never a quarantine; on SQLite it ignores the table.
The sessions table was added the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from itertools import chain, islice
from struct import Struct
from types import MappingProxyType
from typing import Final

from edgehub.message import EMPTY_PROPERTIES, Message
from edgehub.store.base import QueueKey

FORMAT_VERSION: Final = 3
"""The newest layout this hub reads; bumped on any incompatible change (older hubs refuse newer stores)."""
FORMAT_IN_ORDER: Final = 1
"""What a new store is marked with until it holds a layout an older hub cannot read."""
FORMAT_SPARSE: Final = 2
"""Marked by the first refs delivered out of order (a second checkpoint id)."""
FORMAT_SOLO: Final = 3
"""Marked by the first solo queue entry (a message without an expiry entry)."""

U32: Final = Struct(">I")
U64: Final = Struct(">Q")
QUEUE_VALUE: Final = Struct(">QQ")
SPARSE_CHECKPOINT: Final = Struct(">QQ")
"""Format 2 checkpoint value: last id of the delivered prefix, highest id delivered above it."""
LATE_QUEUE_VALUE: Final = Struct(">QQQ")
SOLO_QUEUE_VALUE: Final = Struct(">QQQIQ")
"""A solo queue entry: id, expiry, index time, record size, enqueued (format 3)."""
EXPIRY_KEY: Final = Struct(">QQ")
RECORD_HEAD: Final = Struct(">QQHIBHHI")
EXPIRY_HEAD: Final = Struct(">IQQHIBHHI")
"""record size, then RECORD_HEAD: how an expiry value starts."""
EXPIRY_SIZE_AND_REFS: Final = Struct(">IQQH")
"""The first fields of an expiry value: record size, enqueued, max expiry, number of refs."""
_ONE_REF: Final = Struct(">QH")

STRINGS_JOINED: Final = 0
STRINGS_SIZED: Final = 1
_TEXT_ERRORS: Final = "surrogatepass"
"""Any str a head produced round-trips; one odd property must not fail a whole batch."""

RECORD_KEY_BYTES: Final = 8
ID_BYTES: Final = 8
QUEUE_STOP: Final = b"\xff" * (ID_BYTES + 1)
"""Appended to a prefix: sorts after every ``prefix ‖ id`` key of that queue."""

META_FORMAT: Final = b"format"
META_NEXT_ID: Final = b"next_id"
META_EXPIRED_UPTO: Final = b"expired_upto"

MAX_PRIORITY: Final = 0xFFFFFFFF

Ref = tuple[bytes, int]
"""(queue prefix, index time ms): one message's place in one queue and in the expiry index."""


@lru_cache(maxsize=256)
def _u64s(count: int) -> Struct:
    return Struct(f">{count}Q")


@lru_cache(maxsize=256)
def _u16s(count: int) -> Struct:
    return Struct(f">{count}H")


@lru_cache(maxsize=256)
def _u32s(count: int) -> Struct:
    return Struct(f">{count}I")


def queue_prefix(queue: QueueKey) -> bytes:
    """Key prefix of ``queue`` in the queues and checkpoints tables."""
    endpoint = queue.endpoint.encode()
    if b"\x00" in endpoint:
        raise ValueError(f"endpoint name contains NUL: {queue.endpoint!r}")
    if not 0 <= queue.priority <= MAX_PRIORITY:
        raise ValueError(f"priority out of range 0..{MAX_PRIORITY}: {queue.priority}")
    return endpoint + b"\x00" + U32.pack(queue.priority)


def parse_queue_prefix(prefix: bytes) -> QueueKey:
    if len(prefix) < 5 or prefix[-5] != 0:
        raise ValueError(f"not a queue prefix: {prefix!r}")
    return QueueKey(prefix[:-5].decode(), U32.unpack_from(prefix, len(prefix) - 4)[0])


def checkpoint_value(upto: int, delivered_above: int) -> bytes:
    """A checkpoint entry: the delivered prefix, and the highest id delivered out of order above it
    when there is one (format 2)."""
    if delivered_above > upto:
        return SPARSE_CHECKPOINT.pack(upto, delivered_above)
    return U64.pack(upto)


def decode_checkpoint(value: bytes) -> tuple[int, int]:
    """(last id of the delivered prefix, highest id delivered above it or 0) of a checkpoint entry."""
    if len(value) == U64.size:
        return U64.unpack(value)[0], 0
    found: tuple[int, int] = SPARSE_CHECKPOINT.unpack(value)
    return found


def queue_value(message_id: int, expiry_ms: int, index_ms: int) -> bytes:
    """A queue entry: the ref's TTL expiry and, when different, the time it sits at in the
    expiry index (and in the message's refs)."""
    if index_ms == expiry_ms:
        return QUEUE_VALUE.pack(message_id, expiry_ms)
    return LATE_QUEUE_VALUE.pack(message_id, expiry_ms, index_ms)


def solo_queue_value(
    message_id: int, expiry_ms: int, index_ms: int, record_size: int, enqueued_ms: int,
) -> bytes:
    """A solo queue entry: a queue entry that also holds what the message's expiry entry would."""
    return SOLO_QUEUE_VALUE.pack(message_id, expiry_ms, index_ms, record_size, enqueued_ms)


def decode_queue_value(value: bytes) -> tuple[int, int, int]:
    """(id, expiry ms, index time ms) of a queue entry, solo or not."""
    if len(value) == QUEUE_VALUE.size:
        message_id, expiry = QUEUE_VALUE.unpack(value)
        return message_id, expiry, expiry
    if len(value) == SOLO_QUEUE_VALUE.size:
        message_id, expiry, index, _, _ = SOLO_QUEUE_VALUE.unpack(value)
        return message_id, expiry, index
    found: tuple[int, int, int] = LATE_QUEUE_VALUE.unpack(value)
    return found


def encode_refs(refs: Sequence[Ref]) -> bytes:
    """The refs part of a record."""
    if len(refs) == 1:
        prefix, expiry = refs[0]
        return _ONE_REF.pack(expiry, len(prefix)) + prefix
    prefixes = [prefix for prefix, _ in refs]
    return b"".join((
        _u64s(len(refs)).pack(*[expiry for _, expiry in refs]), _u16s(len(refs)).pack(*map(len, prefixes)),
        *prefixes,
    ))


def _texts(properties: Mapping[str, str], system: Mapping[str, str]) -> Iterator[str]:
    return chain(chain.from_iterable(properties.items()), chain.from_iterable(system.items()))


def _encode_strings(properties: Mapping[str, str], system: Mapping[str, str]) -> tuple[int, bytes]:
    """(format, bytes) of every property key and value: one join and one encode when no
    string holds a NUL (the usual case), else length-prefixed."""
    joined = "\x00".join(_texts(properties, system))
    if joined.count("\x00") == 2 * (len(properties) + len(system)) - 1:
        return STRINGS_JOINED, joined.encode("utf-8", _TEXT_ERRORS)
    strings = [text.encode("utf-8", _TEXT_ERRORS) for text in _texts(properties, system)]
    return STRINGS_SIZED, _u32s(len(strings)).pack(*map(len, strings)) + b"".join(strings)


_encoded: Final[dict[tuple[int, int], tuple[Mapping[str, str], Mapping[str, str], int, bytes]]] = {}
"""(id of properties, id of system properties) -> (both, their strings format and bytes). The MQTT
head shares one pair of read-only mappings among the messages of one topic, and decode_message one
among the records of one set of properties, so their encoding repeats; an entry keeps its mappings
alive, so their ids are not reused while it exists."""
_decoded: Final[dict[tuple[int, int, bytes], tuple[Mapping[str, str], Mapping[str, str]]]] = {}
"""(strings format, number of properties, strings) of a record -> the read-only mappings decoded
from them."""
PROPERTIES_CACHE: Final = 1024
"""Entries of either cache before it starts over."""


def _strings_of(properties: Mapping[str, str], system: Mapping[str, str]) -> tuple[int, bytes]:
    key = (id(properties), id(system))
    known = _encoded.get(key)
    if known is not None and known[0] is properties and known[1] is system:
        return known[2], known[3]
    strings_format, strings = _encode_strings(properties, system)
    if type(properties) is MappingProxyType and type(system) is MappingProxyType:  # read-only views
        if len(_encoded) >= PROPERTIES_CACHE:
            _encoded.clear()
        _encoded[key] = (properties, system, strings_format, strings)
    return strings_format, strings


def encode_record(
    message: Message, refs: Sequence[Ref], max_expiry_ms: int, encoded_refs: bytes | None = None,
) -> tuple[bytes, int]:
    """The record of ``message`` and the offset where its refs end; ``encoded_refs`` is
    ``encode_refs(refs)`` when the caller has it already (the messages of a batch share their refs)."""
    properties = message.properties
    system = message.system_properties
    if encoded_refs is None:
        encoded_refs = encode_refs(refs)
    if properties or system:
        strings_format, strings = _strings_of(properties, system)
    else:
        strings_format, strings = STRINGS_JOINED, b""
    head = RECORD_HEAD.pack(
        message.enqueued_ms, max_expiry_ms, len(refs), len(encoded_refs),
        strings_format, len(properties), len(system), len(strings),
    )
    return b"".join((head, encoded_refs, strings, message.body)), RECORD_HEAD.size + len(encoded_refs)


def expiry_value(record: bytes, refs_end: int, record_size: int) -> bytes:
    return U32.pack(record_size) + record[:refs_end]


def decode_refs(buffer: bytes, offset: int, nrefs: int) -> list[Ref]:
    """The refs stored at ``offset`` (just after a RECORD_HEAD)."""
    if nrefs == 1:
        expiry, length = _ONE_REF.unpack_from(buffer, offset)
        start = offset + _ONE_REF.size
        return [(buffer[start:start + length], expiry)]
    expiries = _u64s(nrefs).unpack_from(buffer, offset)
    offset += 8 * nrefs
    lengths = _u16s(nrefs).unpack_from(buffer, offset)
    offset += 2 * nrefs
    refs = []
    for length, expiry in zip(lengths, expiries, strict=True):
        refs.append((buffer[offset:offset + length], expiry))
        offset += length
    return refs


def decode_expiry_value(value: bytes) -> tuple[int, int, int, list[Ref]]:
    """(record size, enqueued ms, max expiry ms, refs) of an expiry entry."""
    record_size, enqueued, max_expiry, nrefs, *_ = EXPIRY_HEAD.unpack_from(value, 0)
    return record_size, enqueued, max_expiry, decode_refs(value, EXPIRY_HEAD.size, nrefs)


def _decode_strings(data: bytes, strings_format: int, count: int) -> list[str]:
    if strings_format == STRINGS_JOINED:
        return data.decode("utf-8", _TEXT_ERRORS).split("\x00")
    lengths = _u32s(count).unpack_from(data, 0)
    offset = 4 * count
    strings = []
    for length in lengths:
        strings.append(data[offset:offset + length].decode("utf-8", _TEXT_ERRORS))
        offset += length
    return strings


def decode_message(record: bytes) -> Message:
    head = RECORD_HEAD.unpack_from(record, 0)
    enqueued, _, _, refs_bytes, strings_format, nprops, nsys, strings_bytes = head
    start = RECORD_HEAD.size + refs_bytes
    body_start = start + strings_bytes
    if not nprops and not nsys:
        return Message(record[body_start:], enqueued_ms=enqueued)
    strings = record[start:body_start]
    key = (strings_format, nprops, strings)
    known = _decoded.get(key)
    if known is None:
        known = _decode_properties(strings, strings_format, nprops, nsys)
        if len(_decoded) >= PROPERTIES_CACHE:
            _decoded.clear()
        _decoded[key] = known
    return Message(record[body_start:], known[0], known[1], enqueued)


def _decode_properties(
    data: bytes, strings_format: int, nprops: int, nsys: int,
) -> tuple[Mapping[str, str], Mapping[str, str]]:
    texts = iter(_decode_strings(data, strings_format, 2 * (nprops + nsys)))
    pairs = zip(texts, texts, strict=False)
    properties = MappingProxyType(dict(islice(pairs, nprops))) if nprops else EMPTY_PROPERTIES
    system = MappingProxyType(dict(pairs)) if nsys else EMPTY_PROPERTIES
    return properties, system


def decode_record_refs(record: bytes) -> list[Ref]:
    """The refs a record was stored with (stats, recovery checks)."""
    nrefs = RECORD_HEAD.unpack_from(record, 0)[2]
    return decode_refs(record, RECORD_HEAD.size, nrefs)
