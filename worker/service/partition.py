"""Split an event log by merchant for `slatimer replay --jobs N`, and merge the parts back.

A merchant's orders share its standing (repeat windows, points thresholds, the catch-up of its
overdue clocks), so every order's events go to its merchant's part; events naming only an
order go where that order's `order.created` went (an order created again, earlier but told
later, passes to that creation's merchant: the two merchants then share a part). Case
streams (IPR complaints, inquiries) stand alone and go by their own key; platform-wide events
(announcements, closures) go to every part. Keys go to parts by size, the largest first to
the part with the fewest lines so far (ties by key): deterministic, and balanced where a hash
is not (four merchants hashed over two parts put three in one).

What stays global is the clock. One replay moves it to each event's time (never back) and,
before each event, fires every clock due before it, across all merchants. So each part also
gets a tick for the others' events: the clock moves, the part's own due clocks fire, exactly
when one replay would fire them. (A tick no later than one already given since the part's own
last line changes nothing, and is left out.) Only lines that parse move the clock and create
orders; the split guesses which do from the decoded JSON, the parts report what really parsed,
and a wrong guess makes the replay split and run again with the truth.

Why the merge order is what it is: one replay prints its outcomes sorted by `at`, and
outcomes of the same `at` in the order they were made. They are made step by step through the
log: before line n the due clocks fire, in due order (`DueDeadline.rank`: time, order, rule,
subject); then line n is handled, and a platform-wide one re-judges its streams in order of
stream key. Each part tags its outcomes with that step, `(n, 0, rank, k)` for a clock fired
before line n and `(n, 1, stream, k)` for line n itself, `k` counting the part's outcomes.
A clock, an order and a stream belong to one part, so sorting every part's outcomes by tag
gives the order one replay makes them in, and sorting that (stably) by `at` what it prints.
(This holds as long as firing a clock never makes another clock due before the batch in
hand is done, as with the rules today: one replay fires clocks in batches of the store's
`due` query, and a part's batches hold other clocks.)

A log that uses one `event_id` on lines of different parts cannot be split exactly (one
replay's inbox refuses the second use, the parts' separate inboxes would not): `scan` returns
None for it and the replay runs in one process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from models.events import (
    CASE_EVENT_TYPES,
    EARLIEST,
    EVENT_TYPES,
    LATEST,
    MAX_EVENT_BYTES,
    PLATFORM_WIDE_TYPES,
    stream_key,
)
from models.outcomes import Outcome

EVERY = -1
"""The part of a platform-wide line: all of them."""

Tag = tuple[int, int, Any, int]
"""(line number, 0 for clocks fired before it or 1 for the line, clock rank or stream, count)."""
Item = tuple[int, bytes | datetime]
"""A part's work: (number, line) to handle, or (number, time) to move the clock to."""


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    raw: bytes
    part: int
    """Its part, or EVERY."""
    at: datetime | None
    """The time one replay's clock moves to for it; None if it does not parse."""


@dataclass
class Part:
    """What replaying one part gives back."""

    outcomes: list[tuple[Tag, Outcome]] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    events: int = 0
    """Own lines handled, not counting platform-wide ones (every part handles those)."""
    platform_events: int = 0
    parsed: dict[int, datetime | None] = field(default_factory=dict)
    """Each line it parsed: the event's time, None if it did not parse."""


def numbered_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | bytes]]:
    """Non-blank lines with their 1-based line numbers, for `line N: reason` errors."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def balanced(sizes: Mapping[str, int], parts: int) -> dict[str, int]:
    """A part for each key (merchant or stream), given its number of lines: the largest first,
    each to the part with the fewest lines so far, ties by key, then by lowest part."""
    loads = [0] * parts
    place: dict[str, int] = {}
    for key, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        part = min(range(parts), key=loads.__getitem__)
        place[key] = part
        loads[part] += size
    return place


def scan(
    lines: Iterable[str | bytes], parts: int, parsed: Mapping[int, datetime | None] | None = None
) -> list[Line] | None:
    """Each non-blank line with its part and its time; None if the log cannot be split
    exactly. The times are guessed from the decoded lines, or taken from `parsed` (line number
    to the event's time, None where it did not parse) once the parts have parsed them."""
    decoded = [(number, _raw(line)) for number, line in numbered_lines(lines)]
    documents = [_document(raw) for _, raw in decoded]
    moments = [
        _moment(document) if parsed is None else parsed[number]
        for (number, _), document in zip(decoded, documents, strict=True)
    ]
    merchants = _merchants(documents, moments)
    keys = [_key(document, merchants) for document in documents]
    place = balanced(Counter(key for key in keys if isinstance(key, str)), parts)
    scanned: list[Line] = []
    first: dict[str, tuple[int, bytes]] = {}
    for (number, raw), document, key, moment in zip(decoded, documents, keys, moments, strict=True):
        part = place[key] if isinstance(key, str) else EVERY if key else number % parts
        if key is not None and _reused(document, part, raw, first):
            return None
        scanned.append(Line(number, raw, part, moment))
    return scanned


def _reused(
    document: dict[str, Any], part: int, raw: bytes, first: dict[str, tuple[int, bytes]]
) -> bool:
    """Whether the line reuses an `event_id` where the parts' inboxes would not refuse it as
    one replay's does: on a line of another part, or of an `order.created` with another body
    (refused, it creates nothing, which `_merchants` does not foresee)."""
    event_id = document.get("event_id")
    if not isinstance(event_id, str):
        return False
    seen_part, seen_raw = first.setdefault(event_id, (part, raw))
    return seen_part != part or (seen_raw != raw and document.get("type") == "order.created")


def _raw(line: str | bytes) -> bytes:
    return line.encode("utf-8", errors="surrogatepass") if isinstance(line, str) else line


def _document(raw: bytes) -> dict[str, Any]:
    """The decoded line, {} for one that does not decode to an object (it will not parse)."""
    if len(raw) > MAX_EVENT_BYTES:
        return {}
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


def _merchants(documents: list[dict[str, Any]], moments: list[datetime | None]) -> dict[str, str]:
    """For each order, the key that places it: its merchant's name. An order created twice
    belongs to the earliest creation (by time, then event id), and a late line can be earlier:
    then its merchant changes, so merchants that an order passes between are placed together,
    under the first of their names."""
    held: dict[str, tuple[datetime, str, str]] = {}
    parent: dict[str, str] = {}

    def root(merchant: str) -> str:
        while parent[merchant] != merchant:
            merchant = parent[merchant] = parent[parent[merchant]]
        return merchant

    for document, moment in zip(documents, moments, strict=True):
        fields = [document.get(name) for name in ("order_id", "event_id", "merchant_id")]
        if document.get("type") != "order.created" or moment is None:
            continue
        order, event_id, merchant = fields
        if not (isinstance(order, str) and isinstance(event_id, str) and isinstance(merchant, str)):
            continue
        parent.setdefault(merchant, merchant)
        creation = held.get(order)
        if creation is None or (moment, event_id) < creation[:2]:
            if creation is not None:
                one, other = root(creation[2]), root(merchant)
                parent[max(one, other)] = min(one, other)
            held[order] = (moment, event_id, merchant)
    return {order: root(merchant) for order, (_, _, merchant) in held.items()}


def _key(document: dict[str, Any], merchants: dict[str, str]) -> str | bool | None:
    """What places the line: a merchant or a stream key, True for every part, None for a
    line that cannot be an event (placed by its number)."""
    kind = document.get("type")
    if kind in PLATFORM_WIDE_TYPES:
        return True
    if kind not in EVENT_TYPES:
        return None
    stream = stream_key(document)
    if not isinstance(stream, str):
        return None
    if kind in CASE_EVENT_TYPES:
        return stream
    return merchants.get(stream, stream)


def _moment(document: dict[str, Any]) -> datetime | None:
    """`occurred_at` as parsing would read it, if the line looks like an event."""
    value = document.get("occurred_at")
    if document.get("type") not in EVENT_TYPES or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None or not EARLIEST <= moment < LATEST:
        return None
    return moment.astimezone(UTC)


def split(lines: list[Line], parts: int) -> list[list[Item]]:
    """Each part's work in log order: its own lines (and the platform-wide ones), and a tick
    for each other line that moves the clock past the ticks since the part's last line. A part
    that owns no line but platform-wide ones (more parts than merchants) would make no outcome
    and is left out."""
    work: list[list[Item]] = [[] for _ in range(parts)]
    latest: list[datetime | None] = [None] * parts
    for line in lines:
        for part, last in enumerate(latest):
            if line.part in (part, EVERY):
                work[part].append((line.number, line.raw))
                latest[part] = None
            elif line.at is not None and (last is None or line.at > last):
                work[part].append((line.number, line.at))
                latest[part] = line.at
    owners = {line.part for line in lines}
    return [items for part, items in enumerate(work) if part == 0 or part in owners]


def misguessed(lines: list[Line], parts: list[Part]) -> dict[int, datetime | None] | None:
    """The times the parts really parsed (for `scan` again), if any line's was guessed wrong."""
    parsed: dict[int, datetime | None] = {}
    for part in parts:
        parsed.update(part.parsed)
    return parsed if any(parsed[line.number] != line.at for line in lines) else None


def merge(parts: list[Part]) -> tuple[list[Outcome], list[str], int]:
    """Every part's outcomes in the order one replay makes them, its error lines in line
    order (a platform-wide line's once), and the number of events handled."""
    tagged = sorted((item for part in parts for item in part.outcomes), key=itemgetter(0))
    errors: dict[int, str] = {}
    for part in parts:
        errors.update(part.errors)
    events = sum(part.events for part in parts) + max(part.platform_events for part in parts)
    return [outcome for _, outcome in tagged], [errors[n] for n in sorted(errors)], events
