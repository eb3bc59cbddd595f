//! Pairing that stays true where it is hardest: a pipeline deeper than the
//! correlator follows (`pipeline-too-deep`), and a connection that lost
//! bytes (`pairing-uncertain`). Requests are numbered in their URI and
//! answers in their ISTag, so a wrong pair shows.

use bytes::Bytes;
use icap_codec::{
    AnomalyCode, Correlator, Decoder, Direction, Exchange, Side, Stamp, MAX_OPEN_EXCHANGES,
};

fn options(n: usize) -> Bytes {
    Bytes::from(format!(
        "OPTIONS icap://s/{n} ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n"
    ))
}

fn answer(n: usize) -> Bytes {
    Bytes::from(format!(
        "ICAP/1.0 200 OK\r\nISTag: \"{n}\"\r\nEncapsulated: null-body=0\r\n\r\n"
    ))
}

fn feed(decoder: &mut Decoder, correlator: &mut Correlator, bytes: Bytes) {
    let mut events = Vec::new();
    decoder.decode(bytes, &mut events);
    for e in events.drain(..) {
        match decoder.direction() {
            Direction::Request => correlator.on_request(e, Stamp::default()),
            Direction::Response => correlator.on_response(e, Stamp::default()),
        }
    }
}

/// The request number in the URI and the answer number in the ISTag.
fn pair(x: &Exchange) -> (Option<String>, Option<String>) {
    let uri = x.request.as_ref().map(|r| {
        let uri = String::from_utf8_lossy(&r.uri).into_owned();
        uri.rsplit('/').next().unwrap_or("").to_string()
    });
    let tag = x
        .response
        .as_ref()
        .and_then(|r| r.headers.get_str("ISTag"))
        .map(|t| t.trim_matches('"').to_string());
    (uri, tag)
}

fn all(correlator: &mut Correlator) -> Vec<Exchange> {
    correlator.close();
    std::iter::from_fn(|| correlator.pop()).collect()
}

#[test]
fn unanswered_pipelined_requests_stay_bounded() {
    let mut requests = Decoder::new(Direction::Request);
    let mut correlator = Correlator::new();
    for n in 0..(MAX_OPEN_EXCHANGES + 10) {
        feed(&mut requests, &mut correlator, options(n));
    }
    assert_eq!(correlator.open().count(), MAX_OPEN_EXCHANGES);
    let mut given_up = 0;
    while let Some(x) = correlator.pop() {
        assert!(x.incomplete && x.response.is_none());
        assert!(x.has_anomaly(AnomalyCode::PipelineTooDeep));
        given_up += 1;
    }
    assert_eq!(given_up, 10);
}

#[test]
fn past_the_pipeline_limit_every_answer_still_pairs_with_its_own_request() {
    let limit = 4;
    let total = 11;
    let mut requests = Decoder::new(Direction::Request);
    let mut responses = Decoder::new(Direction::Response);
    let mut correlator = Correlator::with_limit(limit);
    for n in 0..total {
        feed(&mut requests, &mut correlator, options(n));
    }
    for n in 0..total {
        feed(&mut responses, &mut correlator, answer(n));
    }
    let all = all(&mut correlator);
    assert_eq!(all.len(), total, "one exchange per request, none invented");
    for (n, x) in all.iter().enumerate() {
        let (uri, tag) = pair(x);
        assert_eq!(uri.as_deref(), Some(n.to_string().as_str()));
        if n < total - limit {
            assert!(
                x.incomplete && x.response.is_none(),
                "exchange {n} given up"
            );
            assert!(x.has_anomaly(AnomalyCode::PipelineTooDeep), "{x:?}");
        } else {
            assert!(!x.incomplete, "exchange {n} followed to its end");
            assert_eq!(
                tag.as_deref(),
                Some(n.to_string().as_str()),
                "answer of {n}"
            );
            assert!(!x.has_anomaly(AnomalyCode::ResponseUnsolicited));
        }
    }
}

#[test]
fn answers_arriving_while_requests_still_come_pair_the_same_way() {
    // Interleaved: answers start before the pipeline is full.
    let limit = 3;
    let total = 9;
    let mut requests = Decoder::new(Direction::Request);
    let mut responses = Decoder::new(Direction::Response);
    let mut correlator = Correlator::with_limit(limit);
    let mut answered = 0;
    for n in 0..total {
        feed(&mut requests, &mut correlator, options(n));
        if n % 3 == 2 {
            feed(&mut responses, &mut correlator, answer(answered));
            answered += 1;
        }
    }
    while answered < total {
        feed(&mut responses, &mut correlator, answer(answered));
        answered += 1;
    }
    let all = all(&mut correlator);
    assert_eq!(all.len(), total);
    for x in &all {
        let (uri, tag) = pair(x);
        if x.has_anomaly(AnomalyCode::PipelineTooDeep) {
            assert!(x.response.is_none() || tag == uri, "{x:?}");
        } else {
            assert_eq!(tag, uri, "a followed exchange has its own answer");
        }
    }
    assert!(all
        .iter()
        .any(|x| x.has_anomaly(AnomalyCode::PipelineTooDeep)));
}

#[test]
fn after_a_gap_no_later_exchange_of_the_connection_claims_its_pairing() {
    let mut requests = Decoder::new(Direction::Request);
    let mut responses = Decoder::new(Direction::Response);
    let mut correlator = Correlator::new();
    feed(&mut requests, &mut correlator, options(0));
    feed(&mut responses, &mut correlator, answer(0));
    // Request 1 is lost whole; its answer and request 2 are seen.
    let lost = options(1).len() as u64;
    correlator.mark_gap(Side::Client, options(0).len() as u64, lost);
    let mut events = Vec::new();
    requests.gap(lost, &mut events);
    for e in events.drain(..) {
        correlator.on_request(e, Stamp::default());
    }
    feed(&mut requests, &mut correlator, options(2));
    feed(&mut responses, &mut correlator, answer(1));
    feed(&mut responses, &mut correlator, answer(2));
    let all = all(&mut correlator);
    assert!(!all[0].incomplete, "before the gap pairing is known");
    assert_eq!(pair(&all[0]), (Some("0".into()), Some("0".into())));
    // Request 2 got answer 1 by order: it says the pairing is unknown.
    let later = &all[1];
    assert_eq!(pair(later).0.as_deref(), Some("2"));
    assert!(later.incomplete && later.pairing_uncertain);
    assert!(
        later.has_anomaly(AnomalyCode::PairingUncertain),
        "{later:?}"
    );
}

#[test]
fn a_request_open_when_client_bytes_are_lost_keeps_its_own_answer() {
    let mut requests = Decoder::new(Direction::Request);
    let mut responses = Decoder::new(Direction::Response);
    let mut correlator = Correlator::new();
    let http = "GET http://origin.example/0 HTTP/1.1\r\nHost: origin.example\r\n\r\n";
    let head = format!(
        "REQMOD icap://s/0 ICAP/1.0\r\nEncapsulated: req-hdr=0, req-body={}\r\n\r\n{http}",
        http.len()
    );
    let body = "a\r\n0123456789\r\n0\r\n\r\n";
    feed(
        &mut requests,
        &mut correlator,
        Bytes::from(format!("{head}a\r\n01234")),
    );
    // The rest of request 0's body is lost; answers come in request order,
    // so the next answer is still request 0's own.
    let lost = (body.len() - 8) as u64;
    correlator.mark_gap(Side::Client, (head.len() + 8) as u64, lost);
    let mut events = Vec::new();
    requests.gap(lost, &mut events);
    for e in events.drain(..) {
        correlator.on_request(e, Stamp::default());
    }
    feed(&mut responses, &mut correlator, answer(0));
    let all = all(&mut correlator);
    assert_eq!(all.len(), 1);
    assert!(all[0].incomplete, "bytes of it were not seen");
    assert!(!all[0].pairing_uncertain, "its answer is its own");
    assert_eq!(pair(&all[0]).1.as_deref(), Some("0"));
}

#[test]
fn server_bytes_lost_while_a_request_waits_make_its_answer_uncertain() {
    let mut requests = Decoder::new(Direction::Request);
    let mut responses = Decoder::new(Direction::Response);
    let mut correlator = Correlator::new();
    feed(&mut requests, &mut correlator, options(0));
    feed(&mut requests, &mut correlator, options(1));
    // Answer 0 may have been in the lost bytes: what comes next could be
    // answer 1.
    correlator.mark_gap(Side::Server, 0, answer(0).len() as u64);
    feed(&mut responses, &mut correlator, answer(1));
    let all = all(&mut correlator);
    assert!(all.iter().all(|x| x.pairing_uncertain), "{all:?}");
    assert!(all[0].has_anomaly(AnomalyCode::PairingUncertain));
}
