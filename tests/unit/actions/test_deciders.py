"""The pure deciders of the backup verbs, data-driven: which snapshots make a backup (catalog.group_backups),
which backups retention keeps (retention.decide), whether a drill's row counts match (verify.compare_tables),
which slice restic check reads (verify.data_subset)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.actions import catalog, retention
from orchestrator.actions.verify import compare_tables, data_subset
from orchestrator.errors import UsageError


def snap(
    backup: str | None, part: str | None, time: str, env: str = "production", sid: str = "", extra: tuple = ()
) -> dict:
    tags = ["orch", "site=shop", f"env={env}", "task=14883", *extra]
    tags += [f"backup={backup}"] if backup else []
    tags += [f"part={part}"] if part else []
    return {"id": sid or f"{abs(hash((backup, part, env))):064x}"[:64], "time": time, "tags": tags}


# ------------------------------------------------------------------------------------------ catalog.group_backups


def test_the_two_parts_of_a_backup_make_one_complete_backup_named_by_its_earlier_part():
    backups = catalog.group_backups(
        [
            snap("b1", "files", "2026-11-27T03:00:09Z", sid="f" * 64),
            snap("b1", "db", "2026-11-27T03:00:01Z", sid="d" * 64),
        ]
    )
    assert [(b["backup_id"], b["status"], b["time"]) for b in backups] == [("b1", "ok", "2026-11-27T03:00:01Z")]
    assert backups[0]["snapshots"] == {"files": "ffffffff", "db": "dddddddd"}


@pytest.mark.parametrize(
    "snaps, has_db, status",
    [
        ([snap("b1", "db", "2026-11-27T03:00:00Z")], True, "incomplete"),  # killed after the dump
        ([snap("b1", "files", "2026-11-27T03:00:00Z")], True, "incomplete"),  # a db part forgotten
        ([snap("b1", "files", "2026-11-27T03:00:00Z")], False, "ok"),  # a site without a database
        ([snap("b1", None, "2026-11-27T03:00:00Z")], False, "ok"),  # no part tag: files
    ],
)
def test_a_backup_is_complete_only_with_every_part_its_site_needs(snaps, has_db, status):
    assert [b["status"] for b in catalog.group_backups(snaps, has_db=has_db)] == [status]


def test_snapshots_without_a_backup_tag_or_of_another_env_are_left_out_and_the_newest_comes_first():
    backups = catalog.group_backups(
        [
            snap(None, "files", "2026-11-28T00:00:00Z"),  # a snapshot orch did not make
            snap("b-old", "files", "2026-11-26T03:00:00Z"),
            snap("b-old", "db", "2026-11-26T03:00:00Z"),
            snap("b-new", "files", "2026-11-27T03:00:00Z"),
            snap("b-new", "db", "2026-11-27T03:00:00Z"),
            snap("b-stage", "files", "2026-11-29T03:00:00Z", env="t14883"),
        ],
        env="production",
    )
    assert [b["backup_id"] for b in backups] == ["b-new", "b-old"]


def test_a_backup_is_pinned_when_any_of_its_parts_is():
    backups = catalog.group_backups(
        [snap("b1", "files", "2026-11-27T03:00:00Z", extra=("pinned",)), snap("b1", "db", "2026-11-27T03:00:00Z")]
    )
    assert backups[0]["pinned"] is True


@pytest.mark.parametrize("tag", ["backup=", "backup=a=b", "backup=../x", "backup=юникод"])
def test_odd_backup_tags_group_by_their_exact_value(tag):
    value = tag.removeprefix("backup=")
    snaps = [{"id": "a" * 64, "time": "2026-11-27T03:00:00Z", "tags": [tag, "part=files"]}]
    assert [b["backup_id"] for b in catalog.group_backups(snaps, has_db=False)] == ([value] if value else [])


# ------------------------------------------------------------------------------------------------ catalog.resolve


LISTED = [
    {"backup_id": "20261127-030000-aaaa", "status": "ok"},
    {"backup_id": "20261126-030000-bbbb", "status": "incomplete"},
    {"backup_id": "20261126-020000-cccc", "status": "ok"},
]


@pytest.mark.parametrize(
    "given, expected",
    [
        ("latest", "20261127-030000-aaaa"),
        ("20261127-030000-aaaa", "20261127-030000-aaaa"),
        ("20261127", "20261127-030000-aaaa"),
        ("20261126-02", "20261126-020000-cccc"),
    ],
)
def test_resolve_finds_latest_a_full_id_or_a_unique_prefix(given, expected):
    assert catalog.resolve(LISTED, given)["backup_id"] == expected


@pytest.mark.parametrize(
    "given, message",
    [
        ("20261126", "ambiguous"),
        ("2026", "ambiguous"),
        ("202", "no backup"),
        ("", "no backup"),
        ("19990101-000000-dead", "no backup"),
        ("20261126-030000-bbbb", "incomplete"),
        ("' OR 1=1 --", "no backup"),
    ],
)
def test_resolve_refuses_unknown_short_ambiguous_and_incomplete_ids(given, message):
    with pytest.raises(UsageError, match=message):
        catalog.resolve(LISTED, given)


def test_resolve_latest_without_a_complete_backup_says_so():
    with pytest.raises(UsageError, match="no complete backup"):
        catalog.resolve([LISTED[1]], "latest")


# ----------------------------------------------------------------------------------------------- retention.decide


def backup(backup_id: str, time: str, status: str = "ok", pinned: bool = False) -> dict:
    return {"backup_id": backup_id, "time": time, "status": status, "pinned": pinned}


def ids(backups: list[dict]) -> list[str]:
    return [b["backup_id"] for b in backups]


DAYS = [backup(f"d{day}-{hour}", f"2026-11-{day:02d}T{hour:02d}:00:00Z") for day in range(20, 28) for hour in (3, 15)]


@pytest.mark.parametrize(
    "policy, kept",
    [
        ({"daily": 3}, ["d27-15", "d26-15", "d25-15"]),  # the newest of each of 3 days
        ({"last": 3}, ["d27-15", "d27-3", "d26-15"]),
        ({"hourly": 2}, ["d27-15", "d27-3"]),
        ({"weekly": 2}, ["d27-15", "d22-15"]),  # ISO weeks 48 and 47
        ({"monthly": 6}, ["d27-15"]),
        ({"yearly": 1, "daily": 1}, ["d27-15"]),
        ({"daily": 0}, ["d27-15"]),  # a zero rule keeps nothing...
        ({}, ["d27-15"]),  # ...the newest good one stays
        ({"unknown": 5}, ["d27-15"]),
        ({"daily": 100}, [f"d{day}-15" for day in range(27, 19, -1)]),  # fewer days than the rule: all days
    ],
)
def test_decide_applies_restic_forget_rules_to_whole_backups(policy, kept):
    keep, drop = retention.decide(DAYS, policy)
    assert ids(keep) == kept
    assert sorted(ids(keep) + ids(drop)) == sorted(ids(DAYS))


def test_decide_keeps_pinned_and_the_newest_good_backup_and_says_why():
    backups = [
        backup("new-broken", "2026-11-28T03:00:00Z", status="incomplete"),
        backup("good", "2026-11-27T03:00:00Z"),
        backup("pinned-old", "2020-01-01T03:00:00Z", pinned=True),
        backup("old", "2026-11-01T03:00:00Z"),
    ]
    keep, drop = retention.decide(backups, {"last": 0})
    reasons = {b["backup_id"]: b["reasons"] for b in keep}
    assert reasons == {"good": ["newest good backup"], "pinned-old": ["pinned"]}
    assert {b["backup_id"]: b["reasons"] for b in drop} == {
        "new-broken": ["incomplete"],
        "old": ["not kept by any rule"],
    }


def test_decide_never_counts_an_incomplete_backup_for_a_rule():
    backups = [backup("broken", "2026-11-27T15:00:00Z", status="incomplete"), backup("good", "2026-11-27T03:00:00Z")]
    keep, drop = retention.decide(backups, {"daily": 1})
    assert ids(keep) == ["good"] and ids(drop) == ["broken"]
    assert keep[0]["reasons"] == ["daily 2026-11-27", "newest good backup"]


def test_decide_orders_by_time_whatever_the_input_order_and_reads_nanoseconds():
    backups = [
        backup("a", "2026-11-27T03:00:00.123456789Z"),
        backup("b", "2026-11-27T03:00:00.999999999+00:00"),
        backup("c", "2026-11-26T23:59:59Z"),
    ]
    keep, _ = retention.decide(list(reversed(backups)), {"last": 2})
    assert ids(keep) == ["b", "a"]


def test_decide_on_nothing_keeps_nothing():
    assert retention.decide([], {"daily": 7}) == ([], [])


# -------------------------------------------------------------------------------------------- verify.compare_tables


@pytest.mark.parametrize(
    "recorded, restored, problems",
    [
        ({"wp_posts": [10, 10]}, {"wp_posts": 10}, []),
        ({"wp_posts": [10, 12]}, {"wp_posts": 11}, []),  # a site writing during the dump
        ({"wp_posts": [12, 10]}, {"wp_posts": 10}, []),  # the bracket in any order
        (None, {"wp_posts": 1}, []),  # nothing recorded: restorable is all
        ({}, {}, []),
        ({"wp_posts": [10, 10]}, {"wp_posts": 10, "extra": 5}, []),  # a table created since counts none
        ({"wp_posts": [10, 10]}, {"wp_posts": 9}, ["table wp_posts: 9 rows restored, the backup recorded 10"]),
        ({"wp_posts": [10, 12]}, {"wp_posts": 13}, ["table wp_posts: 13 rows restored, the backup recorded 10-12"]),
        ({"wp_posts": [0, 0]}, {}, ["table wp_posts missing from the restored dump"]),
        (
            {"a; DROP TABLE b": [1, 1], "юникод": [2, 2]},
            {"a; DROP TABLE b": 0, "юникод": 2},
            ["table a; DROP TABLE b: 0 rows restored, the backup recorded 1"],
        ),
    ],
)
def test_compare_tables_accepts_counts_within_the_bracket_and_names_each_problem(recorded, restored, problems):
    assert compare_tables(recorded, restored) == problems


def test_compare_tables_reports_missing_tables_before_wrong_counts():
    problems = compare_tables({"a": [1, 1], "b": [2, 2]}, {"a": 5})
    assert problems == ["table b missing from the restored dump", "table a: 5 rows restored, the backup recorded 1"]


# ------------------------------------------------------------------------------------------------ verify.data_subset


@pytest.mark.parametrize(
    "spec, day, expected",
    [
        (None, 1, "2/7"),
        (None, 7, "1/7"),
        ("1/7", 6, "7/7"),
        ("3/4", 365, "2/4"),
        ("1/1", 200, "1/1"),
        ("5%", 10, "5%"),
        ("2.5%", 10, "2.5%"),
    ],
)
def test_data_subset_rotates_by_day_of_year_and_passes_percentages(spec, day, expected):
    today = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=day - 1)  # day `day` of the year
    assert data_subset(spec, today) == expected


def test_every_slice_is_read_over_t_consecutive_days():
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    slices = {data_subset("1/7", start + timedelta(days=i)) for i in range(7)}
    assert slices == {f"{n}/7" for n in range(1, 8)}
