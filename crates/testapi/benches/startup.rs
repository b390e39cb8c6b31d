//! Start-up (and shut-down) time of one test API server: a test can afford one per test.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use litemaas_testapi::TestApiServer;

fn startup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("testapi/start+first-request+drop", |b| {
        b.iter(|| {
            rt.block_on(async {
                let server = TestApiServer::start().await.unwrap();
                let client = server.client().await.unwrap();
                client.apiserver_version().await.unwrap();
            })
        });
    });
}

criterion_group!(benches, startup);
criterion_main!(benches);
