"""Reading and normalising Adjust files: formats, rejection reasons, vocabulary, identity."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from features import schema as s
from features.ingest.adjust import (
    REASONS,
    SOURCE_INDEX,
    BadFile,
    normalise,
    parse_times,
    read_source,
)

HEADER = (
    "{activity_kind},{created_at},{os_name},{adid},user_id,{subscription_event_type},"
    "{subscription_event_subtype},{revenue_float},{currency},{subscription_purchased_at},"
    "{subscription_expiration_time},{subscription_environment},{subscription_store},"
    "{subscription_transaction_id},{tracker_name}"
)
T = 1767571999  # 2026-01-05T00:13:19Z


def row(**values: object) -> str:
    """A CSV row for HEADER; unnamed fields empty, ``kind`` defaults to subscription."""
    names = [c.strip("{}[]") for c in HEADER.split(",")]
    values.setdefault("activity_kind", "subscription")
    values.setdefault("created_at", T)
    values.setdefault("os_name", "ios")
    values.setdefault("adid", "a" * 32)
    return ",".join(str(values.get(n, "")) for n in names)


def csv_bytes(*rows: str, header: str = HEADER, newline: str = "\n") -> bytes:
    return (newline.join([header, *rows]) + newline).encode()


def run(data: bytes, name: str = "f.csv", **kwargs):
    """read_source + normalise: (events as list of dicts, rejected (line, reason) list)."""
    source = read_source(name, data)
    rows = source.rows.append_column(SOURCE_INDEX, pa.array([0] * source.rows.num_rows, pa.int32()))
    result = normalise(rows, **kwargs)
    rejected = [(line, reason) for line, reason, *_ in source.rejected]
    rejected += list(
        zip(
            result.rejected.column(s.LINE).to_pylist(),
            result.rejected.column(s.REASON).to_pylist(),
            strict=True,
        )
    )
    return result.events.to_pylist(), sorted(rejected), result


def test_current_subscription_row_is_typed_and_upper_cased() -> None:
    events, rejected, _ = run(
        csv_bytes(
            row(
                subscription_event_type="renewal",
                revenue_float="9.99",
                currency="usd",
                subscription_purchased_at=T,
                subscription_expiration_time=T + 86400 * 30,
                subscription_environment="production",
                subscription_store="appleappstore",
                subscription_transaction_id="230000000000001",
                user_id="u1",
            )
        )
    )
    assert rejected == []
    (e,) = events
    assert e[s.USER_ID] == "u1" and e[s.PLATFORM] == "ios" and e[s.KIND] == "subscription"
    assert (e[s.EVENT], e[s.EVENT_RAW], e[s.EVENT_SUBTYPE]) == ("renewal", "renewal", None)
    assert e[s.TS] == datetime.fromtimestamp(T, UTC)
    assert e[s.EXPIRES_AT] == datetime.fromtimestamp(T + 86400 * 30, UTC)
    assert (e[s.PRICE], e[s.CURRENCY], e[s.ENVIRONMENT]) == (9.99, "USD", "production")
    assert e[s.STORE] == "appleappstore" and e[s.LINE] == 2
    assert e[s.TRANSACTION_ID] == "230000000000001"


@pytest.mark.parametrize(
    ("name", "subtype", "event", "conversion_from"),
    [
        ("first_conversion", "converted_trial", "renewal", "trial"),
        ("first_conversion", "converted_offer", "renewal", "offer"),
        ("activation", "initial_trial", "trial_started", None),
        ("cancellation", "failed_subscription", "expiration", None),
        (
            "renewal_from_billing_retry",
            "converted_trial_from_retry",
            "renewal_from_billing_retry",
            "trial",
        ),
        ("entered_billing_retry", "", "billing_retry", None),
    ],
)
def test_legacy_events_map_to_the_current_vocabulary(name, subtype, event, conversion_from) -> None:
    events, rejected, _ = run(
        csv_bytes(row(subscription_event_type=name, subscription_event_subtype=subtype))
    )
    assert rejected == []
    (e,) = events
    assert (e[s.EVENT], e[s.EVENT_RAW], e[s.CONVERSION_FROM]) == (event, name, conversion_from)
    assert e[s.EVENT_SUBTYPE] == (subtype or None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"adid": "", "user_id": ""}, "missing_identity"),
        ({"created_at": ""}, "missing_event_time"),
        ({"created_at": "yesterday"}, "bad_timestamp"),
        ({"created_at": "2026-02-30T25:61UTC"}, "bad_timestamp"),
        ({"subscription_purchased_at": "17O0000000"}, "bad_timestamp"),
        ({"os_name": "", "subscription_store": ""}, "unknown_platform"),
        ({"activity_kind": "", "subscription_event_type": ""}, "missing_activity_kind"),
        ({"activity_kind": "event"}, "missing_event_name"),
        ({"subscription_event_type": "subscription_wobble"}, "unknown_event"),
        (
            {"subscription_event_type": "activation", "subscription_event_subtype": "bogus"},
            "unknown_event",
        ),
        ({"subscription_event_type": "renewal", "revenue_float": "abc"}, "bad_number"),
        ({"subscription_event_type": "renewal", "revenue_float": "-4.99"}, "negative_price"),
        ({"subscription_event_type": "renewal", "revenue_float": "1e308"}, "implausible_price"),
        (
            {
                "subscription_event_type": "renewal",
                "subscription_purchased_at": T,
                "subscription_expiration_time": T - 86400,
            },
            "expiry_before_purchase",
        ),
    ],
)
def test_each_rejection_reason(fields: dict, reason: str) -> None:
    fields = (
        {"subscription_event_type": "renewal", **fields}
        if "activity_kind" not in fields
        else fields
    )
    good = row(subscription_event_type="renewal")
    events, rejected, result = run(csv_bytes(good, row(**fields), good))
    assert reason in REASONS
    assert rejected == [(3, reason)]
    assert [e[s.LINE] for e in events] == [2, 4]
    detail = result.rejected.column(s.DETAIL)[0].as_py()
    named = [*fields, "event_name"]  # a missing event name is named as such
    assert any(name in detail for name in named), detail  # the detail names the field at fault


def test_truncated_row_is_rejected_with_its_text_and_line() -> None:
    source = read_source("f.csv", csv_bytes(row(), "subscription,123,ios", row()))
    assert [(line, reason) for line, reason, *_ in source.rejected] == [(3, "truncated_row")]
    assert source.rejected[0][3] == "subscription,123,ios"
    assert source.rows.column(s.LINE).to_pylist() == [2, 4]


def test_bom_crlf_quoted_commas_and_any_column_order() -> None:
    header = "user_id,{tracker_name},{created_at},{adid},{os_name},{activity_kind}"
    body = f'"u1","Meta::a, b ""quoted""",{T},{"b" * 32},android,session'
    data = b"\xef\xbb\xbf" + csv_bytes(body, header=header, newline="\r\n")
    events, rejected, result = run(data)
    assert rejected == []
    (e,) = events
    assert (e[s.USER_ID], e[s.PLATFORM], e[s.KIND], e[s.EVENT]) == (
        "u1",
        "android",
        "session",
        "session",
    )
    assert e[s.TS] == datetime.fromtimestamp(T, UTC)


def test_unknown_columns_are_kept_or_dropped_by_setting() -> None:
    header = '{created_at},{adid},{os_name},{activity_kind},[campaign_code],"export_v1"'
    data = csv_bytes(f"{T},{'c' * 32},ios,session,spring,export_v1", header=header)
    events, _, _ = run(data)
    assert dict(events[0][s.EXTRA]) == {"campaign_code": "spring", "export_v1": "export_v1"}
    events, _, _ = run(data, keep_unknown=False)
    assert events[0][s.EXTRA] is None


def test_a_missing_optional_column_is_fine_and_a_missing_required_one_is_a_bad_file() -> None:
    events, rejected, _ = run(
        csv_bytes(f"{T},{'d' * 32},session", header="{created_at},{adid},{activity_kind}"),
    )
    # no os_name: the platform cannot be told
    assert rejected == [(2, "unknown_platform")]
    events, rejected, _ = run(
        csv_bytes(
            f"{T},{'d' * 32},session,x", header="{created_at},{adid},{activity_kind},{gps_adid}"
        )
    )
    assert rejected == [] and events[0][s.PLATFORM] == "android"
    with pytest.raises(BadFile, match="created_at") as info:
        read_source("f.csv", csv_bytes(f"{'d' * 32},session", header="{adid},{activity_kind}"))
    assert info.value.reason == "missing_column"
    assert info.value.detail == "no created_at column in the header (found adid, activity_kind)"


def test_customer_user_id_column_is_configurable_and_falls_back_to_adid() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},[account]"
    data = csv_bytes(
        f"{T},{'e' * 32},ios,session,acct-9", f"{T + 1},{'e' * 32},ios,session,", header=header
    )
    events, _, _ = run(data, user_id_column="account")
    assert [e[s.USER_ID] for e in events] == ["acct-9", "e" * 32]


def test_sandbox_rows_are_flagged() -> None:
    events, _, _ = run(
        csv_bytes(row(subscription_event_type="renewal", subscription_environment="sandbox"))
    )
    assert events[0][s.ENVIRONMENT] == "sandbox"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (gzip.compress(b""), "empty_file"),
        (gzip.compress(csv_bytes())[:-30], "truncated_gzip"),  # not even the header survives
        (b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic", "corrupt_gzip"),
        ("created_at,adid,é\n1,a\n".encode("latin-1"), "wrong_encoding"),  # the header
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "wrong_encoding"),
        (b"name,age\nbob,3\n", "not_adjust_csv"),
        (b"{created_at},{adid},{adid}\n1,a,b\n", "duplicate_column"),
        # no header: the first data row (two empty fields) is not read as a header naming '' twice
        (b"session,1767571999,,ios,,u1\nsession,1767572999,,ios,,u1\n", "not_adjust_csv"),
    ],
    ids=lambda v: v if isinstance(v, str) else "data",  # gzip bytes hold a clock: no ids
)
def test_bad_files(data: bytes, reason: str) -> None:
    gzipped = data[:2] == b"\x1f\x8b" or reason == "corrupt_gzip"
    with pytest.raises(BadFile) as info:
        read_source("f.csv.gz" if gzipped else "f.csv", data)
    assert info.value.reason == reason


def test_header_only_file_has_no_rows() -> None:
    source = read_source("f.csv.gz", gzip.compress(csv_bytes()))
    assert source.header_only and source.rows.num_rows == 0


def test_multiline_quoted_value_keeps_line_numbers() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},{tracker_name}"
    data = csv_bytes(
        f'{T},{"f" * 32},ios,session,"two\nlines"',
        f"{T},{'f' * 32},ios",
        f"{T + 5},{'f' * 32},ios,session,x",
        header=header,
    )
    source = read_source("f.csv", data)
    assert source.rows.column(s.LINE).to_pylist() == [2, 5]
    assert [(line, reason) for line, reason, *_ in source.rejected] == [(4, "truncated_row")]


def test_callback_logs_urls_and_json() -> None:
    log = (
        f"https://cb.example.com/adjust?activity_kind=subscription&created_at={T}&adid={'a' * 32}"
        f"&os_name=ios&subscription_event_type=renewal&revenue_float=9.99&user_id=u%201"
        f"&tracker_name=Meta%3A%3Aspring\n"
        "\n"
        f'{{"activity_kind": "session", "created_at": {T + 60}, "adid": "{"b" * 32}", '
        f'"os_name": "android"}}\n'
        "this is not a callback\n"
    )
    events, rejected, _ = run(log.encode(), name="callbacks.log")
    assert rejected == [(4, "invalid_callback")]
    assert [(e[s.USER_ID], e[s.EVENT], e[s.LINE]) for e in events] == [
        ("u 1", "renewal", 1),
        ("b" * 32, "session", 3),
    ]
    assert events[0][s.PRICE] == 9.99


def test_parse_times_accepts_epochs_and_adjust_text() -> None:
    ts, bad = parse_times(
        pa.array(["1404214665", "2016-04-04T23:16UTC", None, "2016-13-01T00:00UTC"])
    )
    assert ts.to_pylist()[:3] == [
        datetime(2014, 7, 1, 11, 37, 45, tzinfo=UTC),
        datetime(2016, 4, 4, 23, 16, tzinfo=UTC),
        None,
    ]
    assert bad.to_pylist() == [False, False, False, True]


def test_event_keys_are_stable() -> None:
    data = csv_bytes(row(subscription_event_type="renewal", subscription_transaction_id="1"))
    first, _, _ = run(data)
    again, _, _ = run(b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n"))
    assert first[0][s.EVENT_KEY] == again[0][s.EVENT_KEY]
    other, _, _ = run(
        csv_bytes(row(subscription_event_type="renewal", subscription_transaction_id="2"))
    )
    assert other[0][s.EVENT_KEY] != first[0][s.EVENT_KEY]


def test_blank_lines_are_skipped_without_shifting_line_numbers() -> None:
    source = read_source("f.csv", csv_bytes(row(), "", row(created_at=T + 1), ""))
    assert source.rows.column(s.LINE).to_pylist() == [2, 4]
    assert source.rejected == []


def test_a_row_of_empty_fields_is_quarantined_even_when_the_file_has_blank_lines() -> None:
    empty_fields = "," * (HEADER.count(","))
    for rows in [(row(), empty_fields, row()), (row(), empty_fields, "", row())]:
        events, rejected, _ = run(csv_bytes(*rows))
        assert rejected == [(3, "missing_identity")], rows
        assert len(events) == 2


# --- issue 13: no file shape aborts the run or swallows rows ---------------------------------


def read_rows(data: bytes, name: str = "f.csv"):
    """read_source only: ({line: row dict}, [(line, reason)], the Source)."""
    source = read_source(name, data)
    rows = {r.pop(s.LINE): r for r in source.rows.to_pylist()}
    return rows, [(line, reason) for line, reason, *_ in source.rejected], source


@pytest.mark.parametrize("name", ["line", "source", SOURCE_INDEX])
def test_a_column_named_like_ours_is_renamed_with_a_note(name: str) -> None:
    header = f"{{created_at}},{{adid}},{{os_name}},{{activity_kind}},{name},raw_{name}"
    events, rejected, _ = run(csv_bytes(f"{T},{'a' * 32},ios,session,7,8", header=header))
    assert rejected == []
    (e,) = events
    assert e[s.LINE] == 2
    assert dict(e[s.EXTRA]) == {f"raw_{name}": "7", f"raw_raw_{name}": "8"}
    source = read_source("f.csv", csv_bytes(f"{T},{'a' * 32},ios,session,7,8", header=header))
    assert source.notes[0] == f"column {name!r} is one of Lapse's own names: kept as 'raw_{name}'"


def test_a_callback_key_named_line_keeps_its_value_and_the_line_number() -> None:
    log = f"/cb?activity_kind=session&created_at={T}&adid={'a' * 32}&os_name=ios&line=99\n"
    events, rejected, _ = run(("\n" + log).encode(), name="cb.log")
    assert rejected == []
    assert events[0][s.LINE] == 2 and dict(events[0][s.EXTRA]) == {"raw_line": "99"}


def test_cr_only_line_ends_are_read() -> None:
    data = csv_bytes(row(), row(created_at=T + 1), newline="\r")
    rows, rejected, source = read_rows(data)
    assert rejected == [] and sorted(rows) == [2, 3]
    assert rows[3]["created_at"] == str(T + 1)
    assert source.notes == ["CR-only line ends read as line breaks"]


def test_a_value_over_128_kb_beside_a_multiline_value_is_kept() -> None:
    big = "x" * 200_000
    header = "{created_at},{adid},{os_name},{activity_kind},{tracker_name}"
    data = csv_bytes(
        f'{T},{"a" * 32},ios,session,"two\nlines"',
        f"{T + 1},{'a' * 32},ios,session,{big}",
        header=header,
    )
    rows, rejected, _ = read_rows(data)
    assert rejected == []
    assert rows[2]["tracker_name"] == "two\nlines" and rows[4]["tracker_name"] == big


@pytest.mark.parametrize("multiline", [False, True])
def test_a_value_over_the_limit_costs_only_its_row(multiline: bool) -> None:
    from features.ingest.adjust import MAX_FIELD_CHARS

    header = "{created_at},{adid},{os_name},{activity_kind},{tracker_name}"
    huge = "y" * (MAX_FIELD_CHARS + 1)
    first = f'{T},{"a" * 32},ios,session,"two\nlines"' if multiline else row_a(T)
    data = csv_bytes(first, f"{T + 1},{'a' * 32},ios,session,{huge}", row_a(T + 2), header=header)
    rows, rejected, source = read_rows(data)
    at = 4 if multiline else 3
    assert rejected == [(at, "too_large")]
    assert sorted(rows) == [2, at + 1]
    assert source.rejected[0][3].endswith(huge)  # the raw record is kept whole


def row_a(ts: int) -> str:
    return f"{ts},{'a' * 32},ios,session,net"


def test_a_50_mb_value_does_not_make_the_file_unreadable() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},{tracker_name}"
    huge = "z" * (50 << 20)
    data = csv_bytes(
        row_a(T), f"{T + 1},{'a' * 32},ios,session,{huge}", row_a(T + 2), header=header
    )
    rows, rejected, _ = read_rows(data)
    assert rejected == [(3, "too_large")] and sorted(rows) == [2, 4]


def test_an_unbalanced_quote_does_not_swallow_the_rows_after_it() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},{network_name}"
    data = csv_bytes(
        row_a(T),
        f'{T + 1},{"a" * 32},ios,session,"Meta',
        row_a(T + 2),
        row_a(T + 3),
        f'{T + 4},{"a" * 32},ios,session,"quoted, fine"',
        header=header,
    )
    rows, rejected, source = read_rows(data)
    assert rejected == [(3, "unbalanced_quote")]
    assert sorted(rows) == [2, 4, 5, 6]
    assert rows[6]["network_name"] == "quoted, fine" and rows[4]["network_name"] == "net"
    assert source.rejected[0][3] == f'{T + 1},{"a" * 32},ios,session,"Meta'


def test_an_unclosed_quote_on_the_last_line_is_quarantined() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},{network_name}"
    data = csv_bytes(row_a(T), f'{T + 1},{"a" * 32},ios,session,"Meta', header=header)
    rows, rejected, _ = read_rows(data)
    assert rejected == [(3, "unbalanced_quote")] and sorted(rows) == [2]


def test_a_non_utf8_byte_costs_only_its_row() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},{network_name}"
    data = csv_bytes(
        row_a(T), f"{T + 1},{'a' * 32},ios,session,caf\xe9", row_a(T + 2), header=header
    )
    data = data.replace("caf\xe9".encode(), b"caf\xe9")
    rows, rejected, source = read_rows(data)
    assert rejected == [(3, "wrong_encoding")] and sorted(rows) == [2, 4]
    assert source.rejected[0][3].endswith("caf\\xe9")


def test_a_truncated_gzip_keeps_its_complete_rows() -> None:
    body = csv_bytes(*(row(created_at=T + i) for i in range(200)))
    packed = gzip.compress(body)
    rows, rejected, source = read_rows(packed[: len(packed) * 2 // 3], name="f.csv.gz")
    assert source.damage is not None and source.damage.reason == "truncated_gzip"
    n = len(rows)
    assert 0 < n < 200 and sorted(rows) == list(range(2, n + 2))
    assert rejected in ([], [(n + 2, "truncated_gzip")])  # the cut line, unless cut at a line end
    assert all(rows[line]["created_at"] == str(T + line - 2) for line in rows)


def test_a_plain_csv_named_gz_is_read_with_a_note() -> None:
    rows, rejected, source = read_rows(csv_bytes(row()), name="f.csv.gz")
    assert sorted(rows) == [2] and rejected == []
    assert source.notes == ["named .gz but not gzip-compressed: read as plain text"]


NOW = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"created_at": "0"}, "created_at"),
        ({"created_at": "0001-01-01T00:00Z"}, "created_at"),
        ({"created_at": "9999-12-31T23:59Z"}, "created_at"),
        ({"created_at": "1999999999"}, "created_at"),  # 2033: after now + 1 day
        ({"created_at": str(int(NOW.timestamp()) + 2 * 86400)}, "created_at"),
        ({"subscription_purchased_at": "1"}, "subscription_purchased_at"),
        ({"subscription_expiration_time": "4102444800"}, "subscription_expiration_time"),
    ],
)
def test_implausible_times_are_refused_with_the_window(fields: dict, field_name: str) -> None:
    latest = NOW + timedelta(days=1)
    events, rejected, result = run(
        csv_bytes(row(subscription_event_type="renewal", **fields)), latest=latest
    )
    assert rejected == [(2, "implausible_time")] and events == []
    detail = result.rejected.column(s.DETAIL)[0].as_py()
    assert detail.startswith(f"{field_name}='") and "is not from 2008-01-01T00:00:00Z" in detail


def test_an_expiry_years_ahead_and_a_time_within_the_window_are_kept() -> None:
    events, rejected, _ = run(
        csv_bytes(
            row(
                subscription_event_type="renewal",
                created_at=int(NOW.timestamp()) + 3600,
                subscription_expiration_time=int(NOW.timestamp()) + 3 * 365 * 86400,
            )
        ),
        latest=NOW + timedelta(days=1),
    )
    assert rejected == [] and len(events) == 1


def test_iso_times_with_offsets_and_fractions_are_parsed() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},{installed_at}"
    data = csv_bytes(
        f"2026-01-05T02:13:19.25+02:00,{'a' * 32},ios,session,2026-01-04T10:00:00.5Z",
        f"2026-01-05 00:13:19,{'a' * 32},ios,session,2026-01-04T10:00-05:30",
        header=header,
    )
    events, rejected, _ = run(data)
    assert rejected == []
    assert [e[s.TS] for e in events] == [
        datetime(2026, 1, 5, 0, 13, 19, 250000, tzinfo=UTC),
        datetime(2026, 1, 5, 0, 13, 19, tzinfo=UTC),
    ]
    assert [e[s.INSTALLED_AT_COL] for e in events] == [
        datetime(2026, 1, 4, 10, 0, 0, 500000, tzinfo=UTC),
        datetime(2026, 1, 4, 15, 30, tzinfo=UTC),
    ]


@pytest.mark.parametrize("value", ["1e400", "inf", "-1e400", "nan"])
def test_non_finite_revenue_is_refused(value: str) -> None:
    events, rejected, _ = run(
        csv_bytes(row(subscription_event_type="renewal", revenue_float=value))
    )
    assert rejected == [(2, "bad_number")] and events == []


def test_a_multiline_row_right_after_an_unbalanced_quote_is_kept() -> None:
    header = "{created_at},{adid},{os_name},{activity_kind},{network_name}"
    data = csv_bytes(
        f'{T + 1},{"a" * 32},ios,session,"Meta',
        f'{T + 2},{"a" * 32},ios,session,"two',
        'lines"',
        row_a(T + 3),
        header=header,
    )
    rows, rejected, _ = read_rows(data)
    assert rejected == [(2, "unbalanced_quote")]
    assert sorted(rows) == [3, 5] and rows[3]["network_name"] == "two\nlines"


def test_a_non_utf8_byte_in_a_cr_only_file_costs_only_its_row() -> None:
    data = csv_bytes(row(), row(created_at=T + 1), row(created_at=T + 2), newline="\r")
    data = data.replace(f"{T + 1}".encode(), f"{T + 1}".encode()[:-1] + b"\xff")
    rows, rejected, _ = read_rows(data)
    assert rejected == [(3, "wrong_encoding")] and sorted(rows) == [2, 4]


def test_keys_in_the_shared_database_are_the_keys_of_a_database_of_its_own() -> None:
    """The service's keys (rows read from the process's DuckDB) equal ingest's (Arrow out of a
    database opened for the call): nulls, text outside ASCII, the field separator, no rows."""
    from features.ingest.adjust import event_keys

    parts = pa.table(
        {
            "who": ["u1", "u1", None, "ü-ß", "a\x1fb", ""],
            "kind": ["session", "session", "event", None, "event", ""],
            "ts": ["1", "2", "3", "4", None, ""],
        }
    )
    own = event_keys(parts)
    shared = event_keys(parts, shared=True)
    assert shared.type == own.type == pa.string()
    assert shared.to_pylist() == own.to_pylist()
    assert len(set(own.to_pylist())) == 6  # every row told apart, none null
    empty = parts.slice(0, 0)
    assert event_keys(empty, shared=True).to_pylist() == event_keys(empty).to_pylist() == []
