//! Benchmark: parse + lower + expand a generated 10,000-line Dockerfile.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use stowage_dockerfile::{ExpandOptions, expand, lower, parse};

/// A 10,000-line Dockerfile mixing instructions, continuations and `${}` references.
fn generated_dockerfile() -> String {
    let mut out =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\nARG VERSION=1.0\n");
    let mut lines = 3;
    let mut stage = 0;
    while lines < 10_000 {
        out.push_str(&format!("FROM ${{BASE}} AS stage{stage}\nARG VERSION\nENV APP_HOME=/app/{stage} PATH=/usr/local/bin:$PATH\n"));
        lines += 3;
        for i in 0..40 {
            out.push_str(&format!(
                "RUN --mount=type=cache,target=/var/cache/{i} echo ${{VERSION}} \\\n    && make -C $APP_HOME/{i} \\\n    && rm -rf /tmp/{i}\n\
                 COPY --chown=1000:1000 src/{i} ${{APP_HOME}}/{i}/\n\
                 LABEL version=\"${{VERSION}}\" step=\"{i}\"\n\
                 WORKDIR ${{APP_HOME:-/srv}}/{i}\n"
            ));
            lines += 6;
        }
        out.push_str("EXPOSE 8080/tcp\nCMD [\"/bin/app\", \"--serve\"]\n");
        lines += 2;
        stage += 1;
    }
    out
}

fn bench_parse(c: &mut Criterion) {
    let source = generated_dockerfile();
    let options = ExpandOptions {
        build_args: BTreeMap::from([("VERSION".to_string(), "2.0".to_string())]),
        ..ExpandOptions::default()
    };
    c.bench_function("parse 10k lines", |b| {
        b.iter(|| black_box(parse(black_box(&source)).expect("parses")));
    });
    let dockerfile = parse(&source).expect("parses");
    c.bench_function("lower 10k lines", |b| {
        b.iter(|| black_box(lower(black_box(&dockerfile)).expect("lowers")));
    });
    let program = lower(&dockerfile).expect("lowers");
    c.bench_function("expand 10k lines", |b| {
        b.iter(|| black_box(expand(black_box(&program), &options).expect("expands")));
    });
    c.bench_function("parse+lower+expand 10k lines", |b| {
        b.iter(|| {
            let dockerfile = parse(black_box(&source)).expect("parses");
            let program = lower(&dockerfile).expect("lowers");
            let expanded = expand(&program, &options).expect("expands");
            black_box(expanded);
        });
    });
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
