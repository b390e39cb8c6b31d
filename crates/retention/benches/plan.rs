//! Planning cost as the number of items grows (10k, 100k): should be linear and well under a second.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jiff::{Span, Timestamp};
use litemaas_retention::{Item, RetentionOptions, State};

fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let state = if i % 13 == 0 {
                State::Failed
            } else if i % 29 == 0 {
                State::NotReady
            } else {
                State::Complete
            };
            let time = Timestamp::from_second(1_600_000_000 + (i as i64) * 3_607).unwrap();
            Item::new(format!("database-{i:08}.sql.gz"), Some(time), state)
        })
        .rev()
        .collect()
}

fn plan(c: &mut Criterion) {
    let options = RetentionOptions {
        keep_last: Some(12),
        keep_within: Some(Span::new().days(30)),
        keep_hourly: Some(24),
        keep_daily: Some(7),
        keep_weekly: Some(5),
        keep_monthly: Some(12),
        keep_yearly: Some(3),
    };
    let now = Timestamp::from_second(2_000_000_000).unwrap();
    let mut group = c.benchmark_group("plan");
    for n in [10_000, 100_000] {
        let input = items(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &input, |b, input| {
            b.iter(|| options.plan(input, now).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
