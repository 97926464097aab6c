//! Micro-benchmarks of the per-request work that is the proxy's own: target-header parsing and
//! header rewriting (the full handler's `rewrite_request_headers` and the fast path's whole head
//! work). Run by `cargo xtask bench` (or `cargo bench -p project-ingress-proxy`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use project_ingress_proxy::{
    HeadPlan, ProxyConfig, parse_target_host, plan_request, rewrite_request_headers,
};

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

/// The fast path's whole per-request head work: parse the client's head in place and write the
/// rewritten upstream head (the same 8 fields as above).
fn fast_path(c: &mut Criterion) {
    let raw = b"GET /api/items?page=2 HTTP/1.1\r\n\
        Host: 4096__mach_123.machines.iterate.town\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n\
        Accept: text/html,application/xhtml+xml\r\n\
        Accept-Encoding: gzip, deflate, br\r\n\
        Cookie: session=abcdef0123456789; theme=dark\r\n\
        Connection: keep-alive\r\n\
        X-Iterate-Proxy-Target-Host: 4096__mach_123.machines.iterate.town\r\n\
        X-Forwarded-For: 203.0.113.7\r\n\r\n";
    let cfg = ProxyConfig::default();
    let mut out = Vec::with_capacity(1024);
    c.bench_function("fast path: parse + rewrite head (8 headers)", |b| {
        b.iter(|| {
            out.clear();
            matches!(
                plan_request(&cfg, 8080, black_box(raw), &mut out),
                HeadPlan::Forward(_)
            )
        })
    });
}

criterion_group!(benches, parse, rewrite, fast_path);
criterion_main!(benches);
