//! The store of an open-source MLflow server: its REST API serves all three interfaces
//! (tracking, registry with basic-auth permissions, artifacts through its proxy).

mod artifacts;
mod permissions;
mod registry;
mod rest;
mod tracking;

pub use artifacts::{push_path, walk};
pub use registry::RegistryApi;
pub use rest::{all_pages, MlflowRest, Page};
