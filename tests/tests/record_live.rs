//! The recorder live: curl -> Squid -> icaptap -> c-icap (echo) on loopback,
//! with tcpdump capturing the same traffic on `lo`. icaptap's capture must
//! decode as ICAP with one request per exchange in exchanges.jsonl on each
//! leg, be healthy in tshark's expert info, and carry exactly the TCP payload
//! that tcpdump saw, stream for stream.

mod peers;
mod record_common;

use std::path::Path;
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use peers::*;
use record_common::tshark;

/// Every TCP stream's (opener's bytes, other side's bytes), sorted.
fn streams(file: &Path, decode_as: &[String]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut args = vec!["-r".to_string(), file.display().to_string()];
    for d in decode_as {
        args.extend(["-d".to_string(), d.clone()]);
    }
    args.extend(["-T", "fields", "-e", "tcp.stream"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ids: Vec<usize> = tshark(&refs)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut v: Vec<_> = ids
        .into_iter()
        .map(|n| record_common::follow(file, n))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn squid_icaptap_c_icap_capture_matches_tcpdump() {
    assert!(
        have("squid") && have("c-icap") && have("curl") && have("tcpdump") && have("tshark"),
        "squid, c-icap, curl, tcpdump and tshark are installed by .ci/run"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cicap = CIcap::start(&tmp.path().join("c-icap"), "");
    let out = tmp.path().join("icaptap");
    std::fs::create_dir_all(&out).unwrap();
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), cicap.addr);
    forward.drain = Duration::from_secs(3);
    let proxy = start(ProxyPlan::new(forward, out.clone())).await.unwrap();
    let (pp, cp) = (proxy.listen.port(), cicap.addr.port());

    let tcpdump = Tcpdump::start(
        "lo",
        &format!("tcp port {pp} or tcp port {cp}"),
        &tmp.path().join("lo.pcap"),
    );

    let mut objects = vec![("/page.html".to_string(), b"<html>hello</html>".to_vec())];
    objects.push((
        "/big.bin".to_string(),
        (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect(),
    ));
    for i in 0..5u32 {
        objects.push((
            format!("/obj/{i}"),
            vec![b'a' + i as u8; 2000 + 3000 * i as usize],
        ));
    }
    let origin = Origin::start(objects.clone());
    let squid_dir = tmp.path().join("squid");
    let squid = Squid::start_from_async(squid_dir, SquidIcap::echo(proxy.listen)).await;
    let squid_addr = squid.addr;
    let urls: Vec<(String, Vec<u8>)> = objects
        .iter()
        .map(|(p, b)| (origin.url(p), b.clone()))
        .collect();
    let fetched = tokio::task::spawn_blocking(move || {
        urls.into_iter()
            .map(|(u, want)| (curl_via(squid_addr, &u).1 == want, u))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (same, url) in fetched {
        assert!(same, "{url} came back changed");
    }
    drop(squid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stop().await.unwrap();
    let dump = tokio::task::spawn_blocking(move || tcpdump.stop())
        .await
        .unwrap();

    let capture = out.join("capture.pcapng");
    let decode = vec![
        format!("tcp.port=={pp},icap"),
        format!("tcp.port=={cp},icap"),
    ];
    // Neither port is 1344: the capture itself says how to decode it,
    // as the console did (capinfos shows the section's comment).
    let info = std::process::Command::new("capinfos")
        .arg(&capture)
        .output()
        .expect("capinfos (wireshark-common, with tshark)");
    let info = String::from_utf8_lossy(&info.stdout);
    let comment = info
        .lines()
        .find(|l| l.contains("Decode As"))
        .unwrap_or_else(|| panic!("no Decode-As comment in the capture: {info}"));
    for d in &decode {
        assert!(comment.contains(&format!("-d {d}")), "{comment}");
    }
    let exchanges = std::fs::read_to_string(out.join("exchanges.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(exchanges > objects.len(), "{exchanges} exchanges");
    for leg in ["client-leg", "sensor-leg"] {
        let filter = format!(
            "(icap.options || icap.reqmod || icap.respmod) && frame.interface_name == \"{leg}\""
        );
        let mut args = vec!["-r", capture.to_str().unwrap(), "-Y", &filter];
        for d in &decode {
            args.extend(["-d", d.as_str()]);
        }
        let requests = tshark(&args).lines().count();
        assert_eq!(
            requests, exchanges,
            "ICAP requests on the {leg} vs exchanges.jsonl"
        );
    }
    let expert = record_common::expert(&capture).to_lowercase();
    for bad in ["malformed", "previous segment", "unseen", "checksum"] {
        assert!(
            !expert.contains(bad),
            "{bad} in icaptap's capture:\n{expert}"
        );
    }
    let ours = streams(&capture, &decode);
    let theirs = streams(&dump, &decode);
    assert_eq!(
        ours.len(),
        theirs.len(),
        "TCP connections in icaptap's capture vs tcpdump's"
    );
    assert!(
        ours == theirs,
        "the payload of some connection differs from tcpdump's"
    );
    let total: usize = ours.iter().map(|(a, b)| a.len() + b.len()).sum();
    // Squid sends a 1 KiB preview and c-icap answers 204, so bodies are short.
    assert!(total > 20_000, "{total} payload bytes");
    eprintln!("{} TCP connections, {total} payload bytes, {exchanges} exchanges: identical to tcpdump\n{expert}", ours.len());
}
