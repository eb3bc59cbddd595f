//! Offline analysis on captures built in the test: every link type, IPv4
//! and IPv6, pcap and pcapng, gzip, several files, and the TCP cases
//! reassembly must get right (reordering, retransmission, overlap, loss,
//! mid-connection start, sequence wrap-around, reset, buffer bound).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use icaptap::analyze::synthetic::{
    Conversation, Segment, SyntheticFormat, SyntheticLink, SyntheticWriter,
};
use icaptap::analyze::{read_captures, AnalyzeError, AnalyzeOptions, CaptureStats};
use icaptap::capture::packet::TcpFlags;
use icaptap::tap::{CloseKind, Direction, Tap, TapEvent};

const T0: u64 = 1_700_000_000_000_000;

fn conv(v6: bool, isn_c: u32, isn_s: u32) -> Conversation {
    let (c, s): (SocketAddr, SocketAddr) = if v6 {
        (
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:1344".parse().unwrap(),
        )
    } else {
        (
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:1344".parse().unwrap(),
        )
    };
    Conversation::new(c, s, isn_c, isn_s)
}

/// Frame i (0-based) is captured at T0 + i ms.
fn capture_bytes(
    conv: &Conversation,
    segs: &[Segment],
    link: SyntheticLink,
    format: SyntheticFormat,
) -> Vec<u8> {
    let mut w = SyntheticWriter::new(Vec::new(), format, link.linktype()).unwrap();
    for (i, s) in segs.iter().enumerate() {
        w.frame(T0 + i as u64 * 1000, &link.frame(&conv.ip_packet(s)))
            .unwrap();
    }
    w.into_inner()
}

fn write_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn analyze(paths: &[PathBuf], opts: &AnalyzeOptions) -> (Vec<Tap>, CaptureStats) {
    let mut taps = Vec::new();
    let stats = read_captures(paths, opts, &mut |t| taps.push(t)).unwrap();
    (taps, stats)
}

/// Data taps of one connection and direction: (offset, bytes, frame).
fn data(taps: &[Tap], conn: u64, dir: Direction) -> Vec<(u64, Vec<u8>, u64)> {
    taps.iter()
        .filter(|t| t.conn.id == conn)
        .filter_map(|t| match &t.event {
            TapEvent::Data {
                dir: d,
                offset,
                bytes,
            } if *d == dir => Some((*offset, bytes.to_vec(), t.frame.unwrap())),
            _ => None,
        })
        .collect()
}

/// The stream rebuilt from data taps; panics on overlap or going back.
/// Returns the bytes seen and the (offset, length) of every gap.
fn rebuild(chunks: &[(u64, Vec<u8>, u64)]) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut out = Vec::new();
    let mut gaps = Vec::new();
    let mut next = 0u64;
    for (off, bytes, _) in chunks {
        assert!(*off >= next, "offset {off} goes back before {next}");
        if *off > next {
            gaps.push((next, off - next));
        }
        out.extend_from_slice(bytes);
        next = off + bytes.len() as u64;
    }
    (out, gaps)
}

fn kinds(taps: &[Tap]) -> Vec<String> {
    taps.iter()
        .map(|t| match &t.event {
            TapEvent::Open => "open".to_string(),
            TapEvent::Data { dir, .. } => format!("data-{dir:?}"),
            TapEvent::Closed { dir, how } => format!("closed-{dir:?}-{}", how.as_str()),
            TapEvent::Finished => "finished".to_string(),
            TapEvent::ConnectFailed { .. } => "connect-failed".to_string(),
            TapEvent::Pending { .. } => "pending".to_string(),
            TapEvent::Sent { .. } => "sent".to_string(),
            TapEvent::Undelivered { .. } => "undelivered".to_string(),
            TapEvent::Lost { dir, .. } => format!("lost-{dir:?}"),
            TapEvent::Tls(_) => "tls".to_string(),
        })
        .collect()
}

fn request_body(n: usize) -> Vec<u8> {
    let mut v = b"RESPMOD icap://10.0.0.2:1344/echo ICAP/1.0\r\nHost: 10.0.0.2\r\nEncapsulated: res-body=0\r\n\r\n".to_vec();
    v.extend((0..n).map(|i| b'a' + (i % 26) as u8));
    v
}

fn response_body(n: usize) -> Vec<u8> {
    let mut v = b"ICAP/1.0 200 OK\r\nISTag: \"x\"\r\nEncapsulated: res-body=0\r\n\r\n".to_vec();
    v.extend((0..n).map(|i| b'A' + (i % 26) as u8));
    v
}

/// A complete conversation: handshake, request in segments, response in
/// segments, FIN both ways. Returns the segments and the two payloads.
fn full_conversation(c: &mut Conversation, mss: usize) -> (Vec<Segment>, Vec<u8>, Vec<u8>) {
    let req = request_body(5000);
    let resp = response_body(7000);
    let mut segs = c.handshake();
    segs.extend(c.data(Direction::Request, &req, mss));
    segs.push(c.ack(Direction::Response));
    segs.extend(c.data(Direction::Response, &resp, mss));
    segs.push(c.ack(Direction::Request));
    segs.push(c.fin(Direction::Request));
    segs.push(c.fin(Direction::Response));
    segs.push(c.ack(Direction::Request));
    (segs, req, resp)
}

fn assert_clean_conversation(taps: &[Tap], stats: &CaptureStats, req: &[u8], resp: &[u8]) {
    let (got_req, gaps_req) = rebuild(&data(taps, 1, Direction::Request));
    let (got_resp, gaps_resp) = rebuild(&data(taps, 1, Direction::Response));
    assert_eq!(got_req, req);
    assert_eq!(got_resp, resp);
    assert!(gaps_req.is_empty() && gaps_resp.is_empty());
    let k = kinds(taps);
    assert_eq!(k.first().map(String::as_str), Some("open"));
    assert_eq!(
        &k[k.len() - 3..],
        ["closed-Request-fin", "closed-Response-fin", "finished"]
    );
    assert_eq!(stats.flows.flows, 1);
    assert_eq!(stats.flows.reassembly.gaps, 0);
}

#[test]
fn every_link_type_and_both_ip_versions_reassemble_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let links = [
        SyntheticLink::Ethernet,
        SyntheticLink::Vlan(42),
        SyntheticLink::QinQ(100, 42),
        SyntheticLink::Sll,
        SyntheticLink::Sll2,
        SyntheticLink::Raw,
        SyntheticLink::Null,
        SyntheticLink::Loop,
    ];
    for link in links {
        for v6 in [false, true] {
            for format in [SyntheticFormat::Pcap, SyntheticFormat::PcapNg] {
                let mut c = conv(v6, 1000, 900_000);
                let (segs, req, resp) = full_conversation(&mut c, 1460);
                let bytes = capture_bytes(&c, &segs, link, format);
                let p = write_file(&dir, "c.cap", &bytes);
                let (taps, stats) = analyze(&[p], &AnalyzeOptions::default());
                assert_clean_conversation(&taps, &stats, &req, &resp);
                let open = &taps[0];
                assert_eq!(open.conn.client, c.client, "{link:?} v6={v6} {format:?}");
                assert_eq!(open.conn.server, c.server);
                assert_eq!(open.conn.opened, T0);
                assert_eq!(open.frame, Some(1));
                // Request data: frames 4.. carry the request segments, one
                // per frame, captured 1 ms apart.
                let d = data(&taps, 1, Direction::Request);
                assert_eq!(d[0].0, 0);
                assert_eq!(d[0].2, 4);
                let first_data = taps
                    .iter()
                    .find(|t| matches!(t.event, TapEvent::Data { .. }))
                    .unwrap();
                assert_eq!(first_data.at, T0 + 3000, "{format:?} timestamps");
            }
        }
    }
}

#[test]
fn reordered_segments_are_delivered_in_order_with_their_own_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 5, 7);
    let (mut segs, req, resp) = full_conversation(&mut c, 1000);
    // Request segments are at indices 3..8; move the second after the fourth.
    let late = segs.remove(4);
    segs.insert(6, late);
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Ethernet, SyntheticFormat::Pcap);
    let (taps, stats) = analyze(
        &[write_file(&dir, "r.pcap", &bytes)],
        &AnalyzeOptions::default(),
    );
    assert_clean_conversation(&taps, &stats, &req, &resp);
    let d = data(&taps, 1, Direction::Request);
    // Frame 4 first, then frame 7 (the late one) fills the hole and frames 5
    // and 6 follow it.
    let frames: Vec<u64> = d.iter().map(|x| x.2).collect();
    assert_eq!(&frames[..4], &[4, 7, 5, 6]);
    assert_eq!(stats.flows.reassembly.out_of_order_segments, 2);
}

#[test]
fn retransmissions_and_overlaps_are_not_delivered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 77, 88);
    let (segs, req, resp) = full_conversation(&mut c, 1200);
    let mut out = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        if i == 4 {
            // Overlapping re-segmentation: the first 800 bytes, then bytes
            // 400..1200 (overlap 400..800), then the exact segment again.
            out.push(s.slice(0..800));
            out.push(s.slice(400..1200));
            out.push(s.clone());
        } else {
            out.push(s.clone());
        }
        if i == 5 {
            out.push(s.clone()); // plain retransmission
        }
    }
    let bytes = capture_bytes(&c, &out, SyntheticLink::Sll2, SyntheticFormat::PcapNg);
    let (taps, stats) = analyze(
        &[write_file(&dir, "o.pcapng", &bytes)],
        &AnalyzeOptions::default(),
    );
    assert_clean_conversation(&taps, &stats, &req, &resp);
    assert_eq!(stats.flows.reassembly.duplicate_bytes, 400 + 1200 + 1200);
}

#[test]
fn a_lost_segment_acknowledged_by_the_receiver_is_a_visible_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 1, 2);
    let req = request_body(5000);
    let mut segs = c.handshake();
    let data_segs = c.data(Direction::Request, &req, 1000);
    let lost = data_segs[2].clone();
    for (i, s) in data_segs.iter().enumerate() {
        if i != 2 {
            segs.push(s.clone());
        }
    }
    segs.push(c.ack(Direction::Response)); // acks everything: past the hole
    let resp = response_body(100);
    segs.extend(c.data(Direction::Response, &resp, 1460));
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Ethernet, SyntheticFormat::Pcap);
    let (taps, stats) = analyze(
        &[write_file(&dir, "g.pcap", &bytes)],
        &AnalyzeOptions::default(),
    );
    let d = data(&taps, 1, Direction::Request);
    let (got, gaps) = rebuild(&d);
    let lost_at = u64::from(lost.seq - 2);
    assert_eq!(gaps, vec![(lost_at, lost.payload.len() as u64)]);
    let mut expected = req.clone();
    expected.drain(lost_at as usize..lost_at as usize + lost.payload.len());
    assert_eq!(got, expected);
    // The bytes after the hole were delivered when the ACK arrived, before
    // the response data: the observer sees the request before its answer.
    let ack_frame = 3 + data_segs.len() as u64;
    let after_gap = d.iter().find(|x| x.0 > lost_at).unwrap();
    let tap = taps.iter().find(|t| matches!(&t.event, TapEvent::Data { offset, dir: Direction::Request, .. } if *offset == after_gap.0)).unwrap();
    assert_eq!(
        tap.at,
        T0 + (ack_frame - 1) * 1000,
        "delivered at the ACK's time"
    );
    let first_resp = taps
        .iter()
        .position(|t| {
            matches!(
                &t.event,
                TapEvent::Data {
                    dir: Direction::Response,
                    ..
                }
            )
        })
        .unwrap();
    let last_req = taps
        .iter()
        .rposition(|t| {
            matches!(
                &t.event,
                TapEvent::Data {
                    dir: Direction::Request,
                    ..
                }
            )
        })
        .unwrap();
    assert!(last_req < first_resp);
    assert_eq!(stats.flows.reassembly.gaps, 1);
    assert_eq!(stats.flows.reassembly.gap_bytes, lost.payload.len() as u64);
    // Flow still open at end of capture: Finished without Closed.
    let k = kinds(&taps);
    assert_eq!(k.last().map(String::as_str), Some("finished"));
    assert!(!k.iter().any(|x| x.starts_with("closed")));
}

#[test]
fn a_hole_never_filled_is_skipped_at_end_of_input_and_before_a_fin() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(true, 10, 20);
    let req = request_body(3000);
    let mut segs = c.handshake();
    let d = c.data(Direction::Request, &req, 1000);
    segs.push(d[0].clone());
    segs.push(d[2].clone());
    segs.push(d[3].clone());
    segs.push(c.fin(Direction::Request));
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Raw, SyntheticFormat::Pcap);
    let (taps, stats) = analyze(
        &[write_file(&dir, "h.pcap", &bytes)],
        &AnalyzeOptions::default(),
    );
    let (got, gaps) = rebuild(&data(&taps, 1, Direction::Request));
    assert_eq!(gaps, vec![(1000, 1000)]);
    assert_eq!(got.len(), req.len() - 1000);
    let k = kinds(&taps);
    assert!(k.contains(&"closed-Request-fin".to_string()), "{k:?}");
    assert_eq!(k.last().map(String::as_str), Some("finished"));
    assert_eq!(stats.flows.reassembly.gaps, 1);
}

#[test]
fn capture_started_mid_connection_counts_offsets_from_the_first_byte_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 4_000_000, 9_000_000);
    let (segs, req, resp) = full_conversation(&mut c, 1000);
    // Drop the handshake and the first request segment.
    let segs: Vec<Segment> = segs[4..].to_vec();
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Ethernet, SyntheticFormat::Pcap);
    let (taps, _) = analyze(
        &[write_file(&dir, "m.pcap", &bytes)],
        &AnalyzeOptions::default(),
    );
    let (got_req, gaps) = rebuild(&data(&taps, 1, Direction::Request));
    assert!(gaps.is_empty());
    assert_eq!(got_req, &req[1000..]);
    let (got_resp, _) = rebuild(&data(&taps, 1, Direction::Response));
    assert_eq!(got_resp, resp);
    assert_eq!(
        taps[0].conn.client, c.client,
        "client found by the ICAP port"
    );
    assert_eq!(kinds(&taps).last().map(String::as_str), Some("finished"));
}

#[test]
fn sequence_numbers_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, u32::MAX - 2500, u32::MAX - 10);
    let (mut segs, req, resp) = full_conversation(&mut c, 1000);
    segs.swap(4, 5); // reorder across the wrap, too
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Null, SyntheticFormat::PcapNg);
    let (taps, stats) = analyze(
        &[write_file(&dir, "w.pcapng", &bytes)],
        &AnalyzeOptions::default(),
    );
    assert_clean_conversation(&taps, &stats, &req, &resp);
}

#[test]
fn gzip_compressed_capture_is_read_by_its_magic_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 1, 1);
    let (segs, req, resp) = full_conversation(&mut c, 1460);
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Vlan(7), SyntheticFormat::PcapNg);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let p = write_file(&dir, "named-without-gz-suffix.cap", &gz.finish().unwrap());
    let (taps, stats) = analyze(&[p], &AnalyzeOptions::default());
    assert_clean_conversation(&taps, &stats, &req, &resp);
    assert!(stats.files[0].gzip);
    assert_eq!(stats.files[0].format, "pcapng");
    assert_eq!(stats.files[0].bytes, bytes.len() as u64);
}

#[test]
fn several_files_are_one_capture_with_frame_numbers_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 1, 1);
    let (segs, req, resp) = full_conversation(&mut c, 1000);
    let (a, b) = segs.split_at(6);
    let first = capture_bytes(&c, a, SyntheticLink::Ethernet, SyntheticFormat::Pcap);
    // The second file's frames are captured after the first's.
    let mut w = SyntheticWriter::new(Vec::new(), SyntheticFormat::Pcap, 1).unwrap();
    for (i, s) in b.iter().enumerate() {
        let at = T0 + (a.len() + i) as u64 * 1000;
        w.frame(at, &SyntheticLink::Ethernet.frame(&c.ip_packet(s)))
            .unwrap();
    }
    let paths = [
        write_file(&dir, "part0.pcap", &first),
        write_file(&dir, "part1.pcap", &w.into_inner()),
    ];
    let (taps, stats) = analyze(&paths, &AnalyzeOptions::default());
    assert_clean_conversation(&taps, &stats, &req, &resp);
    let d = data(&taps, 1, Direction::Request);
    assert_eq!(d[2].2, 6, "last request segment of file 1 is its frame 6");
    assert_eq!(d[3].2, 1, "frame numbers restart in the next file");
    assert_eq!(stats.files.len(), 2);
    assert_eq!(stats.frames(), segs.len() as u64);
}

#[test]
fn truncated_last_packet_is_a_warning_and_earlier_frames_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 1, 1);
    let (segs, req, _) = full_conversation(&mut c, 1000);
    let bytes = capture_bytes(
        &c,
        &segs[..8],
        SyntheticLink::Ethernet,
        SyntheticFormat::Pcap,
    );
    let cut = bytes.len() - 500;
    let p = write_file(&dir, "t.pcap", &bytes[..cut]);
    let (taps, stats) = analyze(&[p], &AnalyzeOptions::default());
    assert_eq!(stats.files[0].frames, 7);
    assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
    assert!(
        stats.warnings[0].contains("truncated at byte"),
        "{}",
        stats.warnings[0]
    );
    let (got, _) = rebuild(&data(&taps, 1, Direction::Request));
    assert_eq!(got, &req[..4000]);
    // The same for pcapng, where the byte offset is that of the last block.
    let bytes = capture_bytes(
        &c,
        &segs[..8],
        SyntheticLink::Ethernet,
        SyntheticFormat::PcapNg,
    );
    let p = write_file(&dir, "t.pcapng", &bytes[..bytes.len() - 10]);
    let (_, stats) = analyze(&[p], &AnalyzeOptions::default());
    assert_eq!(stats.files[0].frames, 7);
    assert!(stats.warnings[0].contains("truncated at byte"));
}

#[test]
fn clear_errors_for_missing_empty_foreign_and_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AnalyzeOptions::default();
    let run = |p: PathBuf| read_captures(&[p], &opts, &mut |_| {}).unwrap_err();
    let e = run(dir.path().join("nope.pcap"));
    assert!(matches!(e, AnalyzeError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("not found"));
    let e = run(write_file(&dir, "empty.pcap", b""));
    assert!(matches!(e, AnalyzeError::NotACapture { .. }), "{e}");
    let e = run(write_file(&dir, "text.pcap", b"GET / HTTP/1.1\r\n"));
    assert!(matches!(e, AnalyzeError::NotACapture { .. }), "{e}");
    assert!(e.to_string().contains("474554"), "{e}");
    let e = run(write_file(
        &dir,
        "short.pcap",
        &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0],
    ));
    assert!(matches!(e, AnalyzeError::TruncatedHeader { .. }), "{e}");
    // An unsupported link type in a classic pcap (LINKTYPE_IEEE802_11 = 105).
    let w = SyntheticWriter::new(Vec::new(), SyntheticFormat::Pcap, 105).unwrap();
    let e = run(write_file(&dir, "wifi.pcap", &w.into_inner()));
    assert!(
        matches!(e, AnalyzeError::UnsupportedLinkType { linktype: 105, .. }),
        "{e}"
    );
}

#[test]
fn other_ports_are_found_by_their_first_bytes_unless_only_given_ports_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Conversation::new(
        "10.0.0.1:50000".parse().unwrap(),
        "10.0.0.2:11344".parse().unwrap(),
        1,
        1,
    );
    let (segs, req, resp) = full_conversation(&mut c, 1460);
    let p = write_file(
        &dir,
        "tls-port.pcap",
        &capture_bytes(&c, &segs, SyntheticLink::Ethernet, SyntheticFormat::Pcap),
    );
    // Only the ports given: the flow on 11344 is other traffic.
    let only_given = AnalyzeOptions::default().discover(false);
    let (taps, stats) = analyze(std::slice::from_ref(&p), &only_given);
    assert!(taps.is_empty());
    assert_eq!(stats.flows.other_traffic, segs.len() as u64);
    // Given with --port, or found by its first bytes (its handshake held
    // and handed back), the same conversation, whole.
    let (taps, stats) = analyze(
        std::slice::from_ref(&p),
        &AnalyzeOptions::with_ports(&[11344]),
    );
    assert_clean_conversation(&taps, &stats, &req, &resp);
    let (taps, stats) = analyze(&[p], &AnalyzeOptions::default());
    assert_clean_conversation(&taps, &stats, &req, &resp);
    assert_eq!(stats.found_ports, vec![11344]);
    assert_eq!(stats.flows.other_traffic, 0);
}

#[test]
fn reset_closes_both_directions_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 1, 1);
    let mut segs = c.handshake();
    let req = request_body(100);
    segs.extend(c.data(Direction::Request, &req, 1460));
    segs.push(c.control(
        Direction::Response,
        TcpFlags {
            rst: true,
            ack: true,
            ..TcpFlags::default()
        },
    ));
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Loop, SyntheticFormat::Pcap);
    let (taps, _) = analyze(
        &[write_file(&dir, "rst.pcap", &bytes)],
        &AnalyzeOptions::default(),
    );
    assert_eq!(
        kinds(&taps),
        [
            "open",
            "data-Request",
            "closed-Response-reset",
            "closed-Request-reset",
            "finished"
        ]
    );
    let closed = taps
        .iter()
        .find(|t| {
            matches!(
                t.event,
                TapEvent::Closed {
                    how: CloseKind::Reset,
                    ..
                }
            )
        })
        .unwrap();
    assert_eq!(closed.frame, Some(5));
}

#[test]
fn out_of_order_bound_forces_a_skip_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 1, 1);
    let req = request_body(200_000);
    let mut segs = c.handshake();
    let d = c.data(Direction::Request, &req, 1000);
    segs.push(d[0].clone());
    segs.extend(d[2..].iter().cloned()); // segment 1 lost, nothing ACKs
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Ethernet, SyntheticFormat::Pcap);
    let mut opts = AnalyzeOptions::default();
    opts.limits.max_pending_per_direction = 50_000;
    let (taps, stats) = analyze(&[write_file(&dir, "b.pcap", &bytes)], &opts);
    assert_eq!(stats.flows.reassembly.forced_skips, 1);
    let d = data(&taps, 1, Direction::Request);
    let (got, gaps) = rebuild(&d);
    assert_eq!(gaps, vec![(1000, 1000)]);
    assert_eq!(got.len(), req.len() - 1000);
    // The skip happened once the bound was passed, long before the end.
    let skip_frame = d[1].2;
    assert!(skip_frame < 3 + 60, "skipped at frame {skip_frame}");
}

#[test]
fn connections_get_ids_in_order_of_first_packet_and_port_reuse_is_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = conv(false, 100, 200);
    let (segs_a, req_a, _) = full_conversation(&mut a, 1460);
    // Same addresses again after the first closed: a new connection.
    let mut b = conv(false, 500_000, 600_000);
    let (segs_b, req_b, _) = full_conversation(&mut b, 1460);
    let mut all = segs_a.clone();
    all.extend(segs_b);
    let bytes = capture_bytes(&a, &all, SyntheticLink::Ethernet, SyntheticFormat::Pcap);
    let (taps, stats) = analyze(
        &[write_file(&dir, "two.pcap", &bytes)],
        &AnalyzeOptions::default(),
    );
    assert_eq!(stats.flows.flows, 2);
    assert_eq!(rebuild(&data(&taps, 1, Direction::Request)).0, req_a);
    assert_eq!(rebuild(&data(&taps, 2, Direction::Request)).0, req_b);
    let finished: BTreeMap<u64, usize> = taps
        .iter()
        .filter(|t| t.event == TapEvent::Finished)
        .fold(BTreeMap::new(), |mut m, t| {
            *m.entry(t.conn.id).or_default() += 1;
            m
        });
    assert_eq!(finished, BTreeMap::from([(1, 1), (2, 1)]));
}

#[test]
fn gzip_file_cut_short_is_a_truncation_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = conv(false, 1, 1);
    let (segs, req, _) = full_conversation(&mut c, 1000);
    let bytes = capture_bytes(&c, &segs, SyntheticLink::Ethernet, SyntheticFormat::Pcap);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let gz = gz.finish().unwrap();
    let p = write_file(&dir, "cut.pcap.gz", &gz[..gz.len() / 2]);
    let (taps, stats) = analyze(&[p], &AnalyzeOptions::default());
    assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
    assert!(
        stats.warnings[0].contains("decompressed"),
        "{}",
        stats.warnings[0]
    );
    assert!(stats.files[0].frames > 0);
    let (got, gaps) = rebuild(&data(&taps, 1, Direction::Request));
    assert!(gaps.is_empty());
    assert_eq!(got, &req[..got.len()], "a prefix of the request, intact");
}
