//! Throughput and size of the compression + hashing stage on SQL-dump-like text (a COPY of
//! LiteLLM-style spend logs with JSON metadata), to choose the gzip engine, level and block size
//! from numbers (issue 13):
//!
//! - `codec/*`: one compression thread, so each case is its codec's cost per byte on one core:
//!   libdeflate (a gzip member per block) at levels 1–9 and blocks of 256 KiB, 1 MiB and 4 MiB;
//!   zlib-rs (blocks primed with the previous 32 KiB, one member: the engine before issue 13) at
//!   levels 1–6; zstd at levels 1 and 3.
//! - `encode/*`: the whole stage as a backup runs it on all cores, against one gzip stream on
//!   one core (what `pg_dump | gzip` does) and no compression (SHA-256 only).
//!
//! After the timings, every case's output size is printed as a ratio to one `gzip -6` stream
//! of the same data (the `gzip` command, else zlib-rs level 6 in one stream).
//!
//! `cargo bench --bench pipeline` (a filter narrows it: `cargo bench --bench pipeline -- codec/libdeflate`);
//! as a test (`cargo test --benches`) each case runs once.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use futures::StreamExt;
use litemaas_backup::dump::{CompressOptions, Compression, Encoded, GzipEngine};
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

async fn encode(data: Bytes, compression: Compression, options: CompressOptions) -> u64 {
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

/// The size `gzip -6` makes of `data`, if the command is there.
fn gzip_command_size(data: &[u8]) -> Option<u64> {
    let mut child = Command::new("gzip")
        .arg("-6c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status.success().then_some(out.stdout.len() as u64)
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// One single-threaded case of the `codec` group.
struct Case {
    name: String,
    compression: Compression,
    options: CompressOptions,
}

fn codec_cases() -> Vec<Case> {
    let one = |engine, block_size| CompressOptions {
        threads: 1,
        block_size,
        gzip_engine: engine,
    };
    let mut cases = Vec::new();
    for (levels, block) in [
        (&[1, 2, 3, 4, 5, 6, 7, 9][..], MIB),
        (&[1, 3, 4, 5, 6][..], 256 * KIB),
        (&[1, 4, 6][..], 4 * MIB),
    ] {
        for &level in levels {
            cases.push(Case {
                name: format!("libdeflate-{level}/{}KiB", block / KIB),
                compression: Compression::Gzip { level },
                options: one(GzipEngine::Libdeflate, block),
            });
        }
    }
    for (levels, block) in [
        (&[1, 2, 3, 4, 5, 6][..], MIB),
        (&[4, 6][..], 256 * KIB),
        (&[6][..], 4 * MIB),
    ] {
        for &level in levels {
            cases.push(Case {
                name: format!("zlib-rs-{level}/{}KiB", block / KIB),
                compression: Compression::Gzip { level },
                options: one(GzipEngine::ZlibRsSingleMember, block),
            });
        }
    }
    for level in [1, 3] {
        cases.push(Case {
            name: format!("zstd-{level}"),
            compression: Compression::Zstd { level },
            options: one(GzipEngine::default(), MIB),
        });
    }
    cases
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, bytes: usize) {
    group
        .throughput(Throughput::Bytes(bytes as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = dump_like(32 * MIB);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let cases = codec_cases();
    let mut group = c.benchmark_group("codec");
    configure(&mut group, data.len());
    for case in &cases {
        group.bench_function(&case.name, |b| {
            b.iter(|| rt.block_on(encode(data.clone(), case.compression, case.options)));
        });
    }
    group.finish();

    // The default now, and the default before issue 13 (zlib-rs level 6, 1 MiB blocks).
    let now = CompressOptions {
        threads: cores,
        ..CompressOptions::default()
    };
    let before = CompressOptions {
        threads: cores,
        block_size: MIB,
        gzip_engine: GzipEngine::ZlibRsSingleMember,
    };
    let mut group = c.benchmark_group("encode");
    configure(&mut group, data.len());
    for (name, compression, options) in [
        ("default-gzip4-libdeflate", Compression::default(), now),
        (
            "before-gzip6-zlib-rs",
            Compression::Gzip { level: 6 },
            before,
        ),
    ] {
        group.bench_with_input(
            BenchmarkId::new(name, format!("{cores}-threads")),
            &(compression, options),
            |b, &(compression, options)| {
                b.iter(|| rt.block_on(encode(data.clone(), compression, options)))
            },
        );
    }
    group.bench_function("gzip6-single-stream", |b| {
        b.iter(|| rt.block_on(single_stream_gzip(data.clone())))
    });
    group.bench_function("none+sha256", |b| {
        b.iter(|| {
            rt.block_on(encode(
                data.clone(),
                Compression::None,
                CompressOptions::default(),
            ))
        })
    });
    group.finish();

    // Sizes, printed once so the ratios can be read next to the speeds.
    let zlib_rs_stream = rt.block_on(single_stream_gzip(data.clone()));
    let (reference, against) = match gzip_command_size(&data) {
        Some(size) => (size, "the gzip -6 command"),
        None => (zlib_rs_stream, "zlib-rs level 6 in one stream"),
    };
    println!(
        "size: {} bytes of input; ratios to {against} ({reference} bytes)",
        data.len()
    );
    println!("size: {:<24} {:>10} {:>7}", "case", "bytes", "ratio");
    let line = |name: &str, size: u64| {
        println!(
            "size: {name:<24} {size:>10} {:>7.4}",
            size as f64 / reference as f64
        );
    };
    line("zlib-rs-6 one stream", zlib_rs_stream);
    for case in &cases {
        line(
            &format!("codec/{}", case.name),
            rt.block_on(encode(data.clone(), case.compression, case.options)),
        );
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
