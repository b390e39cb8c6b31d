//! Tables of cases, and property tests of the invariants over random inputs.
#![allow(clippy::unwrap_used)]

use jiff::{Span, Timestamp, ToSpan};
use litemaas_retention::{Action, Item, Plan, Reason, RetentionOptions, State};
use proptest::prelude::*;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn monthly(n: usize, state: impl Fn(usize) -> State) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let time = t("2024-01-01T02:00:00Z")
                .to_zoned(jiff::tz::TimeZone::UTC)
                .checked_add((i as i64).months())
                .unwrap()
                .timestamp();
            Item::new(
                format!("database-{}.sql.gz", time.strftime("%Y%m%d-%H%M%S")),
                Some(time),
                state(i),
            )
        })
        .collect()
}

fn deleted(plan: &Plan) -> Vec<String> {
    let mut v: Vec<_> = plan.deletions().map(|d| d.id.clone()).collect();
    v.sort();
    v
}

fn kept(plan: &Plan) -> Vec<String> {
    let mut v: Vec<_> = plan.keeps().map(|d| d.id.clone()).collect();
    v.sort();
    v
}

#[test]
fn the_original_policy_keeps_the_last_twelve_dumps() {
    let items = monthly(20, |_| State::Complete);
    let plan = RetentionOptions::dumps()
        .plan(&items, t("2025-09-01T00:00:00Z"))
        .unwrap();
    assert_eq!(plan.keeps().count(), 12);
    let deleted = deleted(&plan);
    assert_eq!(deleted.len(), 8);
    assert_eq!(deleted[0], "database-20240101-020000.sql.gz");
    assert_eq!(deleted[7], "database-20240801-020000.sql.gz");
}

#[test]
fn failures_never_push_good_backups_out() {
    // The old tool's bug: 12 failed uploads after 12 good ones deleted every good one.
    let items = monthly(24, |i| {
        if i >= 12 {
            State::Failed
        } else {
            State::Complete
        }
    });
    let plan = RetentionOptions::dumps()
        .plan(&items, t("2026-01-01T00:00:00Z"))
        .unwrap();
    let kept = kept(&plan);
    assert_eq!(
        kept.len(),
        24,
        "nothing is deleted: failed ones are newer than any complete one"
    );
    // Once a good one arrives, the failed ones before it go, and still 12 good ones stay.
    let mut items = items;
    items.push(Item::new(
        "database-20260101-020000.sql.gz",
        Some(t("2026-01-01T02:00:00Z")),
        State::Complete,
    ));
    let plan = RetentionOptions::dumps()
        .plan(&items, t("2026-01-02T00:00:00Z"))
        .unwrap();
    assert_eq!(
        plan.keeps().filter(|d| d.state == State::Complete).count(),
        12
    );
    assert!(
        plan.deletions()
            .filter(|d| d.state == State::Failed)
            .all(|d| d.reasons == [Reason::Superseded])
    );
    assert_eq!(
        plan.deletions()
            .filter(|d| d.state == State::Failed)
            .count(),
        12
    );
}

#[test]
fn not_ready_snapshots_do_not_count_and_may_be_in_progress() {
    let mut items = monthly(5, |_| State::Complete);
    items.push(Item::new(
        "litemaas-snapshot-new",
        Some(t("2030-01-01T00:00:00Z")),
        State::NotReady,
    ));
    let plan = RetentionOptions::snapshots()
        .plan(&items, t("2030-01-01T00:01:00Z"))
        .unwrap();
    assert_eq!(
        plan.keeps().filter(|d| d.state == State::Complete).count(),
        3
    );
    let new = plan
        .decisions
        .iter()
        .find(|d| d.id == "litemaas-snapshot-new")
        .unwrap();
    assert_eq!(
        (new.action, new.reasons.as_slice()),
        (Action::Keep, &[Reason::NoNewerComplete][..])
    );
}

#[test]
fn the_newest_complete_backup_survives_any_rules() {
    let items = monthly(3, |_| State::Complete);
    let none = RetentionOptions {
        keep_last: Some(0),
        ..RetentionOptions::default()
    };
    let plan = none.plan(&items, t("2030-01-01T00:00:00Z")).unwrap();
    assert_eq!(kept(&plan), ["database-20240301-020000.sql.gz"]);
    assert_eq!(
        plan.keeps().next().unwrap().reasons,
        [Reason::NewestComplete]
    );
}

#[test]
fn unknown_times_are_never_deleted() {
    let mut items = monthly(3, |_| State::Complete);
    items.push(Item::new("database-garbled.sql.gz", None, State::Complete));
    let plan = RetentionOptions {
        keep_last: Some(1),
        ..RetentionOptions::default()
    }
    .plan(&items, t("2030-01-01T00:00:00Z"))
    .unwrap();
    assert!(kept(&plan).contains(&"database-garbled.sql.gz".to_owned()));
    assert_eq!(
        plan.decisions.last().unwrap().reasons,
        [Reason::UnknownTime]
    );
}

#[test]
fn calendar_buckets_keep_the_newest_of_each() {
    // Daily backups for 100 days from 2025-01-01.
    let items: Vec<Item> = (0..100)
        .map(|d| {
            let time = t("2025-01-01T02:00:00Z")
                .to_zoned(jiff::tz::TimeZone::UTC)
                .checked_add((d as i64).days())
                .unwrap()
                .timestamp();
            Item::new(format!("d{d:03}"), Some(time), State::Complete)
        })
        .collect();
    let opts = RetentionOptions {
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(3),
        ..RetentionOptions::default()
    };
    let plan = opts.plan(&items, t("2025-04-11T00:00:00Z")).unwrap();
    let kept = kept(&plan);
    // daily: the 7 newest days, d093..d099 (d099 is Thursday 2025-04-10);
    // weekly (ISO weeks end on Sunday): d099, then d095, d088, d081 (Sundays 04-06, 03-30, 03-23);
    // monthly: d099 (April), d089 (March 31), d058 (February 28).
    for want in [
        "d093", "d094", "d095", "d096", "d097", "d098", "d099", "d088", "d081", "d089", "d058",
    ] {
        assert!(kept.contains(&want.to_owned()), "{want} not kept: {kept:?}");
    }
    assert_eq!(kept.len(), 11, "{kept:?}");
}

#[test]
fn keep_within_uses_now() {
    let items = monthly(12, |_| State::Complete);
    let opts = RetentionOptions {
        keep_within: Some(Span::new().months(3)),
        ..RetentionOptions::default()
    };
    let plan = opts.plan(&items, t("2024-12-15T00:00:00Z")).unwrap();
    assert_eq!(
        kept(&plan),
        [
            "database-20241001-020000.sql.gz",
            "database-20241101-020000.sql.gz",
            "database-20241201-020000.sql.gz"
        ]
    );
}

#[test]
fn options_read_from_kebab_case_and_reject_unknown_fields() {
    let o: RetentionOptions =
        serde_json::from_str(r#"{"keep-last": 4, "keep-within": "P30D", "keep-monthly": 2}"#)
            .unwrap();
    assert_eq!((o.keep_last, o.keep_monthly), (Some(4), Some(2)));
    assert!(serde_json::from_str::<RetentionOptions>(r#"{"keep_last": 4}"#).is_err());
    assert!(serde_json::from_str::<RetentionOptions>(r#"{"keep-forever": true}"#).is_err());
    let plan = RetentionOptions::dumps()
        .plan(&monthly(2, |_| State::Complete), t("2030-01-01T00:00:00Z"))
        .unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["decisions"][0]["action"], "keep");
    assert_eq!(
        json["decisions"][0]["reasons"][0],
        serde_json::json!({"rule": "last", "value": 12})
    );
}

// ---- properties ------------------------------------------------------------------------------

fn arb_state() -> impl Strategy<Value = State> {
    prop_oneof![6 => Just(State::Complete), 2 => Just(State::Failed), 1 => Just(State::NotReady)]
}

prop_compose! {
    fn arb_items()(raw in prop::collection::vec((0i64..3_000, prop::option::weighted(0.95, 0i64..400_000_000), arb_state()), 0..60)) -> Vec<Item> {
        raw.into_iter()
            .map(|(id, secs, state)| Item::new(format!("i{id}"), secs.map(|s| Timestamp::from_second(1_600_000_000 + s).unwrap()), state))
            // ids are unique, as object keys and snapshot names are
            .fold(Vec::<Item>::new(), |mut acc, item| { if !acc.iter().any(|i| i.id == item.id) { acc.push(item); } acc })
    }
}

prop_compose! {
    fn arb_options()(last in prop::option::of(0u32..15), within in prop::option::of(0i64..2_000),
                     hourly in prop::option::of(0u32..10), daily in prop::option::of(0u32..10), weekly in prop::option::of(0u32..8),
                     monthly in prop::option::of(0u32..14), yearly in prop::option::of(0u32..4)) -> RetentionOptions {
        RetentionOptions {
            keep_last: last, keep_within: within.map(|d| Span::new().days(d)), keep_hourly: hourly,
            keep_daily: daily, keep_weekly: weekly, keep_monthly: monthly, keep_yearly: yearly,
        }
    }
}

fn now_of(offset: i64) -> Timestamp {
    Timestamp::from_second(1_600_000_000 + offset).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_newest_complete_item_is_never_deleted(items in arb_items(), opts in arb_options(), now in 0i64..500_000_000) {
        let plan = opts.plan(&items, now_of(now)).unwrap();
        let newest = items.iter().filter(|i| i.state == State::Complete && i.time.is_some()).map(|i| (i.time, i.id.clone())).max();
        if let Some((_, id)) = newest {
            prop_assert!(plan.keeps().any(|d| d.id == id));
        }
    }

    #[test]
    fn only_complete_items_count_toward_keep_rules(items in arb_items(), opts in arb_options(), now in 0i64..500_000_000) {
        let plan = opts.plan(&items, now_of(now)).unwrap();
        for d in &plan.decisions {
            if d.state != State::Complete {
                prop_assert!(d.reasons.iter().all(|r| matches!(r, Reason::Superseded | Reason::NoNewerComplete | Reason::UnknownTime)));
            }
        }
        // Turning every incomplete item into nothing changes no complete item's fate.
        let complete: Vec<Item> = items.iter().filter(|i| i.state == State::Complete).cloned().collect();
        let alone = opts.plan(&complete, now_of(now)).unwrap();
        for d in alone.decisions {
            prop_assert_eq!(Some(d.action), plan.decisions.iter().find(|x| x.id == d.id).map(|x| x.action));
        }
    }

    #[test]
    fn items_of_unknown_time_are_kept(items in arb_items(), opts in arb_options(), now in 0i64..500_000_000) {
        let plan = opts.plan(&items, now_of(now)).unwrap();
        prop_assert!(plan.decisions.iter().filter(|d| d.time.is_none()).all(|d| d.action == Action::Keep));
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order(items in arb_items(), opts in arb_options(), now in 0i64..500_000_000, seed in any::<u64>()) {
        let mut shuffled = items.clone();
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(opts.plan(&items, now_of(now)).unwrap(), opts.plan(&shuffled, now_of(now)).unwrap());
    }

    #[test]
    fn applying_the_plan_twice_deletes_nothing_more(items in arb_items(), opts in arb_options(), now in 0i64..500_000_000) {
        let plan = opts.plan(&items, now_of(now)).unwrap();
        let survivors: Vec<Item> = items.iter().filter(|i| plan.keeps().any(|d| d.id == i.id)).cloned().collect();
        let again = opts.plan(&survivors, now_of(now)).unwrap();
        prop_assert_eq!(again.deletions().count(), 0);
    }

    #[test]
    fn moving_now_forward_never_brings_an_item_back(items in arb_items(), opts in arb_options(), now in 0i64..500_000_000, later in 0i64..100_000_000) {
        let before = opts.plan(&items, now_of(now)).unwrap();
        let after = opts.plan(&items, now_of(now + later)).unwrap();
        for d in before.deletions() {
            prop_assert!(after.deletions().any(|x| x.id == d.id), "{} came back", d.id);
        }
    }
}
