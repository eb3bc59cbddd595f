//! Helpers shared by the toolkit's integration tests: a mock sensor on a
//! free loopback port with the example or a given scenario, and request
//! specs and answer accessors.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use icap_codec::{AnomalyCode, EntityKind};
use icaptap::toolkit::client::{send_once, Answer, IcapTarget, RequestSpec};
use icaptap::toolkit::scenario::Scenario;
use icaptap::toolkit::sensor::{Sensor, SensorHandle};

pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/toolkit-scenario.toml");
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub async fn sensor_with(scenario: Scenario) -> SensorHandle {
    Sensor::bind("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
        .spawn()
}

pub async fn example_sensor() -> SensorHandle {
    sensor_with(Scenario::load(Path::new(EXAMPLE)).unwrap()).await
}

pub fn spec(sensor: &SensorHandle, service: &str, url: &str, body: &[u8]) -> RequestSpec {
    let target = IcapTarget::parse(&format!("icap://{}{service}", sensor.addr())).unwrap();
    let mut spec = RequestSpec::respmod(target, Bytes::copy_from_slice(body));
    spec.url = url.to_owned();
    spec
}

pub async fn respmod(sensor: &SensorHandle, url: &str, body: &[u8]) -> Answer {
    send_once(&spec(sensor, "/av/respmod", url, body), TIMEOUT)
        .await
        .unwrap()
}

pub fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.head.headers.get_str(name)
}

pub fn has_anomaly(answer: &Answer, code: AnomalyCode) -> bool {
    answer.anomalies.iter().any(|a| a.code == code)
}

pub fn http_status(answer: &Answer) -> Option<u16> {
    answer
        .http
        .iter()
        .find(|h| h.entity == EntityKind::ResHdr)
        .and_then(|h| h.status)
}
