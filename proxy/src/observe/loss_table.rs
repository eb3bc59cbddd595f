//! Records stay true when the observer's queue drops bytes: tap scripts
//! where the live proxy says at once that bytes were lost (a `Lost` tap),
//! played to an [`Observer`] like the rows of `rule_table.rs`. What was
//! lost is never guessed: an answer whose request was dropped is
//! `unobserved`, not a `malformed` answer nobody asked for, and an answer
//! dropped is `unobserved`, not a `missing` verdict blamed on the sensor.
//!
//! [`Observer`]: super::Observer

use super::rule_table::{client_ends, get, lost, no_content, play, req, resp, sensor_ends};
use super::ObserverMode;
use crate::output::records::ExchangeRecord;
use crate::tap::CloseKind::Fin;
use crate::tap::Direction;

fn summary(x: &ExchangeRecord) -> (String, Vec<String>) {
    (
        x.verdict.clone(),
        x.anomalies.iter().map(|a| a.code.clone()).collect(),
    )
}

#[test]
fn an_answer_whose_request_was_dropped_is_unobserved_not_unsolicited() {
    let out = play(
        ObserverMode::Live,
        vec![
            req(get()),
            resp(no_content("t1")),
            // The second request is dropped whole; its answer is seen
            // before anything else of the client's stream comes.
            lost(Direction::Request, get().len()),
            resp(no_content("t1")),
            req(get()),
            resp(no_content("t1")),
            client_ends(Fin),
            sensor_ends(Fin),
        ],
    );
    let got: Vec<(String, Vec<String>)> = out.exchanges.iter().map(summary).collect();
    assert_eq!(got.len(), 3, "one record per answer: {got:?}");
    assert_eq!(got[0], ("clean".to_string(), vec![]));
    for (verdict, codes) in &got[1..] {
        assert_eq!(verdict, "unobserved", "{got:?}");
        assert!(codes.contains(&"pairing-uncertain".to_string()), "{got:?}");
        assert!(
            !codes.contains(&"response-unsolicited".to_string()),
            "{got:?}"
        );
    }
    assert!(out.exchanges[1].request_body_sha256.is_none());
    assert!(!out.exchanges[1].decode_complete);
    // The first exchange was seen whole: the loss after it does not touch it.
    assert!(out.exchanges[0].decode_complete);
}

#[test]
fn an_answer_dropped_before_the_close_is_unobserved_not_missing() {
    let answer = no_content("t1");
    let out = play(
        ObserverMode::Live,
        vec![
            req(get()),
            lost(Direction::Response, answer.len()),
            client_ends(Fin),
            sensor_ends(Fin),
        ],
    );
    let got: Vec<(String, Vec<String>)> = out.exchanges.iter().map(summary).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "unobserved", "{got:?}");
    for blamed in [
        "server-closed-before-response",
        "client-closed-before-response",
        "verdict-timeout",
    ] {
        assert!(!got[0].1.contains(&blamed.to_string()), "{got:?}");
    }
}
