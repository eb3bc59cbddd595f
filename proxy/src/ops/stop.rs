//! Stop conditions, so a temporary deployment ends by itself:
//! `--max-exchanges N` and `--stop-on CODE[,CODE]` (`--duration` is a timer
//! in [`crate::jobs::proxy`]). [`StopWatch`] is a record sink on the observer's
//! thread; when a condition is met it records why and cancels the proxy's
//! shutdown token, which stops accepting and drains as SIGTERM does.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::output::records::{AnomalyRecord, ConnectionRecord, ExchangeRecord};
use crate::output::writer::RecordSink;

/// When a run stops by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopConditions {
    /// After this many exchanges (every method counts).
    pub max_exchanges: Option<u64>,
    /// When an anomaly with one of these codes appears.
    pub codes: BTreeSet<String>,
}

impl StopConditions {
    /// Whether any condition is set.
    pub fn any(&self) -> bool {
        self.max_exchanges.is_some() || !self.codes.is_empty()
    }
}

/// Watches records for the stop conditions.
#[derive(Debug)]
pub struct StopWatch {
    conditions: StopConditions,
    exchanges: u64,
    reason: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
}

impl StopWatch {
    /// Cancels `stop` and writes the reason into `reason` when a condition
    /// of `conditions` is met.
    pub fn new(
        conditions: StopConditions,
        reason: Arc<Mutex<Option<String>>>,
        stop: CancellationToken,
    ) -> StopWatch {
        StopWatch {
            conditions,
            exchanges: 0,
            reason,
            stop,
        }
    }

    fn trip(&self, why: String) {
        if self.stop.is_cancelled() {
            return;
        }
        tracing::info!("stopping by itself: {why}");
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        self.stop.cancel();
    }

    fn check_anomalies(&self, anomalies: &[AnomalyRecord], conn: u64) {
        if let Some(a) = anomalies
            .iter()
            .find(|a| self.conditions.codes.contains(&a.code))
        {
            self.trip(format!(
                "--stop-on {} fired on connection {conn}: {}",
                a.code, a.detail
            ));
        }
    }
}

impl RecordSink for StopWatch {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.exchanges += 1;
        if let Some(max) = self.conditions.max_exchanges {
            if self.exchanges == max {
                self.trip(format!("--max-exchanges {max} reached"));
            }
        }
        self.check_anomalies(&record.anomalies, record.conn);
    }

    fn connection(&mut self, record: &ConnectionRecord) {
        self.check_anomalies(&record.anomalies, record.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(codes: &[&str]) -> ConnectionRecord {
        ConnectionRecord {
            schema: 1,
            ts: String::new(),
            ts_us: 0,
            ts_close: String::new(),
            ts_close_us: 0,
            conn: 7,
            client: String::new(),
            server: String::new(),
            listen: String::new(),
            upstream_local: None,
            connect_error: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
            exchanges: 0,
            close: Default::default(),
            duration_us: 0,
            unobserved_bytes: 0,
            undelivered_client_to_server: 0,
            undelivered_server_to_client: 0,
            anomalies: codes
                .iter()
                .map(|c| AnomalyRecord {
                    code: c.to_string(),
                    side: "server".into(),
                    severity: "error".into(),
                    detail: "d".into(),
                    offset: None,
                })
                .collect(),
            tls: None,
        }
    }

    #[test]
    fn stop_on_codes_trips_once_with_a_reason() {
        let token = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let mut w = StopWatch::new(
            StopConditions {
                max_exchanges: None,
                codes: ["sensor-reset".to_string()].into(),
            },
            reason.clone(),
            token.clone(),
        );
        w.connection(&connection(&["other-code"]));
        assert!(!token.is_cancelled());
        w.connection(&connection(&["sensor-reset"]));
        assert!(token.is_cancelled());
        let why = reason.lock().unwrap().clone().unwrap();
        assert!(
            why.contains("sensor-reset") && why.contains("connection 7"),
            "{why}"
        );
    }
}
