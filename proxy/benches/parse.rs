//! Micro-benchmarks of the per-request work that is the proxy's own: target-header parsing and
//! header rewriting. Run by `cargo xtask bench` (or `cargo bench -p project-ingress-proxy`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use proxy::{parse_target_host, rewrite_request_headers};

fn parse(c: &mut Criterion) {
    for v in [
        "4096__mach_123.machines.iterate.town",
        "localhost:4096",
        "misha.iterate.town",
        "example.com:4096",
    ] {
        c.bench_function(&format!("parse_target_host {v}"), |b| {
            b.iter(|| parse_target_host(black_box(v)))
        });
    }
}

fn rewrite(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "4096__mach_123.machines.iterate.town"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=abcdef0123456789; theme=dark"),
        ("connection", "keep-alive"),
        (
            "x-iterate-proxy-target-host",
            "4096__mach_123.machines.iterate.town",
        ),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        base.insert(k, HeaderValue::from_static(v));
    }
    let target = parse_target_host("4096__mach_123.machines.iterate.town").unwrap();
    c.bench_function("rewrite_request_headers (8 headers)", |b| {
        b.iter_batched(
            || base.clone(),
            |mut h| {
                rewrite_request_headers(&mut h, target, false);
                h
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, parse, rewrite);
criterion_main!(benches);
