//! Where the component reads its settings and secrets (`MLFLOW_COPY_API_TOKEN`,
//! `MLFLOW_DST_TRACKING_TOKEN`, `MLFLOW_COPY_ALLOWED_HOSTS`, …).
//!
//! The normal build reads the environment only. The Spin build (cargo feature `spin`) asks Spin's
//! variables first, through `wasi:config/store`, because SpinKube and other Spin platforms hand
//! secrets to a component only as variables, never as environment variables; it falls back to
//! the environment (`spin up --env`). A variable's name is the setting's name in lower case
//! (`mlflow_copy_api_token`): Spin's variable names are lower_snake.

/// The value of one setting, or `None` when it is unset.
pub fn setting(name: &str) -> Option<String> {
    #[cfg(feature = "spin")]
    if let Some(value) = spin::variable(&variable_name(name)) {
        return Some(value);
    }
    std::env::var(name).ok()
}

/// The Spin variable that carries an environment setting: `MLFLOW_COPY_API_TOKEN` →
/// `mlflow_copy_api_token`.
pub fn variable_name(setting: &str) -> String {
    setting.to_ascii_lowercase()
}

/// A variable's value, as the component treats it: Spin needs every declared variable to be
/// `required` or to have a `default` (`spin.toml` gives optional ones `default = ""`), so an
/// empty value means "not set" and the environment is asked instead.
pub fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

#[cfg(feature = "spin")]
mod spin {
    wit_bindgen::generate!({
        path: "wit",
        world: "spin-variables",
        generate_all,
    });

    /// A Spin variable's value. A key the manifest does not map for this component is `None`
    /// (Spin answers `Ok(None)`); a provider failure (Vault unreachable, say) is reported on
    /// stderr (it carries no value) and treated as unset, so the environment can still answer.
    pub fn variable(key: &str) -> Option<String> {
        use wasi::config::store::{get, Error};
        match get(key) {
            Ok(value) => super::present(value),
            Err(Error::Upstream(detail) | Error::Io(detail)) => {
                eprintln!("[mlflow-copy] warning: Spin variable {key} could not be read: {detail}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_is_found_under_its_lower_snake_variable_name() {
        assert_eq!(
            variable_name("MLFLOW_COPY_API_TOKEN"),
            "mlflow_copy_api_token"
        );
        assert_eq!(
            variable_name("MLFLOW_DST_TRACKING_TOKEN"),
            "mlflow_dst_tracking_token"
        );
    }

    #[test]
    fn an_empty_variable_is_unset() {
        assert_eq!(present(Some(String::new())), None);
        assert_eq!(present(Some("x".into())), Some("x".to_string()));
        assert_eq!(present(None), None);
    }
}
