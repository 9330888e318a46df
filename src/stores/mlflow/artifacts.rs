//! Artifacts on an MLflow server: listing a run's or a logged model's files, and the requests
//! that read or write one file through the server's artifact proxy. Files are never fetched
//! here; the transport streams them from a download into an upload.

use super::rest::{all_pages, MlflowRest, Page};
use crate::api::CopyError;
use crate::stores::model::{ArtifactRoot, FileEntry, FileInfo, Owner};
use crate::stores::scheduler::Call;
use crate::stores::Artifacts;
use crate::transport::{Download, Method, Request, Upload};
use url::Url;

/// Most entries one artifact listing may have, and how deep it may go: a server that lists a
/// folder inside itself must not make the copier list forever.
const MAX_LISTED: usize = 1_000_000;
const MAX_DEPTH: usize = 64;
/// Folders listed together (20 folders side by side take two round trips).
const FOLDERS_AT_ONCE: usize = 16;

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

/// Every file of a tree, walking it depth first a few folders at a time: `list_dirs` lists
/// several folders (`""` is the root) and answers for each in their order, so that a store can
/// send their listings together (on a 50 ms link, one folder after another costs a round trip
/// each). The deepest folders waiting are listed first, and fewer of them the deeper they are
/// (`folders_at_once`), so that a server that nests folders without end reaches the depth
/// bound after a few listings, with little held in memory. Bounded: a server that lists a
/// folder inside itself must not make the copier list forever. `who` names the server in the
/// error.
pub fn walk(
    who: &str,
    root: &ArtifactRoot,
    mut list_dirs: impl FnMut(&[String]) -> Vec<Result<Vec<FileInfo>, CopyError>>,
) -> Result<Vec<FileEntry>, CopyError> {
    let mut files = Vec::new();
    let mut waiting = vec![String::new()];
    let mut seen = 0usize;
    while !waiting.is_empty() {
        let deepest = waiting.last().map_or(0, |dir| dir.split('/').count());
        let batch = waiting.split_off(waiting.len().saturating_sub(folders_at_once(deepest)));
        let listings = list_dirs(&batch);
        debug_assert_eq!(listings.len(), batch.len(), "an answer for every folder");
        for (dir, entries) in batch.iter().zip(listings) {
            let entries = entries?;
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
                    waiting.push(path);
                } else {
                    files.push(FileEntry {
                        path,
                        size: info.file_size.unwrap_or(0).max(0) as u64,
                    });
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// How many folders `depth` levels down are listed together: `FOLDERS_AT_ONCE` near the root,
/// halved every 4 levels, one at a time from 16 levels down. Real trees are shallow (a model's
/// `code/` folder is 2 levels down); a tree that fans out 8 folders a level without end meets
/// the depth bound after 131 listings, instead of about 1,000 at 16 each.
fn folders_at_once(depth: usize) -> usize {
    (FOLDERS_AT_ONCE >> (depth / 4).min(usize::BITS as usize - 1)).max(1)
}

impl Artifacts for MlflowRest {
    /// Every file under the root, recursively, with sizes (0 for files the server lists without
    /// one, which it does for empty files).
    fn list(&self, root: &ArtifactRoot) -> Result<Vec<FileEntry>, CopyError> {
        walk(&self.base_display(), root, |dirs| {
            self.list_dirs(root, dirs)
        })
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
    /// Lists folders of a tree together (`walk` asks a few at a time): their first pages at
    /// once, then any further pages of a folder one after another (rare: a folder of more
    /// files than one page holds).
    fn list_dirs(
        &self,
        root: &ArtifactRoot,
        dirs: &[String],
    ) -> Vec<Result<Vec<FileInfo>, CopyError>> {
        let first_pages = dirs
            .iter()
            .map(|dir| match self.list_request(root, dir, None) {
                Ok(request) => self.prepare::<Page<FileInfo>>(request),
                Err(e) => Call::Done(Err(e)),
            });
        let first_pages = self.run_together(first_pages.collect(), dirs.len());
        dirs.iter()
            .zip(first_pages)
            .map(|(dir, first)| {
                let mut first = Some(first?);
                all_pages(|token| match (token, first.take()) {
                    (None, Some(page)) => Ok(page),
                    (token, _) => self.call(self.list_request(root, dir, token)?, true),
                })
            })
            .collect()
    }

    /// The request for one page of a folder's listing. Runs and logged models list their
    /// files at different endpoints, with different names for the folder argument.
    fn list_request(
        &self,
        root: &ArtifactRoot,
        dir: &str,
        token: Option<&str>,
    ) -> Result<Request, CopyError> {
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
        query.extend(token.map(|t| ("page_token", t)));
        Ok(self.get_request(&path, &query))
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

    fn entry(path: &str, is_dir: bool) -> FileInfo {
        FileInfo {
            path: path.to_string(),
            is_dir,
            file_size: (!is_dir).then_some(3),
        }
    }

    fn run_root() -> ArtifactRoot {
        ArtifactRoot {
            owner: Owner::Run("r1".into()),
            uri: "mlflow-artifacts:/1/r1/artifacts".into(),
        }
    }

    #[test]
    fn a_tree_is_listed_a_few_folders_at_a_time() {
        let mut asked: Vec<Vec<String>> = Vec::new();
        let files = walk("src", &run_root(), |dirs| {
            asked.push(dirs.to_vec());
            dirs.iter()
                .map(|dir| {
                    Ok(match dir.as_str() {
                        "" => vec![entry("a", true), entry("b", true), entry("top.txt", false)],
                        // A server that gives names only, not root-relative paths.
                        "a" => vec![entry("x.bin", false), entry("a/deeper", true)],
                        "b" => vec![entry("b/y.bin", false)],
                        "a/deeper" => vec![entry("z.bin", false)],
                        other => panic!("listed {other:?}"),
                    })
                })
                .collect()
        })
        .unwrap();
        assert_eq!(asked, [vec![""], vec!["a", "b"], vec!["a/deeper"]]);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/deeper/z.bin", "a/x.bin", "b/y.bin", "top.txt"]);
        assert!(files.iter().all(|f| f.size == 3));
    }

    #[test]
    fn many_folders_side_by_side_are_asked_a_few_at_a_time() {
        let mut batches = Vec::new();
        let files = walk("src", &run_root(), |dirs| {
            batches.push(dirs.len());
            dirs.iter()
                .map(|dir| match dir.as_str() {
                    "" => Ok((0..40).map(|i| entry(&format!("d{i}"), true)).collect()),
                    _ => Ok(vec![entry("f", false)]),
                })
                .collect()
        })
        .unwrap();
        assert_eq!(batches, [1, FOLDERS_AT_ONCE, FOLDERS_AT_ONCE, 8]);
        assert_eq!(files.len(), 40);
    }

    #[test]
    fn a_tree_that_fans_out_without_end_stops_at_the_depth_bound_after_a_few_listings() {
        let mut listings = 0;
        let endless = walk("src", &run_root(), |dirs| {
            listings += dirs.len();
            dirs.iter()
                .map(|dir| {
                    let sub = |i| entry(&format!("{dir}/d{i}"), true);
                    Ok((0..8).map(sub).chain([entry("f.txt", false)]).collect())
                })
                .collect()
        });
        assert!(endless.unwrap_err().message.contains("deeper than 64"));
        // 131 listings; at 16 folders a time whatever the depth it would be about 1,000.
        assert!(listings < 200, "{listings} listings");
    }

    #[test]
    fn a_folder_that_fails_to_list_fails_the_walk_and_a_folder_inside_itself_ends_it() {
        let failed = walk("src", &run_root(), |dirs| {
            dirs.iter()
                .map(|dir| match dir.as_str() {
                    "" => Ok(vec![entry("a", true), entry("b", true)]),
                    "b" => Err(CopyError::upstream("b is gone")),
                    _ => Ok(Vec::new()),
                })
                .collect()
        });
        assert_eq!(failed.unwrap_err().message, "b is gone");

        // Each folder lists itself again one level deeper.
        let looping = walk("src", &run_root(), |dirs| {
            dirs.iter()
                .map(|dir| Ok(vec![entry(&format!("{dir}/again"), true)]))
                .collect()
        });
        let message = looping.unwrap_err().message;
        assert!(message.contains("deeper than 64 folders"), "{message}");
        assert!(message.starts_with("src: "), "{message}");
    }
}
