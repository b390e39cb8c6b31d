//! Throughput of the compression + hashing stage on SQL-dump-like text (a COPY of LiteLLM-style
//! spend logs with JSON metadata). Compares our parallel single-member gzip with a plain
//! single-stream gzip (async-compression over flate2/zlib-rs), zstd, and no compression.
//!
//! `cargo bench --bench pipeline`; as a test (`cargo test --benches`) each case runs once.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use litemaas_backup::dump::{CompressOptions, Compression, Encoded};
use tokio::io::AsyncReadExt;

/// A deterministic dump-like text of about `len` bytes.
fn dump_like(len: usize) -> Bytes {
    let models = [
        "granite-3-8b-instruct",
        "llama-scout-17b",
        "mistral-small-24b",
        "qwen2.5-coder-32b",
    ];
    let mut out = String::with_capacity(len + 512);
    out.push_str("COPY public.\"LiteLLM_SpendLogs\" (request_id, call_type, api_key, spend, total_tokens, prompt_tokens, completion_tokens, \"startTime\", \"endTime\", model, metadata) FROM stdin;\n");
    let mut i: u64 = 0;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let model = models[(x % 4) as usize];
        let prompt = x % 4000;
        let completion = (x >> 12) % 1500;
        out.push_str(&format!(
            "chatcmpl-{x:016x}{i:08x}\tacompletion\t{:064x}\t{:.8}\t{}\t{prompt}\t{completion}\t2025-12-{:02} {:02}:{:02}:{:02}.{:06}+00\t2025-12-{:02} {:02}:{:02}:{:02}.{:06}+00\t{model}\t{{\"user_api_key_user_id\": \"user-{}\", \"user_api_key_team_id\": null, \"requester_ip_address\": \"10.128.{}.{}\", \"model_group\": \"{model}\", \"cache_hit\": {}, \"usage_object\": {{\"prompt_tokens\": {prompt}, \"completion_tokens\": {completion}}}}}\n",
            x.rotate_left(17),
            (prompt + completion) as f64 * 0.000_002_5,
            prompt + completion,
            1 + i % 28, i % 24, i % 60, (i * 7) % 60, x % 1_000_000,
            1 + i % 28, i % 24, (i + 1) % 60, (i * 7) % 60, (x >> 20) % 1_000_000,
            x % 500, (x >> 8) % 256, (x >> 16) % 256,
            x.is_multiple_of(7),
        ));
        i += 1;
    }
    out.push_str("\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n");
    Bytes::from(out)
}

async fn encode(data: Bytes, compression: Compression, threads: usize) -> u64 {
    let options = CompressOptions {
        threads,
        ..CompressOptions::default()
    };
    let mut encoded = Encoded::new(std::io::Cursor::new(data), compression, options);
    while let Some(chunk) = encoded.next().await {
        std::hint::black_box(chunk.unwrap());
    }
    encoded.summary().unwrap().stored_bytes
}

/// The baseline: one gzip stream on one core (what `pg_dump | gzip` does), same zlib-rs backend.
async fn single_stream_gzip(data: Bytes) -> u64 {
    let mut encoder = async_compression::tokio::bufread::GzipEncoder::with_quality(
        std::io::Cursor::new(data),
        async_compression::Level::Precise(6),
    );
    let mut out = Vec::new();
    encoder.read_to_end(&mut out).await.unwrap();
    out.len() as u64
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = dump_like(32 * 1024 * 1024);
    let mut group = c.benchmark_group("encode");
    group
        .throughput(Throughput::Bytes(data.len() as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for threads in [1, cores] {
        group.bench_with_input(
            BenchmarkId::new("gzip6-blocks", format!("{threads}-threads")),
            &threads,
            |b, &t| {
                b.iter(|| rt.block_on(encode(data.clone(), Compression::Gzip { level: 6 }, t)));
            },
        );
    }
    group.bench_function("gzip6-single-stream", |b| {
        b.iter(|| rt.block_on(single_stream_gzip(data.clone())))
    });
    group.bench_function("zstd3", |b| {
        b.iter(|| rt.block_on(encode(data.clone(), Compression::Zstd { level: 3 }, 1)))
    });
    group.bench_function("none+sha256", |b| {
        b.iter(|| rt.block_on(encode(data.clone(), Compression::None, 1)))
    });
    group.finish();

    // Sizes, printed once so the ratio to single-stream gzip can be read next to the speeds.
    let ours = rt.block_on(encode(data.clone(), Compression::Gzip { level: 6 }, cores));
    let plain = rt.block_on(single_stream_gzip(data.clone()));
    println!(
        "size: gzip6-blocks {ours} bytes, gzip6-single-stream {plain} bytes, ratio {:.4}",
        ours as f64 / plain as f64
    );
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
