"""Read what Adjust sends (raw-export CSV, callback logs) and normalise it into canonical events.

Two steps, so the expensive one runs on many files at once:

* ``read_source(name, data)`` turns one file's bytes into text columns named by placeholder
  (``{created_at}`` and ``[user_id]`` become ``created_at`` and ``user_id``) with each row's line,
  or raises ``BadFile`` (not CSV, wrong encoding, truncated gzip, empty, no usable header);
* ``normalise(rows, user_id_column=...)`` validates and maps a batch of such rows to the canonical
  event table of ``features.schema.EVENT_COLUMNS``, and returns the rejected rows with one reason
  each (``REASONS``). Everything is vectorised with pyarrow.compute.

Format rules follow ``../shared/specs/adjust-subscriptions.md`` §d: columns by name in any order,
missing key == empty value, Unix seconds or ``2016-04-04T23:16UTC`` times, RFC 4180 quoting.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import urllib.parse
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from base import SHOWN_CHARS, LapseError
from features import duck
from features import schema as s
from features.settings import DEFAULT_MAX_PRICE

#: Why a row was quarantined (the ``reason`` column); ``detail`` names the field and value.
REASONS: Final = {
    "truncated_row": "the row has a different number of fields than the header",
    "missing_identity": "neither the customer user id nor the adid is set",
    "missing_event_time": "created_at is empty",
    "bad_timestamp": "a time field is neither Unix seconds, YYYY-MM-DDTHH:MMUTC nor ISO 8601",
    "unknown_platform": "no os_name, subscription_store, idfv or gps_adid tells the platform",
    "missing_activity_kind": "no activity_kind and no subscription_event_type",
    "missing_event_name": "an in-app event row has neither event_name nor the event token",
    "unknown_event": "subscription event (and subtype) in neither the current nor the legacy list",
    "bad_number": "revenue_float is not a (finite) number",
    "negative_price": "revenue_float is negative",
    "implausible_price": "revenue_float is above ingest.max_price",
    "expiry_before_purchase": "subscription_expiration_time is before subscription_purchased_at",
    "invalid_callback": "a callback log line is neither a URL with a query string nor JSON",
    "wrong_encoding": "the line holds bytes that are not UTF-8 text (or a NUL)",
    "too_large": "a value (or callback line) is over MAX_FIELD_CHARS, Adjust's 1 MB callback limit",
    "unbalanced_quote": "a quoted value is never closed, or swallowed the line ends of later rows",
    "malformed_row": "the CSV parser refused the record (e.g. a bare CR in an unquoted value)",
    "truncated_gzip": "the last line of a truncated gzip stream, cut off",
    "corrupt_gzip": "the last line decompressed before a corrupt gzip block, cut off",
    "implausible_time": "a time outside the plausible window (ingest.earliest .. now + "
    "ingest.max_future_days; any time after 2100)",
}
#: Why a whole file was not read (reported in the summary, and in the quarantine at line 0).
BAD_FILE_REASONS: Final = {
    "empty_file": "the file has no bytes (after decompression)",
    "truncated_gzip": "the gzip stream ends early",
    "corrupt_gzip": "the gzip stream cannot be decompressed",
    "wrong_encoding": "the text is not UTF-8",
    "not_adjust_csv": "the header names none of Adjust's columns",
    "missing_column": "a column every row needs is absent from the header",
    "duplicate_column": "the header names a column twice",
    "unreadable_csv": "the CSV parser gave up on the file",
    "unreadable_file": "the file could not be read from disk",
    "broken_link": "a symbolic link whose target does not exist",
    "not_a_regular_file": "a named pipe, socket or device: reading it could block for ever",
}
BAD_FILE_LINE: Final = 0
HEADER_LINE: Final = 1

#: Adjust placeholders Lapse maps into the canonical table; any other column is "unknown".
KNOWN_COLUMNS: Final = frozenset(
    {
        s.ACTIVITY_KIND,
        s.CREATED_AT,
        s.INSTALLED_AT,
        s.APP_TOKEN,
        s.APP_NAME,
        s.OS_NAME,
        s.ADID,
        s.IDFA,
        s.IDFV,
        s.GPS_ADID,
        s.COUNTRY_PH,
        s.ENVIRONMENT_PH,
        s.TRACKER_NAME,
        s.NETWORK_NAME,
        s.EVENT_TOKEN,
        s.EVENT_NAME,
        s.REVENUE_FLOAT,
        s.CURRENCY_PH,
        s.SUB_EVENT_TYPE,
        s.SUB_EVENT_SUBTYPE,
        s.SUB_PURCHASED_AT,
        s.SUB_EXPIRATION_TIME,
        s.SUB_CANCELLED_AT,
        s.SUB_TRANSACTION_ID,
        s.SUB_ORIGINAL_TRANSACTION_ID,
        s.SUB_EXPIRED_TRANSACTION_ID,
        s.SUB_ENVIRONMENT,
        s.SUB_PRODUCT_ID,
        s.SUB_SALES_REGION,
        s.SUB_STORE,
    }
)
#: Adjust columns whose values say nothing Lapse stores (identifiers kept only for platform).
_DROPPED: Final = frozenset({s.APP_NAME, s.IDFA, s.TRACKER_NAME})
#: Internal column of a read batch: which of the batch's sources a row came from.
SOURCE_INDEX: Final = "__source_index"

#: Names a read batch uses for itself: an input column so named is renamed ``raw_<name>``.
RESERVED_COLUMNS: Final = frozenset({s.LINE, s.SOURCE, SOURCE_INDEX})
#: The event key's version, recorded with each commit: 1 keyed identity, kind, raw name,
#: subtype, transaction ids and second; 2 adds what tells activities apart beyond those.
KEY_VERSION: Final = 2
_KEY_DETAIL_COLUMNS: Final = (
    s.PRICE,
    s.CURRENCY,
    s.PRODUCT_ID,
    s.PURCHASED_AT,
    s.EXPIRES_AT,
    s.CANCELLED_AT,
    s.EXPIRED_TRANSACTION_ID,
    s.ENVIRONMENT,
)
#: The canonical columns canonical_event_keys reads.
KEY_COLUMNS: Final = (
    s.ADID,
    s.USER_ID,
    s.PLATFORM,
    s.KIND,
    s.EVENT_RAW,
    s.EVENT_SUBTYPE,
    s.TRANSACTION_ID,
    s.ORIGINAL_TRANSACTION_ID,
    s.TS,
    *_KEY_DETAIL_COLUMNS,
)
#: The longest value kept (characters): Adjust sends callbacks of at most 1 MB.
MAX_FIELD_CHARS: Final = 1 << 20
_CSV_FIELD_LIMIT = (1 << 31) - 1  # Python's csv refuses fields over 128 KB by default
_TIME_LIKE = re.compile(r"^\s*(\d{1,12}|\d{4}-\d\d-\d\d[T ]\d\d:\d\d\S*)\s*$")

_UTC: Final = pa.timestamp("us", tz="UTC")
#: Times from here on are garbage whatever the window (an expiry may be years ahead, not this).
LAST_PLAUSIBLE: Final = datetime(2100, 1, 1, tzinfo=UTC)
#: The default of ``ingest.earliest``: Adjust (and app-store subscriptions) start after it.
DEFAULT_EARLIEST: Final = datetime(2008, 1, 1, tzinfo=UTC)
_ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
_TEXT_TIME_FORMATS = ("%Y-%m-%dT%H:%MUTC", "%Y-%m-%dT%H:%M:%SUTC", "%Y-%m-%dT%H:%M:%SZ")
_NUMBER = r"^\s*-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
_CALLBACK_SUFFIXES = (".log", ".jsonl", ".ndjson")


class BadFile(LapseError):
    """A file that cannot be read as Adjust data at all; ``reason`` is in BAD_FILE_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in BAD_FILE_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Source:
    """One file read into text columns: ``rows`` has a ``line`` column (1-based, header = 1).

    ``rejected`` lists rows refused while reading (line, reason, detail, raw); ``text`` is the
    decoded file, kept so quarantined rows can carry their raw record. ``header`` is a CSV's
    header line (None for callback logs), ``spans`` maps the first line of each record that
    spans lines to its last, ``notes`` says what was read differently than asked (a renamed
    column, CR line ends), and ``damage`` is a file-level fault whose intact rows were kept.
    ``raws`` holds the raw records by line where ``text`` is not the file's (a re-read).
    """

    name: str
    rows: pa.Table
    rejected: list[tuple[int, str, str, str]] = field(default_factory=list)
    text: str = ""
    header_only: bool = False
    header: str | None = None
    spans: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    damage: BadFile | None = None
    raws: dict[int, str] = field(default_factory=dict)

    @functools.cached_property
    def _lines(self) -> list[str]:
        return self.text.split("\n")

    def raw_line(self, line: int) -> str:
        """The text of the record starting at physical line ``line`` (1-based)."""
        if self.raws:
            return self.raws.get(line, "")
        if not 0 < line <= len(self._lines):
            return ""
        end = self.spans.get(line, line)
        return "\n".join(text.rstrip("\r") for text in self._lines[line - 1 : end])


# --- reading ------------------------------------------------------------------------------------


def read_source(name: str, data: bytes) -> Source:
    """Decompress, decode and parse one file (CSV or callback log) into text columns.

    Damage is confined to what it touches: rows with bytes that are not UTF-8, values over
    MAX_FIELD_CHARS and the cut tail of a truncated gzip are rejected, the rest is kept.
    """
    notes: list[str] = []
    damage = None
    if data[:2] == b"\x1f\x8b":
        data, damage = _decompress(data)
    elif name.lower().endswith(".gz") and data:
        notes.append("named .gz but not gzip-compressed: read as plain text")
    data, rejected = _utf8_lines(data.removeprefix(b"\xef\xbb\xbf"))
    text = data.decode("utf-8")
    if "\n" not in text and "\r" in text:  # old-Mac line ends
        text = text.replace("\r", "\n")
        data = text.encode("utf-8")
        notes.append("CR-only line ends read as line breaks")
    if damage is not None and not text.endswith("\n"):  # the cut-off last line is not a row
        cut = text.rfind("\n") + 1
        if not cut:  # not even the header line is whole
            raise damage
        line = text.count("\n") + 1
        rejected.append((line, damage.reason, damage.detail, text[cut:].rstrip("\r")))
        text, data = text[:cut], text[:cut].encode("utf-8")
    if not text.strip():
        if damage is not None:
            raise damage
        raise BadFile("empty_file", "no content")
    start = len(text) - len(text.lstrip())
    end = text.find("\n", start)
    first = text[start : end if end >= 0 else len(text)].strip()
    if _is_callback_log(name, first):
        source = _read_callbacks(name, text)
    else:
        source = _read_csv(name, text, data)
    source.rejected = sorted(rejected + source.rejected)
    source.header_only = source.header_only and not source.rejected
    source.notes = notes + source.notes
    source.damage = damage
    return source


def _decompress(data: bytes) -> tuple[bytes, BadFile | None]:
    """Gzip members (concatenated ones are one stream) → bytes, and the damage found, if any:
    what came out before a truncation or a corrupt block is kept."""
    out: list[bytes] = []
    damage = None
    while data[:2] == b"\x1f\x8b":
        unpacker = zlib.decompressobj(31)
        try:
            for at in range(0, len(data), 1 << 20):  # in chunks: output before a bad block survives
                out.append(unpacker.decompress(data[at : at + (1 << 20)]))
                if unpacker.eof:
                    break
            out.append(unpacker.flush())
        except zlib.error as exc:
            damage = BadFile("corrupt_gzip", f"{exc} after {sum(map(len, out))} bytes of output")
            break
        if not unpacker.eof:
            damage = BadFile(
                "truncated_gzip",
                f"gzip stream ends early after {len(data)} bytes; the complete rows were kept",
            )
            break
        data = unpacker.unused_data
    result = b"".join(out)
    if damage is not None and not result.strip():
        raise damage
    return result, damage


def _utf8_lines(data: bytes) -> tuple[bytes, list[tuple[int, str, str, str]]]:
    """``data`` with every line that is not UTF-8 text (or holds a NUL) blanked, and those lines
    as rejections; a bad first line (the header, or a binary file) makes the file bad."""
    try:
        data.decode("utf-8")
        if b"\x00" not in data:
            return data, []
    except UnicodeDecodeError:
        pass
    end = b"\n" if b"\n" in data or b"\r" not in data else b"\r"  # CR-only: old-Mac lines
    lines = data.split(end)
    rejected = []
    for number, line in enumerate(lines, start=1):
        why = "a NUL byte: binary, not text" if b"\x00" in line else ""
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            why = f"not UTF-8 at byte {exc.start} of the line ({line[exc.start : exc.start + 4]!r})"
        if not why:
            continue
        if number == 1:
            raise BadFile("wrong_encoding", f"line 1: {why}")
        raw = line.decode("utf-8", "backslashreplace").rstrip("\r").replace("\x00", "\\x00")
        rejected.append((number, "wrong_encoding", why, raw))
        lines[number - 1] = b""
    return end.join(lines), rejected


def _is_callback_log(name: str, first_line: str) -> bool:
    base = name.lower().removesuffix(".gz")
    if base.endswith(_CALLBACK_SUFFIXES) or re.match(r'\{\s*["}]', first_line):
        return True  # a CSV header may start with a {placeholder}, a JSON object with {"
    return first_line.startswith(("http://", "https://", "/", "?", "GET "))


def column_name(token: str) -> str:
    """A CSV-definition token as a column name: ``{created_at}``, ``[user_id]``, ``"x"`` → bare."""
    return token.strip().strip('"').strip().strip("{}[]").strip()


def own_names(names: list[str]) -> tuple[list[str], list[str]]:
    """Column names with those that collide with Lapse's own (RESERVED_COLUMNS, or a name given
    twice) prefixed ``raw_`` until unique, and a note for each renamed one."""
    taken: set[str] = set()
    out, notes = [], []
    for name in names:
        new = name
        while new in RESERVED_COLUMNS or new in taken:
            new = f"raw_{new}"
        if new != name:
            notes.append(f"column {name!r} is one of Lapse's own names: kept as {new!r}")
        taken.add(new)
        out.append(new)
    return out, notes


def _read_csv(name: str, text: str, data: bytes) -> Source:
    """``data`` is ``text`` as UTF-8 bytes (no BOM): parsed by Arrow when every record is one
    line of sane size, else record by record with Python's csv module."""
    end = text.find("\n")
    header_text = text[: end if end >= 0 else len(text)].rstrip("\r")
    try:
        tokens = next(csv.reader([header_text]), [])
    except csv.Error as exc:
        raise BadFile("unreadable_csv", f"header: {exc}") from None
    header = [column_name(t) for t in tokens]
    known = KNOWN_COLUMNS.intersection(header)
    if not known:  # before the duplicate check: a file without a header starts with a data row
        raise BadFile("not_adjust_csv", f"header {header_text[:120]!r} names no Adjust column")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise BadFile("duplicate_column", f"header names {', '.join(dup)} more than once")
    if s.CREATED_AT not in header:
        raise BadFile(
            "missing_column",
            f"no {s.CREATED_AT} column in the header (found {', '.join(header)})",
        )
    time_at = header.index(s.CREATED_AT)
    header, notes = own_names(header)
    source = _arrow_csv(name, text, data, header)
    if source is None:  # values spanning lines, huge values, or something Arrow refused
        source = _python_csv(name, text, header, time_at)
    source.header = header_text
    source.notes = notes
    return source


def _arrow_csv(name: str, text: str, data: bytes, header: list[str]) -> Source | None:
    """The fast path: Arrow's parser, or None when a record spans lines, a value is over
    MAX_FIELD_CHARS, or Arrow gives up (the caller then reads record by record)."""
    invalid: list[tuple[int | None, str, int, int]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(
                skip_rows=1, column_names=header, use_threads=False, block_size=1 << 24
            ),
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid, ignore_empty_lines=False, newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, ValueError):
        return None
    records = table.num_rows + len(invalid)
    newlines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if newlines != records + 1:  # quoted newlines inside values
        return None
    for column in table.columns:
        longest = pc.max(pc.utf8_length(column)).as_py()
        if longest is not None and longest > MAX_FIELD_CHARS:
            return None
    tail = text.rstrip("\r\n")
    if _unclosed([tail[tail.rfind("\n") + 1 :]]):
        return None  # an unclosed quote on the last line swallowed its line end
    bad = np.array([r[0] for r in invalid], np.int64)
    lines = np.setdiff1d(np.arange(2, records + 2, dtype=np.int64), bad, assume_unique=True)
    rejected = [
        (int(line), "truncated_row", f"expected {expected} fields, found {actual}", row_text)
        for line, (_, row_text, expected, actual) in zip(bad.tolist(), invalid, strict=True)
    ]
    table = table.append_column(s.LINE, pa.array(lines, pa.int64()))
    source = Source(name, table, rejected, text, header_only=records == 0)
    # blank lines arrive as all-empty rows: not data, not an error (",,," is a row, though)
    if b"\n\n" in data or b"\n\r\n" in data:
        empty = functools.reduce(pc.and_, [pc.is_null(table.column(c)) for c in header])
        at = np.flatnonzero(empty.to_numpy())
        numbers = table.column(s.LINE).take(at).to_pylist()
        keep = np.ones(table.num_rows, bool)
        keep[at[[source.raw_line(n) == "" for n in numbers]]] = False
        source.rows = table.filter(pa.array(keep))
    return source


def _python_csv(name: str, text: str, header: list[str], time_at: int) -> Source:
    """The careful path: record by record, so one bad record costs only itself."""
    lines = text.split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    good, rejected, spans = _records(lines[1:], 2, len(header), time_at)
    columns = {
        h: pa.array([fields[i] or None for _, fields in good], pa.string())
        for i, h in enumerate(header)
    }
    columns[s.LINE] = pa.array([line for line, _ in good], pa.int64())
    source = Source(name, pa.table(columns), rejected, text, header_only=not good and not rejected)
    source.spans = spans
    return source


Record = tuple[int, list[str]]
Rejection = tuple[int, str, str, str]


def _records(
    lines: list[str], first: int, width: int, time_at: int
) -> tuple[list[Record], list[Rejection], dict[int, int]]:
    """Parse physical ``lines`` (numbered from ``first``) into (line, fields) records.

    A record whose quoted value swallowed line ends of lines shaped like rows of this file (or
    ran to the end unclosed) is an unbalanced quote: its first line is rejected and parsing
    starts again on the next line, so the rows it swallowed are kept.
    """
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    good: list[Record] = []
    rejected: list[Rejection] = []
    spans: dict[int, int] = {}
    reader, base, done = csv.reader(iter(lines)), 0, 0
    while done < len(lines):
        start = done
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            done = max(base + reader.line_num, start + 1)
            raw = "".join(lines[start:done]).rstrip("\r\n")
            rejected.append((first + start, "malformed_row", str(exc), raw))
            continue
        done = base + reader.line_num
        line = first + start
        inner = lines[start + 1 : done]
        unclosed = done == len(lines) and _unclosed(lines[start:done])
        if unclosed or any(_row_shaped(text, width, time_at) for text in inner):
            why = (
                "a quoted value is never closed"
                if unclosed
                else f"a quoted value swallowed the line ends of rows up to line {first + done - 1}"
            )
            rejected.append((line, "unbalanced_quote", why, lines[start].rstrip("\r\n")))
            done = base = start + 1  # read on from the next line, as if this one were not there
            reader = csv.reader(iter(lines[base:]))
            continue
        if inner:
            spans[line] = first + done - 1
        raw = "".join(lines[start:done]).rstrip("\r\n")
        if not fields:
            continue  # a blank line
        if len(fields) != width:
            found = f"expected {width} fields, found {len(fields)}"
            rejected.append((line, "truncated_row", found, raw))
            continue
        longest = max(len(f) for f in fields)
        if longest > MAX_FIELD_CHARS:
            column = max(range(width), key=lambda i: len(fields[i]))
            rejected.append(
                (
                    line,
                    "too_large",
                    f"a value of {longest} characters (at most {MAX_FIELD_CHARS}), field "
                    f"{column + 1}",
                    raw,
                )
            )
            continue
        good.append((line, fields))
    return good, rejected, spans


def _unclosed(record: list[str]) -> bool:
    """Whether the record's lines end inside a quoted value (it would swallow a next line)."""
    reader = csv.reader(iter([*(r if r.endswith("\n") else r + "\n" for r in record), "\n", "x\n"]))
    try:
        next(reader)
    except (csv.Error, StopIteration):
        return False
    return reader.line_num > len(record)


def _row_shaped(text: str, width: int, time_at: int) -> bool:
    """Whether a line parses on its own as a row of this file (its width, or fewer fields with
    the last one opening a quoted value) with a time in created_at."""
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error:
        return False
    if not time_at < len(fields) <= width or _TIME_LIKE.match(fields[time_at]) is None:
        return False
    return len(fields) == width or _unclosed([text])  # whole, or a row opening a quoted value


def _read_callbacks(name: str, text: str) -> Source:
    """One callback per line: a URL (query string) or a JSON object; blank lines are skipped."""
    lines = pa.array(text.split("\n"), pa.string())
    lines = pc.utf8_trim(lines, "\r \t")
    number = pa.array(np.arange(1, len(lines) + 1, dtype=np.int64))
    keep = pc.not_equal(pc.utf8_length(lines), 0)
    lines, number = lines.filter(keep), number.filter(keep)
    huge = pc.greater(pc.utf8_length(lines), MAX_FIELD_CHARS)
    rejected = [
        (line, "too_large", f"a callback of {len(raw)} characters (at most {MAX_FIELD_CHARS})", raw)
        for line, raw in zip(
            number.filter(huge).to_pylist(), lines.filter(huge).to_pylist(), strict=True
        )
    ]
    lines, number = lines.filter(pc.invert(huge)), number.filter(pc.invert(huge))
    is_json = pc.starts_with(lines, "{")
    is_query = pc.and_(pc.match_substring(lines, "="), pc.invert(is_json))
    neither = pc.invert(pc.or_(is_json, is_query))
    rejected += [
        (line, "invalid_callback", "neither a query string nor JSON", raw)
        for line, raw in zip(
            number.filter(neither).to_pylist(), lines.filter(neither).to_pylist(), strict=True
        )
    ]
    json_rows, json_rejected = _json_rows(lines.filter(is_json), number.filter(is_json))
    rejected += json_rejected
    parts = [_query_rows(lines.filter(is_query), number.filter(is_query)), json_rows]
    parts = [p for p in parts if p.num_rows]
    rows = pa.concat_tables(parts, promote_options="default") if parts else _no_rows()
    numbers = rows.column(_LINE)
    rows = rows.drop_columns([_LINE])
    names, notes = own_names([column_name(c) for c in rows.column_names])
    rows = rows.rename_columns(names).append_column(s.LINE, numbers)
    if not rows.num_rows and not rejected:
        raise BadFile("empty_file", "no callbacks")
    return Source(name, rows, sorted(rejected), text, notes=sorted(set(notes)))


#: A callback batch's line numbers before its keys are named (a key may be called ``line``).
_LINE = "\x00line"


def _no_rows() -> pa.Table:
    return pa.table({_LINE: pa.array([], pa.int64())})


def _query_rows(lines: pa.Array, number: pa.Array) -> pa.Table:
    """URL query strings → one text column per key (URL-decoded), vectorised over all lines."""
    if not len(lines):
        return _no_rows()
    query = pc.replace_substring_regex(lines, r"^(GET\s+)?[^?]*\?", "", max_replacements=1)
    query = pc.replace_substring_regex(query, r"(\s+HTTP/[\d.]+)?#.*$|\s+HTTP/[\d.]+$", "")
    pairs = pc.split_pattern(query, "&")
    row = pc.list_parent_indices(pairs).to_numpy()
    flat = pc.list_flatten(pairs)
    key = _url_decode(pc.replace_substring_regex(flat, "=.*$", ""))
    has_value = pc.match_substring(flat, "=")
    value = _url_decode(
        pc.if_else(has_value, pc.replace_substring_regex(flat, "^[^=]*=", ""), None)
    )
    columns: dict[str, pa.Array] = {}
    keys = key.to_numpy(zero_copy_only=False)
    for k in pc.unique(key).to_pylist():
        if not k:
            continue
        at = np.flatnonzero(keys == k)
        index = np.full(len(lines), -1, np.int64)
        index[row[at]] = at  # a key given twice: the last one wins
        taken = value.take(pa.array(index, mask=index < 0))
        columns[k] = pc.if_else(pc.equal(taken, ""), None, taken)
    columns[_LINE] = number
    return pa.table(columns)


def _url_decode(values: pa.Array) -> pa.Array:
    """Percent- and plus-decoding; only the distinct encoded values go through Python."""
    encoded = pc.or_(pc.match_substring(values, "%"), pc.match_substring(values, "+"))
    if not pc.any(encoded).as_py():
        return values
    distinct = pc.unique(values.filter(encoded))
    decoded = pa.array([urllib.parse.unquote_plus(v) for v in distinct.to_pylist()], pa.string())
    return pc.if_else(encoded, decoded.take(pc.index_in(values, distinct)), values)


#: Arrow's JSON reader's default block size: an input of at most one block is one parse.
_JSON_BLOCK = pajson.ReadOptions().block_size


def _json_rows(lines: pa.Array, number: pa.Array) -> tuple[pa.Table, list]:
    """JSON objects → text columns; parsed by Arrow, line by line if Arrow cannot take them all
    (a broken line, or shapes its reader mishandles, e.g. odd nested lists)."""
    if not len(lines):
        return _no_rows(), []
    data = "\n".join(lines.to_pylist()).encode()
    # within one block (a service request's callbacks) Arrow parses it alike on this thread:
    # handing a few kB to its thread pool costs a wake-up, a long wait on a busy machine
    threads = pajson.ReadOptions(use_threads=len(data) > _JSON_BLOCK)
    try:
        table = pajson.read_json(pa.py_buffer(data), read_options=threads)
        if table.num_rows != len(lines):
            raise pa.ArrowInvalid("a line holds more or less than one object")
        columns = {c: _as_text(table.column(c)) for c in table.column_names}
        rejected: list = []
    except pa.ArrowException:
        table, number, rejected = _json_lines(lines, number)
        columns = {c: _as_text(table.column(c)) for c in table.column_names}
    columns[_LINE] = number
    return pa.table(columns) if table.num_rows else _no_rows(), rejected


def _json_lines(lines: pa.Array, number: pa.Array) -> tuple[pa.Table, pa.Array, list]:
    """Each line on its own: objects become rows of text values, the rest is rejected."""
    records, rejected = [], []
    for line, raw in zip(number.to_pylist(), lines.to_pylist(), strict=True):
        try:
            obj = json.loads(raw)
            # a \\u escape of half a surrogate pair is JSON but no character: refuse the line
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            obj, why = None, "a \\u escape that is not a character (a lone surrogate)"
        except ValueError as exc:
            obj, why = None, f"invalid JSON: {exc}"
        else:
            why = "" if isinstance(obj, dict) else "JSON value is not an object"
        if why:
            rejected.append((line, "invalid_callback", why, raw))
        else:
            records.append((line, obj))
    # every key of every object (from_pylist would take the first object's keys only)
    keys = dict.fromkeys(k for _, obj in records for k in obj)
    table = pa.table(
        {k: pa.array([_text(obj.get(k)) for _, obj in records], pa.string()) for k in keys}
    )
    return table, pa.array([line for line, _ in records], pa.int64()), rejected


def _text(value) -> str | None:
    """A JSON value as text, as ``_as_text`` makes Arrow's columns (1767571999.0 → "1767571999")."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0**63:
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value)


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(column.type):
        return pc.if_else(pc.equal(column, ""), None, column)
    if pa.types.is_nested(column.type) or pa.types.is_null(column.type):
        return pa.chunked_array([pa.array([_text(v) for v in column.to_pylist()], pa.string())])
    if pa.types.is_floating(column.type):  # 1767571999.0 → "1767571999"
        # (a whole number past int64 stays as Arrow writes it: cast, it wrapped to a negative)
        whole = pc.and_(pc.equal(column, pc.floor(column)), pc.less(pc.abs(column), 2.0**63))
        as_int = pc.cast(pc.if_else(whole, column, None), pa.int64(), safe=False)
        return pc.coalesce(pc.cast(as_int, pa.string()), pc.cast(column, pa.string()))
    return pc.cast(column, pa.string())


# --- normalising -------------------------------------------------------------------------------


@dataclass
class Normalised:
    """Canonical events (EVENT_COLUMNS + EXTRA, ``source`` still an index) and rejected rows."""

    events: pa.Table
    rejected: pa.Table  # SOURCE_INDEX, line, reason, detail


def normalise(
    rows: pa.Table,
    *,
    user_id_column: str = s.DEFAULT_USER_ID_PARAM,
    keep_unknown: bool = True,
    earliest: datetime | None = DEFAULT_EARLIEST,
    latest: datetime | None = None,
    max_price: float = DEFAULT_MAX_PRICE,
    shared: bool = False,
) -> Normalised:
    """Validate and map read rows (text columns + ``line`` + SOURCE_INDEX) to canonical events.

    ``created_at``, ``installed_at`` and ``subscription_purchased_at`` must lie in
    [``earliest``, ``latest``); expiry and cancellation times may be later, up to LAST_PLAUSIBLE.
    Pure: the same rows (and window) give the same events, rejections and event keys.
    ``shared`` computes the keys in the process's long-lived DuckDB (``features.duck``).
    """
    n = rows.num_rows

    @functools.cache
    def col(name: str) -> pa.Array:
        if name in rows.column_names:
            return rows.column(name).combine_chunks()
        return pa.nulls(n, pa.string())

    def lower(name: str) -> pa.Array:
        return pc.utf8_lower(pc.utf8_trim_whitespace(col(name)))

    problems: list[tuple[str, pa.Array, Detail]] = []  # in priority order

    # identity
    adid = col(s.ADID)
    customer = col(user_id_column)
    user_id = pc.coalesce(customer, adid)
    problems.append(("missing_identity", pc.is_null(user_id), "no user_id and no adid"))

    os_name = lower(s.OS_NAME)
    store = lower(s.SUB_STORE)
    platform = pc.if_else(pc.is_in(os_name, pa.array([s.OS_IOS, s.OS_ANDROID])), os_name, None)
    platform = pc.coalesce(
        platform,
        pc.if_else(pc.equal(store, s.STORE_APPLE), s.OS_IOS, None),
        pc.if_else(pc.equal(store, s.STORE_GOOGLE), s.OS_ANDROID, None),
        pc.if_else(pc.is_valid(col(s.IDFV)), s.OS_IOS, None),
        pc.if_else(pc.is_valid(col(s.GPS_ADID)), s.OS_ANDROID, None),
    )

    # time
    created_text = col(s.CREATED_AT)
    ts, ts_bad = parse_times(created_text)
    problems.append(("missing_event_time", pc.is_null(created_text), "created_at is empty"))
    problems.append(("bad_timestamp", ts_bad, _detail(s.CREATED_AT, created_text)))
    times = {}
    for name in (s.SUB_PURCHASED_AT, s.SUB_EXPIRATION_TIME, s.SUB_CANCELLED_AT, s.INSTALLED_AT):
        times[name], bad = parse_times(col(name))
        problems.append(("bad_timestamp", bad, _detail(name, col(name))))
    for name, values in (
        (s.CREATED_AT, ts),
        (s.INSTALLED_AT, times[s.INSTALLED_AT]),
        (s.SUB_PURCHASED_AT, times[s.SUB_PURCHASED_AT]),
        (s.SUB_EXPIRATION_TIME, times[s.SUB_EXPIRATION_TIME]),
        (s.SUB_CANCELLED_AT, times[s.SUB_CANCELLED_AT]),
    ):
        # an expiry (or a cancellation holding one) may lie ahead; an event may not
        ahead = name in (s.SUB_EXPIRATION_TIME, s.SUB_CANCELLED_AT)
        mask, window = _implausible(values, earliest, None if ahead else latest)
        problems.append(("implausible_time", mask, _window_detail(name, col(name), window)))
    problems.append(
        ("unknown_platform", pc.is_null(platform), "no os_name, store, idfv or gps_adid")
    )

    # kind and event
    sub_type = lower(s.SUB_EVENT_TYPE)
    subtype = lower(s.SUB_EVENT_SUBTYPE)
    activity = lower(s.ACTIVITY_KIND)
    is_sub = pc.is_valid(sub_type)
    kind = pc.if_else(is_sub, s.KIND_SUBSCRIPTION, activity)
    problems.append(
        ("missing_activity_kind", pc.is_null(kind), "no activity_kind, no subscription event")
    )
    sub_event, legacy_known = _map_subscription_event(sub_type, subtype)
    problems.append(
        (
            "unknown_event",
            pc.and_(is_sub, pc.invert(legacy_known)),
            lambda at: pc.binary_join_element_wise(
                _detail(s.SUB_EVENT_TYPE, col(s.SUB_EVENT_TYPE))(at),
                _detail(s.SUB_EVENT_SUBTYPE, col(s.SUB_EVENT_SUBTYPE))(at),
                " ",
            ),
        )
    )
    in_app_name = pc.coalesce(col(s.EVENT_NAME), col(s.EVENT_TOKEN))
    is_in_app = pc.and_(pc.invert(is_sub), pc.equal(kind, s.KIND_EVENT))
    problems.append(
        (
            "missing_event_name",
            pc.and_(is_in_app, pc.is_null(in_app_name)),
            "event row without event_name or event token",
        )
    )
    event = pc.if_else(is_sub, sub_event, pc.if_else(is_in_app, in_app_name, kind))
    event_raw = pc.if_else(is_sub, col(s.SUB_EVENT_TYPE), pc.if_else(is_in_app, in_app_name, None))
    legacy = pc.and_(
        is_sub, pc.or_(pc.is_valid(subtype), pc.is_in(sub_type, pa.array(s.LEGACY_ONLY_EVENTS)))
    )
    conversion_from = pc.if_else(
        pc.starts_with(pc.coalesce(subtype, ""), "converted_trial"),
        "trial",
        pc.if_else(pc.starts_with(pc.coalesce(subtype, ""), "converted_offer"), "offer", None),
    )
    conversion_from = pc.if_else(legacy, conversion_from, None)

    # money and periods
    revenue = col(s.REVENUE_FLOAT)
    numeric = pc.match_substring_regex(revenue, _NUMBER)
    problems.append(
        (
            "bad_number",
            pc.and_(pc.is_valid(revenue), pc.invert(numeric)),
            _detail(s.REVENUE_FLOAT, revenue),
        )
    )
    price = pc.cast(pc.if_else(numeric, pc.utf8_trim_whitespace(revenue), None), pa.float64())
    problems.append(
        (
            "bad_number",
            pc.invert(pc.is_finite(price)),  # 1e400 parses as inf
            lambda at: pc.binary_join_element_wise(
                _detail(s.REVENUE_FLOAT, revenue)(at), " is not a finite number", ""
            ),
        )
    )
    problems.append(("negative_price", pc.less(price, 0.0), _detail(s.REVENUE_FLOAT, revenue)))
    problems.append(
        (
            "implausible_price",
            pc.and_(pc.is_finite(price), pc.greater(price, max_price)),
            lambda at: pc.binary_join_element_wise(
                _detail(s.REVENUE_FLOAT, revenue)(at),
                f" is above ingest.max_price {max_price:g}",
                "",
            ),
        )
    )
    purchased, expires = times[s.SUB_PURCHASED_AT], times[s.SUB_EXPIRATION_TIME]
    problems.append(
        (
            "expiry_before_purchase",
            pc.less(expires, purchased),
            lambda at: pc.binary_join_element_wise(
                _detail(s.SUB_EXPIRATION_TIME, col(s.SUB_EXPIRATION_TIME))(at),
                _detail(s.SUB_PURCHASED_AT, col(s.SUB_PURCHASED_AT))(at),
                " < ",
            ),
        )
    )
    environment = pc.if_else(
        pc.or_kleene(
            pc.equal(lower(s.SUB_ENVIRONMENT), s.ENV_SANDBOX),
            pc.equal(lower(s.ENVIRONMENT_PH), s.ENV_SANDBOX),
        ).fill_null(False),
        s.ENV_SANDBOX,
        s.ENV_PRODUCTION,
    )

    ok, bad_rows, reason, detail = _first_problem(problems, n)
    events = {
        s.USER_ID: user_id,
        s.PLATFORM: platform,
        s.TS: ts,
        s.KIND: kind,
        s.EVENT: event,
        s.EVENT_RAW: event_raw,
        s.EVENT_SUBTYPE: pc.if_else(legacy, col(s.SUB_EVENT_SUBTYPE), None),
        s.CONVERSION_FROM: conversion_from,
        s.PRODUCT_ID: col(s.SUB_PRODUCT_ID),
        s.STORE: pc.if_else(is_sub, store, None),
        s.ENVIRONMENT: environment,
        s.PRICE: price,
        s.CURRENCY: pc.utf8_upper(col(s.CURRENCY_PH)),
        s.PURCHASED_AT: purchased,
        s.EXPIRES_AT: expires,
        s.CANCELLED_AT: times[s.SUB_CANCELLED_AT],
        s.TRANSACTION_ID: col(s.SUB_TRANSACTION_ID),
        s.ORIGINAL_TRANSACTION_ID: col(s.SUB_ORIGINAL_TRANSACTION_ID),
        s.EXPIRED_TRANSACTION_ID: col(s.SUB_EXPIRED_TRANSACTION_ID),
        s.SALES_REGION: pc.utf8_upper(col(s.SUB_SALES_REGION)),
        s.COUNTRY: pc.utf8_upper(col(s.COUNTRY_PH)),
        s.ADID: adid,
        s.NETWORK: col(s.NETWORK_NAME),
        s.INSTALLED_AT_COL: times[s.INSTALLED_AT],
    }
    table = pa.table(events).filter(ok)
    table = table.append_column(s.EVENT_KEY, canonical_event_keys(table, shared))
    table = table.append_column(s.SOURCE, rows.column(SOURCE_INDEX).filter(ok))
    table = table.append_column(s.LINE, rows.column(s.LINE).filter(ok))
    extra_names = [c for c in rows.column_names if _is_unknown(c, user_id_column)]
    kept = extra_names if keep_unknown else []
    table = table.append_column(s.EXTRA, _extra(rows.select(kept).filter(ok), kept))
    rejected = pa.table(
        {
            SOURCE_INDEX: rows.column(SOURCE_INDEX).take(bad_rows),
            s.LINE: rows.column(s.LINE).take(bad_rows),
            s.REASON: reason,
            s.DETAIL: detail,
        }
    )
    return Normalised(table, rejected)


def _is_unknown(name: str, user_id_column: str) -> bool:
    return (
        name not in KNOWN_COLUMNS
        and name not in _DROPPED
        and name not in (user_id_column, s.LINE, SOURCE_INDEX)
    )


#: A problem's detail: fixed text, or a function of the offending rows' indices (computed only
#: for rejected rows, which are few).
Detail = str | Callable[[pa.Array], pa.Array]


def _detail(field_name: str, values: pa.Array) -> Callable[[pa.Array], pa.Array]:
    """``field='value'`` for the given rows; a value over ``SHOWN_CHARS`` characters is cut,
    with its length (the row's raw text keeps it whole): answers and logs repeat no megabyte."""

    def quote(rows: pa.Array) -> pa.Array:
        found = pc.coalesce(values.take(rows), "")
        longest = pc.max(pc.utf8_length(found)).as_py() if len(found) else 0
        if (longest or 0) <= SHOWN_CHARS:
            return pc.binary_join_element_wise(f"{field_name}='", found, "'", "")
        return pa.array(
            [
                f"{field_name}='{v}'"
                if len(v) <= SHOWN_CHARS
                else f"{field_name}='{v[:SHOWN_CHARS]}…' ({len(v):,} characters)"
                for v in found.to_pylist()
            ],
            pa.string(),
        )

    return quote


def _window_detail(field_name: str, values: pa.Array, window: str) -> Detail:
    """``field='value' is outside the plausible window (from ... and before ...)``."""
    quote = _detail(field_name, values)
    return lambda rows: pc.binary_join_element_wise(
        quote(rows), f" is not {window} (ingest.earliest, ingest.max_future_days)", ""
    )


def _first_problem(
    problems: list[tuple[str, pa.Array, Detail]], n: int
) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """Each row's first problem in list order: (ok mask, rejected row indices, reason, detail)."""
    code = pa.nulls(n, pa.int16())
    for k in reversed(range(len(problems))):
        mask = pc.fill_null(problems[k][1], False)
        if pc.any(mask).as_py():
            code = pc.if_else(mask, pa.scalar(k, pa.int16()), code)
    ok = pc.is_null(code)
    bad_rows = pa.array(np.flatnonzero(pc.is_valid(code).to_numpy(zero_copy_only=False)))
    codes = code.take(bad_rows).to_numpy(zero_copy_only=False)
    reason = pa.array([problems[k][0] for k in codes.tolist()], pa.string())
    detail = np.empty(len(codes), object)
    for k in np.unique(codes).tolist():
        at = np.flatnonzero(codes == k)
        why = problems[k][2]
        detail[at] = why if isinstance(why, str) else why(bad_rows.take(pa.array(at))).to_pylist()
    return ok, bad_rows, reason, pa.array(detail, pa.string())


def _legacy_name_only() -> dict[str, str]:
    """Legacy-only names sent without a subtype, where every subtype maps to the same event."""
    targets: dict[str, set[str]] = {}
    for (name, _), current in s.LEGACY_TO_CURRENT.items():
        targets.setdefault(name, set()).add(current)
    return {n: t.pop() for n, t in targets.items() if len(t) == 1 and n in s.LEGACY_ONLY_EVENTS}


def _map_subscription_event(name: pa.Array, subtype: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Current name for each (name, subtype); the second array says whether it was recognised."""
    pairs = list(s.LEGACY_TO_CURRENT)
    pair_keys = pa.array([f"{a}/{b}" for a, b in pairs])
    pair_values = pa.array([s.LEGACY_TO_CURRENT[p] for p in pairs])
    name_only = _legacy_name_only()
    key = pc.binary_join_element_wise(name, subtype, "/")  # null where either is null
    legacy = pair_values.take(pc.index_in(key, pair_keys))
    bare = pa.array(list(name_only.values()), pa.string()).take(
        pc.index_in(name, pa.array(list(name_only), pa.string()))
    )
    current = pc.if_else(pc.is_in(name, pa.array(s.CURRENT_EVENTS)), name, None)
    mapped = pc.if_else(pc.is_valid(subtype), legacy, pc.coalesce(current, bare))
    return mapped, pc.is_valid(mapped)


def parse_times(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Unix seconds, ``2016-04-04T23:16UTC`` or ISO 8601 text (an offset, fractional seconds)
    → UTC timestamps, and a mask of bad values. Plausibility is the caller's (``normalise``)."""
    trimmed = pc.utf8_trim_whitespace(text)
    digits = pc.and_(pc.ascii_is_decimal(trimmed), pc.less_equal(pc.binary_length(trimmed), 12))
    seconds = pc.cast(pc.if_else(digits, trimmed, None), pa.int64())
    parsed = pc.cast(pc.multiply(seconds, 1_000_000), _UTC)
    textual = pc.fill_null(pc.invert(digits), False)
    if pc.any(textual).as_py():  # only the few text values go through strptime
        words = trimmed.filter(textual)
        found = pa.nulls(len(words), _UTC)
        for fmt in _TEXT_TIME_FORMATS:
            candidate = pc.strptime(words, format=fmt, unit="us", error_is_null=True)
            # strptime rolls 2026-02-30 over to March 2: keep values whose day survived parsing
            day = pc.cast(
                pc.if_else(pc.is_valid(candidate), pc.utf8_slice_codeunits(words, 8, 10), None),
                pa.int64(),
            )
            exact = pc.equal(pc.day(candidate), day)
            found = pc.coalesce(found, pc.cast(pc.if_else(exact, candidate, None), _UTC))
        found = pc.coalesce(found, _iso_times(pc.if_else(pc.is_null(found), words, None)))
        parsed = pc.replace_with_mask(parsed, textual, found)
    bad = pc.and_(pc.is_valid(text), pc.is_null(parsed))
    return parsed, bad


def _iso_times(words: pa.Array) -> pa.Array:
    """ISO 8601 date-times (``2026-01-05T00:13:19.5+02:00``; no offset = UTC) → UTC; others null.

    Python's parser, for the few values Adjust's own formats did not match."""
    out = []
    for word in words.to_pylist():
        value = None
        if word is not None and _ISO_TIME.match(word):
            try:
                parsed = datetime.fromisoformat(word)
                value = (
                    parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
                )
            except (ValueError, OverflowError):
                value = None
        out.append(value)
    return pa.array(out, _UTC)


def _implausible(
    ts: pa.Array, earliest: datetime | None, latest: datetime | None
) -> tuple[pa.Array, str]:
    """Mask of times before ``earliest`` or after ``latest`` (or LAST_PLAUSIBLE), and a text of
    the window for the detail."""
    latest = min(latest, LAST_PLAUSIBLE) if latest is not None else LAST_PLAUSIBLE
    mask = pc.greater_equal(ts, pa.scalar(latest, _UTC))
    window = f"before {latest:%Y-%m-%dT%H:%M:%SZ}"
    if earliest is not None:
        mask = pc.or_(mask, pc.less(ts, pa.scalar(earliest, _UTC)))
        window = f"from {earliest:%Y-%m-%dT%H:%M:%SZ} and {window}"
    return mask, window


def canonical_event_keys(events: pa.Table, shared: bool = False) -> pa.Array:
    """Version KEY_VERSION of the event key, from canonical columns only (KEY_COLUMNS), so the
    keys of events stored under an older version can be recomputed from the store.

    Every column that tells two activities apart is in it (two purchases in one second differ
    in price or product); where a row came from (source, line, unknown columns) is not, so the
    same callback twice, or a callback mirroring an export row, is one event.
    """

    def col(name: str) -> pa.Array:
        column = events.column(name)
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def text(name: str) -> pa.Array:
        values = col(name)
        if pa.types.is_timestamp(values.type):
            values = pc.cast(values.cast(_UTC), pa.int64())
        return pc.cast(values, pa.string())

    subtype = pc.utf8_lower(pc.utf8_trim_whitespace(col(s.EVENT_SUBTYPE)))
    parts = {
        "who": pc.coalesce(col(s.ADID), col(s.USER_ID)),
        "platform": col(s.PLATFORM),
        "kind": col(s.KIND),
        "raw": pc.coalesce(col(s.EVENT_RAW), col(s.KIND)),
        "subtype": pc.coalesce(subtype, ""),
        "txn": col(s.TRANSACTION_ID),
        "orig": col(s.ORIGINAL_TRANSACTION_ID),
        "ts": text(s.TS),
    }
    parts.update({name: text(name) for name in _KEY_DETAIL_COLUMNS})
    return event_keys(pa.table(parts), shared)


def event_keys(parts: pa.Table, shared: bool = False) -> pa.Array:
    """A stable 128-bit key (MD5, hex) of each row's identifying fields, for deduplication.
    ``shared``: in the process's long-lived DuckDB, not a database opened for the call (which
    costs more than keying a service request's few callbacks); there the statement runs once
    and its rows are read (``sql()`` binds it twice: ~1 of a request's 3 ms of keys)."""
    fields = ", chr(31), ".join(f"coalesce(\"{c}\", '')" for c in parts.column_names)
    statement = f"select md5(concat({fields})) as k from parts"
    with duck.connection(shared) as con:
        con.register("parts", parts)
        if shared:
            return pa.array([row[0] for row in con.execute(statement).fetchall()], pa.string())
        keys = con.sql(statement).to_arrow_table()
    return keys.column("k").combine_chunks().cast(pa.string())


def _extra(rows: pa.Table, names: list[str]) -> pa.Array:
    """Unknown columns as one map<string, string> per row, of its non-null values only (null
    when it has none): a row's map does not depend on which other files were read with it."""
    n = rows.num_rows
    kind = pa.map_(pa.string(), pa.string())
    if not names or not n:
        return pa.nulls(n, kind)
    k = len(names)
    values = pa.concat_arrays([rows.column(c).combine_chunks().cast(pa.string()) for c in names])
    order = (np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel()  # row-major interleave
    items = values.take(pa.array(order))
    present = items.is_valid().to_numpy(zero_copy_only=False)
    keys = pa.array(np.tile(np.array(names, object), n)[present], pa.string())
    counts = present.reshape(n, k).sum(axis=1)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    empty = pa.array(counts == 0)
    return pa.MapArray.from_arrays(
        offsets, keys, items.filter(pa.array(present)), type=kind, mask=empty
    )
