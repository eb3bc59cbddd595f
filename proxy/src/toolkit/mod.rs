//! The regression toolkit: a mock ICAP sensor that misbehaves on purpose
//! (`icaptap sensor`), an ICAP client and load generator (`icaptap client`),
//! with the scenario format, request building and built-in samples they
//! share. RFC 3507 throughout; each module names its sections.

pub mod check;
pub mod client;
pub mod demo;
pub mod replay;
pub mod sample;
pub mod scenario;
pub mod sensor;
pub mod wire;

pub use client::{client_main, ClientArgs};
pub use sensor::{sensor_main, Sensor, SensorArgs, SensorHandle};
