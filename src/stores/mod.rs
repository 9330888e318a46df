//! Store clients: one per kind of server the copier reads from or writes to.

pub mod mlflow;
