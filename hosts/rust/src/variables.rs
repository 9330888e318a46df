//! Spin variables for the guest: the `wasi:config/store@0.2.0-draft-2024-09-27` interface that
//! Spin 4 links for every component (its `factor-variables`), served from values given on the
//! command line (`--spin-variables FILE|key=value`), as `spin up --variable` gives them.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "spin-variables",
});

use wasi::config::store;

/// The variables one component sees, already mapped (`[component.NAME.variables]`).
#[derive(Default, Clone)]
pub struct Variables(BTreeMap<String, String>);

impl Variables {
    /// Adds `key=value`, or every `key=value` line of the file at that path (blank lines and
    /// `#` comments skipped). A file keeps secrets out of the process's arguments.
    pub fn add(&mut self, arg: &str) -> Result<()> {
        if let Some((key, value)) = arg.split_once('=') {
            return self.insert(key, value);
        }
        let text = std::fs::read_to_string(arg)
            .with_context(|| format!("reading the Spin variables file {arg}"))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("{arg} line {}: expected key=value", n + 1);
            };
            self.insert(key.trim(), value.trim())?;
        }
        Ok(())
    }

    fn insert(&mut self, key: &str, value: &str) -> Result<()> {
        if !is_variable_name(key) {
            bail!("Spin variable name {key:?} is not lower_snake (a-z, 0-9, _; starting with a letter)");
        }
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }
}

/// Spin's rule for variable names (`spin-expressions` `Key::new`): lower-case letters, digits
/// and single underscores, starting with a letter.
fn is_variable_name(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !key.contains("__")
        && !key.ends_with('_')
}

impl store::Host for Variables {
    /// As Spin answers: an unknown or invalid name is `none`, not an error.
    fn get(&mut self, key: String) -> Result<Option<String>, store::Error> {
        Ok(self.0.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, store::Error> {
        Ok(self.0.clone().into_iter().collect())
    }
}

/// Links `wasi:config/store` to the store's variables.
pub fn add_to_linker<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut Variables,
) -> Result<()> {
    store::add_to_linker::<T, wasmtime::component::HasSelf<Variables>>(linker, get)?;
    Ok(())
}
