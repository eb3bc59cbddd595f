//! The malformed corpus: at least 200 streams made in the test from the
//! real c-icap captures (tests/fixtures/*.req|resp) by mutations that break
//! RFC 3507 framing (truncations, bit flips in framing bytes, huge chunk
//! sizes, overflowing Encapsulated offsets, endless headers, NUL bytes),
//! plus other protocols and a TLS ClientHello on the plain port. Each is
//! sent through the real `icaptap` binary to a sensor that answers as the
//! capture did; each must come out byte-exact both ways, be flagged (an
//! anomaly, or a malformed or missing verdict), and the proxy's memory must
//! stay bounded.
//!
//! Generating the corpus here rather than storing it keeps it in step with
//! the fixtures; `ICAPTAP_CORPUS_DUMP=DIR` writes it out for other tools.

mod faults_support;

use std::time::Duration;

use faults_support::*;

/// One stream of the corpus.
struct Case {
    name: String,
    client: Vec<u8>,
    server: Vec<u8>,
}

/// Splits a captured conversation into its messages.
fn messages(bytes: &[u8], dir: icap_codec::Direction) -> Vec<Vec<u8>> {
    let mut decoder = icap_codec::Decoder::new(dir);
    let mut events = Vec::new();
    decoder.decode(bytes::Bytes::copy_from_slice(bytes), &mut events);
    decoder.finish(&mut events);
    let mut out = Vec::new();
    let mut start = 0usize;
    for e in events {
        if let icap_codec::Event::MessageEnd { offset, .. } = e {
            out.push(bytes[start..offset as usize].to_vec());
            start = offset as usize;
        }
    }
    out
}

/// Positions of framing bytes: the digits of Encapsulated offsets, the
/// chunk-size lines, and the CR LF ending the ICAP header block.
fn framing_positions(msg: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let head_end = memchr::memmem::find(msg, b"\r\n\r\n").map_or(msg.len(), |p| p + 4);
    if let Some(enc) = memchr::memmem::find(&msg[..head_end], b"Encapsulated: ") {
        let mut i = enc + 14;
        while i < head_end && msg[i] != b'\r' {
            if msg[i].is_ascii_digit() {
                out.push(i);
            }
            i += 1;
        }
    }
    out.extend([head_end - 4, head_end - 3, head_end - 2, head_end - 1]);
    out
}

fn flip(msg: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[at] ^= 1 << bit;
    m
}

fn corpus() -> Vec<Case> {
    use icap_codec::Direction::{Request, Response};
    let mut cases = Vec::new();
    let mut push = |name: String, client: Vec<u8>, server: Vec<u8>| {
        cases.push(Case {
            name,
            client,
            server,
        })
    };
    for (fixture, req, resp) in simple_pairs() {
        let reqs = messages(&req, Request);
        let resps = messages(&resp, Response);
        let answered = |n: usize| -> Vec<u8> { resps.iter().take(n).flatten().copied().collect() };
        let before_last: Vec<u8> = reqs[..reqs.len() - 1].concat();
        let last = reqs.last().unwrap();
        // Truncations inside the last request: the sensor answers the
        // requests that came whole, then closes.
        for k in 1..=4 {
            let cut = last.len() * k / 5;
            let mut client = before_last.clone();
            client.extend_from_slice(&last[..cut]);
            push(
                format!("{fixture}: request cut at {cut}/{}", last.len()),
                client,
                answered(reqs.len() - 1),
            );
        }
        // Truncations inside the last response.
        let last_resp = resps.last().unwrap();
        for k in 1..=4 {
            let cut = last_resp.len() * k / 5;
            let mut server = answered(resps.len() - 1);
            server.extend_from_slice(&last_resp[..cut]);
            push(
                format!("{fixture}: response cut at {cut}/{}", last_resp.len()),
                req.clone(),
                server,
            );
        }
        // Bit flips in the framing of the last request and response.
        let positions = framing_positions(last);
        for (n, &at) in positions.iter().enumerate().step_by(2).take(6) {
            let bit = (n % 7) as u8;
            let mut client = before_last.clone();
            client.extend_from_slice(&flip(last, at, bit));
            push(
                format!("{fixture}: request bit {bit} flipped at {at}"),
                client,
                resp.clone(),
            );
        }
        let positions = framing_positions(last_resp);
        for (n, &at) in positions.iter().enumerate().step_by(2).take(4) {
            let bit = (n % 7) as u8;
            let mut server = answered(resps.len() - 1);
            server.extend_from_slice(&flip(last_resp, at, bit));
            push(
                format!("{fixture}: response bit {bit} flipped at {at}"),
                req.clone(),
                server,
            );
        }
        // NUL bytes in the request line and in a header name.
        for (what, at) in [
            ("method", 1),
            ("uri", last.iter().position(|&b| b == b' ').unwrap() + 3),
        ] {
            let mut m = last.clone();
            m[at] = 0;
            let mut client = before_last.clone();
            client.extend_from_slice(&m);
            push(
                format!("{fixture}: NUL in the {what}"),
                client,
                resp.clone(),
            );
        }
        // A huge and an overflowing chunk size in a body.
        if let Some(at) = memchr::memmem::find(last, b"\r\n\r\n")
            .and_then(|h| last.iter().rposition(|&b| b == b'\n').filter(|&p| p > h))
        {
            let _ = at;
        }
        for size in ["ffffffffffffffff", "100000000000000000000"] {
            if let Some(body) = body_start(last) {
                let mut m = last[..body].to_vec();
                m.extend_from_slice(format!("{size}\r\nabc\r\n0\r\n\r\n").as_bytes());
                let mut client = before_last.clone();
                client.extend_from_slice(&m);
                push(
                    format!("{fixture}: chunk size {size}"),
                    client,
                    resp.clone(),
                );
            }
        }
        // An Encapsulated offset that overflows 64 bits.
        let text = String::from_utf8_lossy(last).to_string();
        if let Some(line) = text.lines().find(|l| l.starts_with("Encapsulated: ")) {
            let bad = "Encapsulated: req-hdr=0, res-body=99999999999999999999999";
            let mut client = before_last.clone();
            client.extend_from_slice(text.replacen(line, bad, 1).as_bytes());
            push(
                format!("{fixture}: overflowing offset"),
                client,
                resp.clone(),
            );
        }
    }
    // Endless headers: 2 MiB of header lines that never end.
    let mut endless = b"REQMOD icap://127.0.0.1/echo ICAP/1.0\r\nHost: 127.0.0.1\r\n".to_vec();
    let mut n = 0;
    while endless.len() < 2 << 20 {
        endless.extend_from_slice(format!("X-Pad-{n}: {}\r\n", "a".repeat(100)).as_bytes());
        n += 1;
    }
    push(
        "endless request headers".into(),
        endless.clone(),
        Vec::new(),
    );
    let mut endless_line = b"REQMOD icap://127.0.0.1/echo ICAP/1.0\r\nX-Long: ".to_vec();
    endless_line.resize(1 << 20, b'x');
    push("endless header line".into(), endless_line, Vec::new());
    let options = fixture("options.req");
    let mut endless_resp = b"ICAP/1.0 200 OK\r\n".to_vec();
    while endless_resp.len() < 1 << 20 {
        endless_resp.extend_from_slice(b"X-Pad: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\r\n");
    }
    push(
        "endless response headers".into(),
        options.clone(),
        endless_resp,
    );
    // Other protocols, and TLS, on the ICAP port.
    let others: Vec<(&str, Vec<u8>)> = vec![
        (
            "HTTP/1.1 GET",
            b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec(),
        ),
        (
            "HTTP CONNECT",
            b"CONNECT example:443 HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        (
            "SMTP",
            b"EHLO client.example\r\nMAIL FROM:<a@b>\r\n".to_vec(),
        ),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("blank lines", b"\r\n".repeat(1000)),
        ("NUL flood", vec![0u8; 4096]),
        ("binary", pattern(7, 8192)),
        ("TLS ClientHello", tls_client_hello()),
        (
            "TLS ClientHello after OPTIONS",
            [options.clone(), tls_client_hello()].concat(),
        ),
    ];
    for (name, bytes) in others {
        push(format!("not ICAP: {name}"), bytes, Vec::new());
    }
    // A sensor that answers with something else than ICAP.
    for (name, answer) in [
        (
            "HTTP answer",
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("TLS alert", vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
        ("binary answer", pattern(9, 2048)),
    ] {
        push(format!("sensor not ICAP: {name}"), options.clone(), answer);
    }
    for seed in 0..20u64 {
        // Random bytes after a valid request: stray bytes taken as the next
        // request.
        let mut client = options.clone();
        client.extend_from_slice(&pattern(100 + seed, 16 + seed as usize * 37));
        push(
            format!("garbage after OPTIONS #{seed}"),
            client,
            fixture("options.resp"),
        );
    }
    cases
}

/// The offset of the first chunk-size line of a message with a body.
fn body_start(msg: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(msg).ok()?;
    let enc = text.lines().find(|l| l.starts_with("Encapsulated: "))?;
    let body = enc
        .split(',')
        .find(|e| e.contains("-body=") && !e.contains("null-body"))?;
    let offset: usize = body.split('=').nth(1)?.trim().parse().ok()?;
    let head_end = memchr::memmem::find(msg, b"\r\n\r\n")? + 4;
    let at = head_end + offset;
    (at < msg.len()).then_some(at)
}

/// Deterministic pseudo-random bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A TLS 1.2 ClientHello record (SNI sensor.example).
fn tls_client_hello() -> Vec<u8> {
    let sni = b"sensor.example";
    let mut ext = Vec::new();
    ext.extend_from_slice(&[0x00, 0x00]);
    let list_len = sni.len() + 3;
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(sni);
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]);
    hello.push(0);
    hello.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2f, 0x01, 0x00]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    hs.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_corpus_is_forwarded_exactly_and_flagged() {
    let cases = corpus();
    assert!(cases.len() >= 200, "only {} streams", cases.len());
    if let Ok(dir) = std::env::var("ICAPTAP_CORPUS_DUMP") {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, c) in cases.iter().enumerate() {
            std::fs::write(format!("{dir}/{i:03}.req"), &c.client).unwrap();
            std::fs::write(format!("{dir}/{i:03}.resp"), &c.server).unwrap();
        }
    }
    let scripts = cases
        .iter()
        .map(|c| {
            vec![
                Act::ReadEof,
                Act::Send(c.server.clone()),
                Act::Sleep(Duration::from_millis(5)),
            ]
        })
        .collect();
    let server = RecordingServer::start(scripts).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let proxy = ProxyProcess::start(server.addr, &out, &[], None);
    let mut locals = Vec::new();
    let mut rss_warm = 0;
    for (i, case) in cases.iter().enumerate() {
        let mut client = RecordingClient::connect(proxy.listen).await;
        client.send(&case.client).await;
        client.shutdown().await;
        let (_, got) = client.wait_end().await;
        let leg = server.ended_leg(i).await;
        assert!(
            leg.received == case.client,
            "{}: the request changed on the way",
            case.name
        );
        assert!(
            got == case.server,
            "{}: the answer changed on the way",
            case.name
        );
        locals.push(client.local);
        if i == 10 {
            rss_warm = proxy.rss_kib();
        }
    }
    let rss_end = proxy.rss_kib();
    let (ok, stderr) = proxy.stop();
    assert!(ok, "{stderr}");
    eprintln!(
        "{} streams; proxy RSS {rss_warm} KiB after 10, {rss_end} KiB at the end",
        cases.len()
    );
    assert!(
        rss_end.saturating_sub(rss_warm) < 32 * 1024,
        "RSS grew from {rss_warm} to {rss_end} KiB over the corpus"
    );
    let records = Records::read(&out);
    let mut unflagged = Vec::new();
    for (case, local) in cases.iter().zip(&locals) {
        let Some(c) = records.connection_from(*local) else {
            unflagged.push(format!("{}: no connection record", case.name));
            continue;
        };
        let xs = records.exchanges_of(c.conn);
        let flagged = !c.anomalies.is_empty()
            || xs.iter().any(|x| {
                !x.anomalies.is_empty() || ["missing", "malformed"].contains(&x.verdict.as_str())
            });
        if !flagged {
            unflagged.push(format!(
                "{}: {:?}",
                case.name,
                xs.iter().map(|x| &x.verdict).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        unflagged.is_empty(),
        "{} streams not flagged:\n{}",
        unflagged.len(),
        unflagged.join("\n")
    );
}
