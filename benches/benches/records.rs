//! What `--log-schema ecs` costs the observer per record: one exchange
//! record (the EICAR exchange of docs/log-schema.md) written as its native
//! JSON line, mapped to its ECS event, and mapped and written.
//!
//! Run: `cargo bench -p icaptap-benches --bench records`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use icaptap::output::ecs::exchange_event;
use icaptap::output::records::ExchangeRecord;

const EICAR: &str = r#"{"schema":1,"ts":"2026-11-28T11:25:49.884082Z","ts_us":1795865149884082,"conn":3,"seq":0,"client":"127.0.0.1:48514","server":"127.0.0.1:37165","method":"RESPMOD","uri":"icap://127.0.0.1:37149/av/respmod","service":"/av/respmod","icap_status":200,"verdict":"infected","threat":"EICAR-Test-File","block_reason":null,"squid_outcome":"ICAP_MOD","anomalies":[],"latency_us":297,"istag":"\"EXAMPLE-2024-01\"","http_method":"GET","http_url":"http://files.example.test/downloads/eicar.com","http_status":200,"http_status_returned":403,"request_body_bytes":68,"response_body_bytes":245,"request_body_sha256":"275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f","preview":{"size":1024,"sent":68,"ieof":true,"continued":false},"identity":{"client_ip":"192.0.2.10","server_ip":null,"client_username":null,"authenticated_user":"WinNT://EXAMPLE/alice","authenticated_groups":null},"products":{"user_agent":"icaptap-client/0.1.0","server":"icaptap-sensor","service":null},"timings":{"request_head_us":0,"request_sent_us":0,"request_complete_us":0,"continue_us":null,"response_head_us":297,"response_complete_us":297},"decode_complete":true}"#;

fn records(c: &mut Criterion) {
    let record: ExchangeRecord = serde_json::from_str(EICAR).unwrap();
    let mut group = c.benchmark_group("exchange record");
    group.throughput(Throughput::Elements(1));
    let mut line = Vec::with_capacity(4096);
    group.bench_function("native line", |b| {
        b.iter(|| {
            line.clear();
            serde_json::to_writer(&mut line, &record).unwrap();
            line.len()
        })
    });
    group.bench_function("ecs event", |b| b.iter(|| exchange_event(&record)));
    group.bench_function("ecs line", |b| {
        b.iter(|| {
            line.clear();
            serde_json::to_writer(&mut line, &exchange_event(&record)).unwrap();
            line.len()
        })
    });
    group.finish();
}

criterion_group!(benches, records);
criterion_main!(benches);
