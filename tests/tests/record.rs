//! The recorder against tshark: synthetic tap streams with real ICAP bytes
//! become a pcapng that tshark decodes as ICAP, reassembles byte for byte
//! on both legs, and finds nothing wrong with.

mod record_common;

use icaptap::capture::{Annotation, BodyCapture, LegChoice, PcapFormat, RecordOptions, Rotation};
use icaptap::tap::Direction;
use record_common::*;

#[test]
fn both_legs_decode_reassemble_and_are_healthy() {
    let conn = two_exchanges(1, false, 200_000);
    let sent = conn.sent.clone();
    let (dir, stats) = record(opts(), conn.taps, vec![]);
    let files = capture_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(file.ends_with("capture.pcapng"));
    assert_eq!(icap_messages(file), 8, "4 ICAP messages on each leg");
    assert_healthy(file);
    for stream in 0..2 {
        let (req, resp) = follow(file, stream);
        assert_eq!(req, sent[0], "request bytes of tcp stream {stream}");
        assert_eq!(resp, sent[1], "response bytes of tcp stream {stream}");
    }
    let names = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
    ]);
    assert!(names.contains("client-leg") && names.contains("sensor-leg"));
    assert_eq!(stats.dropped_bytes, 0);
    assert_eq!(stats.files, 1);
    assert!(
        stats.packets > 2 * 140,
        "200 KB in <=1460-byte segments on two legs: {stats:?}"
    );
}

#[test]
fn ipv6_legs_decode_and_reassemble() {
    let conn = two_exchanges(2, true, 50_000);
    let sent = conn.sent.clone();
    let (dir, _) = record(opts(), conn.taps, vec![]);
    let file = &capture_files(dir.path())[0];
    assert_eq!(
        fields(file, "ipv6", &["frame.number"]).len(),
        fields(file, "", &["frame.number"]).len()
    );
    assert_eq!(icap_messages(file), 8);
    assert_healthy(file);
    for stream in 0..2 {
        assert_eq!(follow(file, stream), (sent[0].clone(), sent[1].clone()));
    }
}

#[test]
fn classic_pcap_holds_both_legs() {
    let conn = two_exchanges(3, false, 30_000);
    let sent = conn.sent.clone();
    let o = RecordOptions {
        format: PcapFormat::Pcap,
        ..opts()
    };
    let (dir, _) = record(o, conn.taps, vec![]);
    let file = &capture_files(dir.path())[0];
    assert!(file.ends_with("capture.pcap"));
    let kind = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-c",
        "1",
        "-T",
        "fields",
        "-e",
        "frame.encap_type",
    ]);
    assert_eq!(kind.trim(), "1", "Ethernet");
    assert_eq!(icap_messages(file), 8);
    assert_healthy(file);
    assert_eq!(follow(file, 1), (sent[0].clone(), sent[1].clone()));
}

#[test]
fn one_leg_only() {
    let conn = two_exchanges(4, false, 10_000);
    let o = RecordOptions {
        legs: LegChoice::Sensor,
        ..opts()
    };
    let (dir, _) = record(o, conn.taps, vec![]);
    let file = &capture_files(dir.path())[0];
    assert_eq!(icap_messages(file), 4);
    let names = tshark(&[
        "-r",
        file.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
    ]);
    assert!(names.lines().all(|l| l == "sensor-leg"), "{names}");
}

#[test]
fn body_policies_cut_bodies_but_keep_heads_and_lengths() {
    for (policy, max_captured) in [(BodyCapture::None, 0usize), (BodyCapture::Preview, 4096)] {
        let conn = two_exchanges(5, false, 200_000);
        let total: usize = conn.sent.iter().map(Vec::len).sum();
        let o = RecordOptions {
            body: policy,
            ..opts()
        };
        let (dir, _) = record(o, conn.taps, vec![]);
        let file = &capture_files(dir.path())[0];
        assert_eq!(icap_messages(file), 8, "{policy:?}: heads still decode");
        let e = expert(file).to_lowercase();
        for bad in [
            "malformed",
            "previous segment",
            "unseen",
            "checksum",
            "retransmission",
        ] {
            assert!(!e.contains(bad), "{policy:?}: {bad}\n{e}");
        }
        // Original lengths stay true, so tshark sees every payload byte's length.
        let lens: usize = fields(
            file,
            "tcp.len > 0 && frame.interface_name == \"client-leg\"",
            &["tcp.len"],
        )
        .iter()
        .map(|l| l.parse::<usize>().unwrap())
        .sum();
        assert_eq!(lens, total, "{policy:?}");
        let kept: usize = fields(
            file,
            "frame.interface_name == \"client-leg\"",
            &["frame.cap_len", "frame.len"],
        )
        .iter()
        .map(|l| {
            let (c, o) = l.split_once('\t').unwrap();
            o.parse::<usize>().unwrap() - c.parse::<usize>().unwrap()
        })
        .sum();
        assert!(
            kept > 200_000 - max_captured - 64,
            "{policy:?}: only {kept} bytes were cut"
        );
        assert!(
            kept <= 200_000 + 26 * 16,
            "{policy:?}: {kept} bytes cut, more than the body"
        );
    }
}

#[test]
fn gaps_advance_sequence_numbers_and_are_counted() {
    let mut c = Conn::new(6, false);
    c.send(Direction::Request, OPTIONS_REQ, 65536);
    c.drop_bytes(Direction::Response, 40);
    c.send(Direction::Response, &OPTIONS_RESP[40..], 65536);
    let c = c.close(icaptap::tap::CloseKind::Fin);
    let (dir, stats) = record(opts(), c.taps, vec![]);
    assert_eq!(stats.dropped_bytes, 40);
    let file = &capture_files(dir.path())[0];
    let seqs = fields(
        file,
        "tcp.len > 0 && tcp.srcport == 1344 && frame.interface_name == \"client-leg\"",
        &["tcp.seq"],
    );
    assert_eq!(
        seqs,
        vec!["41".to_string()],
        "the response starts 40 bytes in"
    );
    let e = expert(file);
    assert!(
        e.contains("Previous segment(s) not captured"),
        "the loss is visible:\n{e}"
    );
}

#[test]
fn annotations_become_packet_comments() {
    let conn = two_exchanges(7, false, 100_000);
    let resp_start = (OPTIONS_RESP.len()) as u64;
    let notes = vec![
        Annotation {
            conn: 7,
            dir: Direction::Request,
            offset: 5,
            comment: "icaptap: options exchange 7.0".into(),
        },
        Annotation {
            conn: 7,
            dir: Direction::Response,
            offset: resp_start + 3,
            comment: "icaptap: verdict clean 7.1".into(),
        },
        Annotation {
            conn: 7,
            dir: Direction::Request,
            offset: 60_000,
            comment: "icaptap: mid-body note".into(),
        },
        Annotation {
            conn: 99,
            dir: Direction::Request,
            offset: 0,
            comment: "never seen".into(),
        },
    ];
    let (dir, stats) = record(opts(), conn.taps, notes);
    let file = &capture_files(dir.path())[0];
    let comments = fields(file, "frame.comment", &["frame.comment"]);
    let found = fields(file, "pkt_comment", &["frame.number"]);
    assert_eq!(found.len(), 6, "3 notes on 2 legs: {comments:?}");
    assert!(comments.iter().any(|c| c.contains("verdict clean 7.1")));
    assert_eq!(stats.annotations, 3);
    assert_eq!(stats.annotations_dropped, 1);
    // Each note is on the packet that carries its byte.
    let on = fields(
        file,
        "frame.comment contains \"verdict clean\"",
        &["tcp.seq", "tcp.len"],
    );
    for l in on {
        let v: Vec<u64> = l.split('\t').map(|x| x.parse().unwrap()).collect();
        assert!(
            v[0] <= resp_start + 4 && resp_start + 4 < v[0] + v[1],
            "{v:?}"
        );
    }
}

/// Each file opens on its own: tshark reads it to the end without complaint.
fn assert_readable(file: &std::path::Path) {
    let out = std::process::Command::new("tshark")
        .args(["-r", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {err}", file.display());
    assert!(
        !err.contains("cut short") && !err.contains("appears to be damaged"),
        "{}: {err}",
        file.display()
    );
    let e = expert(file).to_lowercase();
    assert!(
        !e.contains("malformed") && !e.contains("checksum"),
        "{}: {e}",
        file.display()
    );
}

fn payload_bytes(files: &[std::path::PathBuf]) -> usize {
    files
        .iter()
        .flat_map(|f| fields(f, "tcp.len > 0", &["tcp.len"]))
        .map(|l| l.parse::<usize>().unwrap())
        .sum()
}

#[test]
fn rotation_by_size_keeps_every_file_valid_and_modes_private() {
    use std::os::unix::fs::PermissionsExt;
    let conn = two_exchanges(8, false, 300_000);
    let total: usize = conn.sent.iter().map(Vec::len).sum();
    let o = RecordOptions {
        rotation: Rotation {
            size: Some(64 * 1024),
            ..Rotation::default()
        },
        ..opts()
    };
    let (dir, stats) = record(o, conn.taps, vec![]);
    let files = capture_files(dir.path());
    assert!(
        files.len() >= 9,
        "600 KB of packets in 64 KiB files: {files:?}"
    );
    assert_eq!(stats.files as usize, files.len());
    assert!(files[0].ends_with("capture-0001.pcapng"));
    for f in &files {
        assert_readable(f);
        assert!(
            std::fs::metadata(f).unwrap().len() <= 64 * 1024,
            "{}",
            f.display()
        );
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names = tshark(&[
            "-r",
            f.to_str().unwrap(),
            "-c",
            "1",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
        ]);
        assert!(!names.trim().is_empty());
    }
    assert_eq!(
        payload_bytes(&files),
        2 * total,
        "every payload byte is in exactly one file"
    );
}

#[test]
fn ring_keeps_the_newest_files() {
    let conn = two_exchanges(9, false, 300_000);
    let o = RecordOptions {
        rotation: Rotation {
            size: Some(64 * 1024),
            keep: Some(3),
            ..Rotation::default()
        },
        ..opts()
    };
    let (dir, stats) = record(o, conn.taps, vec![]);
    let files = capture_files(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    let last = format!("capture-{:04}.pcapng", stats.files);
    assert!(files[2].ends_with(&last), "{files:?} vs {last}");
    for f in &files {
        assert_readable(f);
    }
}

#[test]
fn rotation_by_time_follows_packet_time() {
    let mut c = Conn::new(10, false);
    for _ in 0..3 {
        c.send(Direction::Request, OPTIONS_REQ, 65536);
        c.send(Direction::Response, OPTIONS_RESP, 65536);
        c.at += 2_000_000;
    }
    let c = c.close(icaptap::tap::CloseKind::Fin);
    let o = RecordOptions {
        rotation: Rotation {
            seconds: Some(1),
            ..Rotation::default()
        },
        ..opts()
    };
    let (dir, _) = record(o, c.taps, vec![]);
    let files = capture_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        assert_readable(f);
    }
    let messages: usize = files.iter().map(|f| icap_messages(f)).sum();
    assert_eq!(messages, 12);
}

/// A full disk (a 64 KiB tmpfs): the recorder keeps draining taps, stops
/// the capture to keep the records' space, counts what it could not
/// write, and leaves a file that ends at a whole block.
#[test]
fn full_disk_is_counted_and_the_file_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k,mode=0700",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        mounted,
        "mounting a tmpfs needs root (the CI and dev machines run as root)"
    );
    let mut taps = Vec::new();
    for id in 0..4 {
        taps.extend(two_exchanges(20 + id, false, 200_000).taps);
    }
    let n = taps.len();
    let stats = record_into(&mnt, opts(), taps, vec![]);
    let file = mnt.join("capture.pcapng");
    let result = std::panic::catch_unwind(|| {
        // The capture stops at the space kept for records, or at ENOSPC.
        assert!(
            stats.capture_stopped.is_some() || stats.write_errors > 0,
            "{stats:?}"
        );
        assert!(stats.unwritten_bytes > 0, "{stats:?}");
        assert!(
            stats.bytes_written > 0 && stats.bytes_written <= 64 * 1024,
            "{stats:?}"
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), stats.bytes_written);
        assert_readable(&file);
        assert!(n > 40, "{n} taps went through a queue of 8");
    });
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    result.unwrap();
}

#[test]
fn connect_failure_is_syn_then_rst_on_the_sensor_leg() {
    use icaptap::tap::{ConnMeta, ConnectFailure, Tap, TapEvent};
    let m = meta(11, false);
    let failed = std::sync::Arc::new(ConnMeta {
        upstream_local: None,
        ..(*m).clone()
    });
    let tap = |at, event| Tap {
        conn: std::sync::Arc::clone(&failed),
        at,
        frame: None,
        event,
    };
    let taps = vec![
        tap(
            1_000,
            TapEvent::ConnectFailed {
                error: "connection refused".into(),
                cause: ConnectFailure::Sensor,
            },
        ),
        tap(
            2_000,
            TapEvent::Closed {
                dir: Direction::Request,
                how: icaptap::tap::CloseKind::Fin,
            },
        ),
        tap(3_000, TapEvent::Finished),
    ];
    let (dir, _) = record(opts(), taps, vec![]);
    let file = &capture_files(dir.path())[0];
    let sensor = fields(
        file,
        "frame.interface_name == \"sensor-leg\"",
        &["tcp.flags.str"],
    );
    assert_eq!(sensor.len(), 2, "{sensor:?}");
    assert!(
        sensor[0].contains('S') && !sensor[0].contains('A'),
        "{sensor:?}"
    );
    assert!(sensor[1].contains('R'), "{sensor:?}");
    let client = fields(
        file,
        "frame.interface_name == \"client-leg\" && tcp.flags.fin == 1",
        &["tcp.srcport"],
    );
    assert_eq!(
        client,
        vec!["1344".to_string(), "40011".to_string()],
        "icaptap closes first, then the client"
    );
    let e = expert(file).to_lowercase();
    assert!(!e.contains("malformed") && !e.contains("checksum"), "{e}");
}

#[test]
fn a_reset_ends_both_legs_with_rst() {
    let mut c = Conn::new(12, false);
    c.send(Direction::Request, OPTIONS_REQ, 65536);
    c.push(icaptap::tap::TapEvent::Closed {
        dir: Direction::Response,
        how: icaptap::tap::CloseKind::Reset,
    });
    c.push(icaptap::tap::TapEvent::Closed {
        dir: Direction::Request,
        how: icaptap::tap::CloseKind::Fin,
    });
    c.push(icaptap::tap::TapEvent::Finished);
    let (dir, _) = record(opts(), c.taps, vec![]);
    let file = &capture_files(dir.path())[0];
    let rst = fields(
        file,
        "tcp.flags.reset == 1",
        &["frame.interface_name", "tcp.srcport", "tcp.ack"],
    );
    assert_eq!(rst.len(), 2, "{rst:?}");
    for r in &rst {
        assert!(r.contains("\t1344\t"), "the sensor's side resets: {r}");
        assert!(
            r.ends_with(&format!("\t{}", OPTIONS_REQ.len() + 1)),
            "it acknowledges the request: {r}"
        );
    }
    assert!(
        fields(file, "tcp.flags.fin == 1", &["frame.number"]).is_empty(),
        "nothing after the RST"
    );
}

#[test]
fn a_note_for_a_packet_already_written_goes_on_the_next_one() {
    let mut c = Conn::new(13, false);
    c.send(Direction::Request, OPTIONS_REQ, 65536);
    let mut taps = std::mem::take(&mut c.taps);
    c.at += 10;
    c.send(Direction::Response, OPTIONS_RESP, 65536);
    let c = c.close(icaptap::tap::CloseKind::Fin);
    // No hold-back: the request is on disk before the note arrives.
    let o = RecordOptions {
        hold: std::time::Duration::ZERO,
        ..opts()
    };
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = icaptap::tap::TapQueue::bounded(64);
    let (ntx, nrx) = icaptap::capture::annotation_channel(8);
    let handle = icaptap::capture::spawn(dir.path(), o, rx, nrx, None).unwrap();
    for t in taps.drain(..) {
        assert!(tx.deliver_blocking(t));
    }
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(ntx.try_send(Annotation {
        conn: 13,
        dir: Direction::Request,
        offset: 0,
        comment: "late note".into()
    }));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for t in c.taps {
        assert!(tx.deliver_blocking(t));
    }
    drop(tx);
    let stats = handle.join();
    assert_eq!(stats.annotations, 1);
    let file = &capture_files(dir.path())[0];
    let on = fields(
        file,
        "frame.comment contains \"late note\"",
        &["frame.comment", "tcp.srcport"],
    );
    assert_eq!(on.len(), 1, "{on:?}");
    assert!(
        on[0].contains("refers to byte 0 of the request stream"),
        "{on:?}"
    );
    assert!(
        on[0].ends_with("\t1344"),
        "on the response that came next: {on:?}"
    );
}

/// A write that blocks is drawn on the receiving leg when it ends, and the
/// tail of one that fails never: the client leg shows what reached the
/// client, the sensor leg all that the sensor sent.
#[test]
fn the_receiving_leg_shows_only_what_was_written_to_it() {
    use icaptap::tap::{CloseKind, TapEvent};
    let resp = Direction::Response;
    let len = OPTIONS_RESP.len() as u64;
    let mut c = Conn::new(13, false);
    c.send(Direction::Request, OPTIONS_REQ, 65536);
    // The first answer: the write to the client takes 100 bytes at once,
    // the rest later, after the client has sent its next request.
    c.push(TapEvent::Pending {
        dir: resp,
        sent: 100,
    });
    c.send(resp, OPTIONS_RESP, 65536);
    c.send(Direction::Request, OPTIONS_REQ, 65536);
    c.push(TapEvent::Sent {
        dir: resp,
        upto: len,
    });
    // The second: 30 bytes reach the client, then it is gone.
    c.push(TapEvent::Pending {
        dir: resp,
        sent: len + 30,
    });
    c.send(resp, OPTIONS_RESP, 65536);
    c.push(TapEvent::Undelivered {
        dir: resp,
        offset: len + 30,
        len: len - 30,
    });
    c.push(TapEvent::Closed {
        dir: Direction::Request,
        how: CloseKind::Fin,
    });
    c.push(TapEvent::Closed {
        dir: resp,
        how: CloseKind::IcaptapReset,
    });
    c.push(TapEvent::Finished);
    let (dir, _) = record(opts(), c.taps, vec![]);
    let file = &capture_files(dir.path())[0];
    let leg = |name: &str| {
        fields(
            file,
            &format!("frame.interface_name == \"{name}\" && tcp.srcport == 1344 && tcp.len > 0"),
            &["tcp.len", "tcp.payload"],
        )
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let payload = |lines: &[String]| -> String {
        lines
            .iter()
            .map(|l| l.split('\t').nth(1).unwrap().replace(':', ""))
            .collect()
    };
    let client = leg("client-leg");
    assert_eq!(client[0].split('\t').next(), Some("100"), "{client:?}");
    let mut reached = OPTIONS_RESP.to_vec();
    reached.extend_from_slice(&OPTIONS_RESP[..30]);
    assert_eq!(payload(&client), hex(&reached), "{client:?}");
    let sensor = leg("sensor-leg");
    assert_eq!(payload(&sensor), hex(&OPTIONS_RESP.repeat(2)), "{sensor:?}");
    // The rest of the first answer crossed the client leg after the
    // client's second request.
    let order = fields(
        file,
        "frame.interface_name == \"client-leg\" && tcp.len > 0",
        &["tcp.srcport", "tcp.len"],
    );
    assert_eq!(
        order[2],
        format!("40013\t{}", OPTIONS_REQ.len()),
        "{order:?}"
    );
    // The client's reset acknowledges what reached it, not more; icaptap's
    // reset to the sensor acknowledges all the sensor sent.
    let rst = fields(
        file,
        "tcp.flags.reset == 1",
        &["frame.interface_name", "tcp.ack"],
    );
    assert_eq!(
        rst,
        vec![
            format!("client-leg\t{}", len + 30 + 1),
            format!("sensor-leg\t{}", 2 * len + 1),
        ],
        "{rst:?}"
    );
    let lost = fields(
        file,
        "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment",
        &["frame.number"],
    );
    assert!(lost.is_empty(), "{lost:?}");
    assert_healthy(file);
}
