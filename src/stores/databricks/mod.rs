//! Databricks workspaces: the MLflow tracking API and workspace registry behind unified auth
//! (personal access tokens, OAuth machine-to-machine), with artifacts behind the Files API or
//! signed cloud-storage URLs.

pub mod config;
