//! Artifacts on an MLflow server: listing a run's or a logged model's files, and the requests
//! that read or write one file through the server's artifact proxy. Files are never fetched
//! here; the transport streams them from a download into an upload.

use super::rest::{all_pages, MlflowRest, Page};
use crate::api::CopyError;
use crate::stores::model::{ArtifactRoot, FileEntry, FileInfo, Owner};
use crate::stores::Artifacts;
use crate::transport::{Download, Method, Request, Upload};
use url::Url;

/// Most entries one artifact listing may have, and how deep it may go: a server that lists a
/// folder inside itself must not make the copier list forever.
const MAX_LISTED: usize = 1_000_000;
const MAX_DEPTH: usize = 64;

/// Where the server proxies an artifact root: `mlflow-artifacts:/<path>` (optionally with its
/// own authority) or an `http(s)://…/api/2.0/mlflow-artifacts/artifacts/<path>` URL.
/// Returns the authority override (if any) and the path under the proxy endpoint.
pub fn proxied_location(root_uri: &str) -> Option<(Option<String>, String)> {
    const ANCHOR: &str = "/api/2.0/mlflow-artifacts/artifacts/";
    if let Some(rest) = root_uri.strip_prefix("mlflow-artifacts:") {
        if let Some(after) = rest.strip_prefix("//") {
            let (authority, path) = after.split_once('/').unwrap_or((after, ""));
            let authority = (!authority.is_empty()).then(|| authority.to_string());
            return Some((authority, collapse_slashes(path)));
        }
        return Some((None, collapse_slashes(rest)));
    }
    if root_uri.starts_with("http://") || root_uri.starts_with("https://") {
        let at = root_uri.find(ANCHOR)?;
        // The URL names its server: it must be the configured one (checked by the caller).
        let url = Url::parse(root_uri).ok()?;
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str()?),
            None => url.host_str()?.to_string(),
        };
        return Some((
            Some(authority),
            collapse_slashes(&root_uri[at + ANCHOR.len()..]),
        ));
    }
    None
}

/// Whether `authority` (`host[:port]`) is the host and port of `url`.
fn same_authority(url: &Url, authority: &str) -> bool {
    match Url::parse(&format!("{}://{authority}", url.scheme())) {
        Ok(other) => {
            other.host_str() == url.host_str()
                && other.port_or_known_default() == url.port_or_known_default()
        }
        Err(_) => false,
    }
}

fn collapse_slashes(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// Appends `/`-separated path segments to a URL, percent-encoding each one (spaces, `#`, `%`,
/// non-ASCII names all survive).
pub fn push_path(url: &mut Url, path: &str) {
    let mut segments = url.path_segments_mut().expect("http URLs have a path");
    segments.pop_if_empty();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        segments.push(segment);
    }
}

/// Every file of a tree, walking it folder by folder with `list_dir` (which lists one folder,
/// `""` for the root), bounded: a server that lists a folder inside itself must not make the
/// copier list forever. `who` names the server in the error.
pub fn walk(
    who: &str,
    root: &ArtifactRoot,
    mut list_dir: impl FnMut(&str) -> Result<Vec<FileInfo>, CopyError>,
) -> Result<Vec<FileEntry>, CopyError> {
    let mut files = Vec::new();
    let mut dirs = vec![String::new()];
    let mut seen = 0usize;
    while let Some(dir) = dirs.pop() {
        let entries = list_dir(&dir)?;
        seen += entries.len();
        if seen > MAX_LISTED || dir.split('/').count() > MAX_DEPTH {
            return Err(CopyError::upstream(format!(
                "{who}: the artifact listing of {} has more than {MAX_LISTED} entries or is \
                 deeper than {MAX_DEPTH} folders (does the server list a folder inside itself?)",
                root.describe()
            )));
        }
        for info in entries {
            // Run listings give root-relative paths; some servers give names only.
            let path = if dir.is_empty() || info.path.starts_with(&format!("{dir}/")) {
                info.path.clone()
            } else {
                format!("{dir}/{}", info.path)
            };
            if info.is_dir {
                dirs.push(path);
            } else {
                files.push(FileEntry {
                    path,
                    size: info.file_size.unwrap_or(0).max(0) as u64,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

impl Artifacts for MlflowRest {
    /// Every file under the root, recursively, with sizes (0 for files the server lists without
    /// one, which it does for empty files).
    fn list(&self, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError> {
        walk(&self.base_display(), root, |dir| self.list_dir(root, dir))
    }

    fn downloads(&self, root: &ArtifactRoot, paths: &[&str]) -> Result<Vec<Download>, CopyError> {
        paths
            .iter()
            .map(|path| {
                Ok(Download::get(
                    self.authorize(self.read_request(root, path)?),
                ))
            })
            .collect()
    }

    fn uploads(&self, root: &ArtifactRoot, files: &[&FileEntry]) -> Result<Vec<Upload>, CopyError> {
        files
            .iter()
            .map(|file| {
                Ok(Upload::put(
                    self.authorize(self.write_request(root, &file.path)?),
                ))
            })
            .collect()
    }

    /// Reads a small file whole (an `MLmodel`, to rewrite its ids).
    fn read_small(&self, root: &ArtifactRoot, path: &str) -> Result<Vec<u8>, CopyError> {
        Ok(self.send(self.read_request(root, path)?, true)?.body)
    }

    /// Writes a small file whole.
    fn write_small(&self, root: &ArtifactRoot, path: &str, body: Vec<u8>) -> Result<(), CopyError> {
        let mut request = self.write_request(root, path)?;
        request.body = body;
        self.send(request, true).map(drop)
    }
}

impl MlflowRest {
    fn list_dir(&self, root: &ArtifactRoot, dir: &str) -> Result<Vec<FileInfo>, CopyError> {
        // Runs and logged models list their files at different endpoints, with different
        // names for the directory argument.
        let (path, dir_param, mut query) = match &root.owner {
            Owner::Run(run_id) => (
                "/api/2.0/mlflow/artifacts/list".to_string(),
                "path",
                vec![("run_id", run_id.as_str())],
            ),
            Owner::Model(model_id) => (
                format!("/api/2.0/mlflow/logged-models/{model_id}/artifacts/directories"),
                "artifact_directory_path",
                Vec::new(),
            ),
            Owner::Version { .. } | Owner::Trace(_) => return Err(self.no_version_files(root)),
        };
        if !dir.is_empty() {
            query.push((dir_param, dir));
        }
        all_pages(|token| {
            let mut query = query.clone();
            query.extend(token.map(|t| ("page_token", t)));
            self.get::<Page<FileInfo>>(&path, &query)
        })
    }

    /// The request that reads one file (without credentials).
    fn read_request(&self, root: &ArtifactRoot, path: &str) -> Result<Request, CopyError> {
        let url = match proxied_location(&root.uri) {
            Some((authority, root_path)) => {
                self.proxied_url(root, authority.as_deref(), &root_path, path)?
            }
            // Not proxied (e.g. the server writes straight to s3://): ask the server to read it.
            None => match &root.owner {
                Owner::Run(run_id) => {
                    let mut url = self.url("/get-artifact");
                    url.query_pairs_mut()
                        .append_pair("path", path)
                        .append_pair("run_uuid", run_id);
                    url
                }
                Owner::Model(model_id) => {
                    let mut url = self.url(&format!(
                        "/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files"
                    ));
                    url.query_pairs_mut()
                        .append_pair("artifact_file_path", path);
                    url
                }
                Owner::Version { .. } | Owner::Trace(_) => return Err(self.no_version_files(root)),
            },
        };
        Ok(Request::new(Method::Get, url))
    }

    /// This registry keeps no files of its own for versions: a version's files are where its
    /// source points.
    fn no_version_files(&self, root: &ArtifactRoot) -> CopyError {
        CopyError::upstream(format!(
            "{}: {} has no files of its own on this server (its source names them)",
            self.base_display(),
            root.describe()
        ))
    }

    /// The request that writes one file (body to be streamed in; without credentials). Only
    /// proxied roots can be written through the server.
    fn write_request(&self, root: &ArtifactRoot, path: &str) -> Result<Request, CopyError> {
        let Some((authority, root_path)) = proxied_location(&root.uri) else {
            return Err(CopyError::bad_input(format!(
                "{} server {}: {} stores artifacts at {:?}, which the server does not proxy; \
                 mlflow-copy uploads through the server (mlflow server --serve-artifacts, the default)",
                self.side().label(),
                self.base_display(),
                root.describe(),
                root.uri
            )));
        };
        let url = self.proxied_url(root, authority.as_deref(), &root_path, path)?;
        Ok(Request::new(Method::Put, url).header("content-type", "application/octet-stream"))
    }

    /// The proxy URL of a file. A root that names its own server (`mlflow-artifacts://host:port/…`)
    /// must name this one: this server's credentials go nowhere else.
    fn proxied_url(
        &self,
        root: &ArtifactRoot,
        authority: Option<&str>,
        root_path: &str,
        path: &str,
    ) -> Result<Url, CopyError> {
        let mut url = self.url("/api/2.0/mlflow-artifacts/artifacts");
        if let Some(authority) = authority.filter(|a| !same_authority(&url, a)) {
            return Err(CopyError::upstream(format!(
                "{}: {} keeps its artifacts at {:?}, on a different host ({authority}) than the \
                 configured server; refusing to send this server's credentials there",
                self.base_display(),
                root.describe(),
                root.uri
            )));
        }
        push_path(&mut url, root_path);
        push_path(&mut url, path);
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_locations() {
        assert_eq!(
            proxied_location("mlflow-artifacts:/1/abc/artifacts"),
            Some((None, "1/abc/artifacts".into()))
        );
        assert_eq!(
            proxied_location("mlflow-artifacts://other:5000/1//m/artifacts"),
            Some((Some("other:5000".into()), "1/m/artifacts".into()))
        );
        assert_eq!(
            proxied_location("http://h:5000/api/2.0/mlflow-artifacts/artifacts/3/r/artifacts"),
            Some((Some("h:5000".into()), "3/r/artifacts".into()))
        );
        assert_eq!(proxied_location("s3://bucket/1/abc/artifacts"), None);
        assert_eq!(proxied_location("http://h/other"), None);
    }

    #[test]
    fn only_the_configured_server_is_the_same_authority() {
        let url = Url::parse("http://127.0.0.1:5000/api").unwrap();
        assert!(same_authority(&url, "127.0.0.1:5000"));
        assert!(!same_authority(&url, "127.0.0.1:5001"));
        assert!(!same_authority(&url, "evil.example:5000"));
        let https = Url::parse("https://h.example/api").unwrap();
        assert!(same_authority(&https, "h.example:443"));
        assert!(same_authority(&https, "h.example"));
    }

    #[test]
    fn odd_names_are_percent_encoded_segment_by_segment() {
        let mut url = Url::parse("http://h/api/2.0/mlflow-artifacts/artifacts").unwrap();
        push_path(&mut url, "1/r/artifacts");
        push_path(&mut url, "odd names/with space & ü#1%.txt");
        assert_eq!(
            url.as_str(),
            "http://h/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/odd%20names/with%20space%20&%20%C3%BC%231%25.txt"
        );
    }
}
