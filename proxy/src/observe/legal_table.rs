//! Legal behaviour raises no false alarm: tap scripts of what real clients
//! and sensors do within the protocol (an X-Include the client cannot
//! fully honour, an idle keep-alive connection the client closes, an
//! ISTag that only changed its quoting), played to an [`Observer`] like
//! the rows of `rule_table.rs`, with the codes that must stay silent.

use super::rule_table::{
    client_ends, get, no_content, options_answer, options_request, play, req, reqmod, resp,
    wait_ms, Step,
};
use super::ObserverMode;
use crate::output::writer::MemorySink;
use crate::tap::CloseKind::Fin;

/// Every code on any exchange or connection record.
fn codes(out: &MemorySink) -> Vec<String> {
    out.exchanges
        .iter()
        .flat_map(|x| x.anomalies.iter().map(|a| a.code.clone()))
        .chain(
            out.connections
                .iter()
                .flat_map(|c| c.anomalies.iter().map(|a| a.code.clone())),
        )
        .collect()
}

fn count(out: &MemorySink, code: &str) -> usize {
    codes(out).iter().filter(|c| *c == code).count()
}

/// An OPTIONS answer asking for `x_include`, then `n` REQMODs carrying
/// `identity` header lines, each answered 204.
fn x_include_script(x_include: &str, identity: &str, n: usize) -> Vec<Step> {
    let mut script = vec![
        req(options_request()),
        resp(options_answer(&format!("X-Include: {x_include}\r\n"))),
    ];
    for _ in 0..n {
        script.push(req(reqmod(identity, "GET", "http://origin.example/")));
        script.push(resp(no_content("t1")));
    }
    script
}

/// Squid sends X-Client-IP but knows no server IP before it connects and no
/// user when none logged in: X-Include asks for them "if available".
#[test]
fn x_include_of_headers_the_client_may_not_have_is_not_missing() {
    let out = play(
        ObserverMode::Live,
        x_include_script(
            "X-Client-IP, X-Server-IP, X-Authenticated-User, X-Authenticated-Groups, X-Client-Username",
            "X-Client-IP: 192.0.2.1\r\n",
            3,
        ),
    );
    assert_eq!(out.exchanges.len(), 4);
    assert_eq!(
        count(&out, "identity-header-missing"),
        0,
        "{:?}",
        codes(&out)
    );
}

/// A client IP the client always has but did not send is a setting to fix:
/// said once for the service, not on every exchange.
#[test]
fn a_missing_client_ip_is_said_once_per_service() {
    let out = play(
        ObserverMode::Live,
        x_include_script("X-Client-IP, X-Server-IP", "", 3),
    );
    assert_eq!(
        count(&out, "identity-header-missing"),
        1,
        "{:?}",
        codes(&out)
    );
    let flagged = out
        .exchanges
        .iter()
        .find(|x| {
            x.anomalies
                .iter()
                .any(|a| a.code == "identity-header-missing")
        })
        .unwrap();
    let detail = &flagged
        .anomalies
        .iter()
        .find(|a| a.code == "identity-header-missing")
        .unwrap()
        .detail;
    assert!(detail.contains("X-Client-IP"), "{detail}");
    assert!(
        !detail.contains("lacks X-Client-IP, X-Server-IP"),
        "{detail}"
    );
}

/// A keep-alive connection left idle after its last answer and closed by
/// the client (Squid does so after its idle timeout) is normal.
#[test]
fn an_idle_keep_alive_connection_closed_by_the_client_is_normal() {
    for script in [
        vec![
            req(get()),
            resp(no_content("t1")),
            wait_ms(400),
            client_ends(Fin),
        ],
        vec![
            req(options_request()),
            resp(options_answer("")),
            req(get()),
            resp(no_content("t1")),
            wait_ms(400),
            client_ends(Fin),
        ],
        // Two requests at once take two connections; the client uses one
        // of them again (a pool) while the other waits for its idle timeout.
        vec![
            req(get()),
            req(get()).on(2),
            resp(no_content("t1")),
            resp(no_content("t1")).on(2),
            wait_ms(100),
            req(get()).on(2),
            resp(no_content("t1")).on(2),
            wait_ms(400),
            client_ends(Fin),
        ],
        // A new connection for another service of the same sensor: clients
        // pool connections per service (Squid per ICAP URL).
        vec![
            req(get()),
            resp(no_content("t1")),
            req(get().replace("1344/av ", "1344/other ")).on(2),
            resp(no_content("t1")).on(2),
            wait_ms(400),
            client_ends(Fin),
        ],
    ] {
        let out = play(ObserverMode::Live, script);
        assert_eq!(count(&out, "client-waited-for-eof"), 0, "{:?}", codes(&out));
    }
}

/// Only the quoting changed: the unquoted tag is `istag-invalid`, not a new
/// service state.
#[test]
fn an_istag_that_only_lost_its_quotes_did_not_change() {
    let out = play(
        ObserverMode::Live,
        vec![
            req(options_request()),
            resp(
                "ICAP/1.0 200 OK\r\nMethods: REQMOD\r\nISTag: \"1796196947\"\r\nEncapsulated: null-body=0\r\n\r\n",
            ),
            req(get()),
            resp("ICAP/1.0 204 No Content\r\nISTag: 1796196947\r\n\r\n"),
        ],
    );
    assert_eq!(count(&out, "istag-changed"), 0, "{:?}", codes(&out));
    assert_eq!(count(&out, "istag-invalid"), 1, "{:?}", codes(&out));
}
