//! The store of an open-source MLflow server: its REST API serves all three interfaces
//! (tracking, registry with basic-auth permissions, artifacts through its proxy).

mod artifacts;
mod flavor;
mod permissions;
mod registry;
mod rest;
pub mod span_json;
mod traces;
mod tracking;

pub use artifacts::{push_path, walk};
pub use flavor::Flavor;
pub use registry::RegistryApi;
pub use rest::{all_pages, MlflowRest, Page};
pub use traces::{experiment_location, TraceStorage};
