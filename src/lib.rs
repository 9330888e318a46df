//! mlflow-copy: copies MLflow runs and registered model versions between tracking servers.
//!
//! Layers, from the edges inwards:
//! - `entry`: the three ways in (WIT export, command line, HTTP function), thin shells that turn
//!   their input into an `api` request and the result into their output;
//! - `engine`: plans and executes a copy, knowing nothing of the wire;
//! - `stores`: clients of the servers' REST APIs (tracking, registry, artifacts);
//! - `transport`: HTTP with retries and streamed file transfers over WASI HTTP;
//! - `limits`: the adaptive in-flight limits both the engine and the transport keep (pure logic).

pub mod api;
pub mod credentials;
pub mod engine;
pub mod entry;
pub mod limits;
pub mod stores;
pub mod transport;
pub mod uri;
