//! Copying artifact trees: every file is streamed from the source store's download to the
//! destination store's upload, several at once; `MLmodel` files are the exception, rewritten to
//! name the copied ids.

use super::mlmodel::{self, IdMap};
use super::progress::Event;
use super::Copier;
use crate::api::CopyError;
use crate::stores::model::{ArtifactRoot, FileEntry};
use crate::stores::scheduler::{FileJob, PendingCalls, Transferred};
use crate::stores::Stores;
use anyhow::Context;
use std::collections::HashMap;

/// A source tree, listed before anything is written at the destination: the files under
/// `prefix` (e.g. `model/`) of the root, by their paths below the prefix.
pub struct Listed {
    pub root: ArtifactRoot,
    pub prefix: String,
    pub files: Vec<FileEntry>,
}

impl Listed {
    /// Where a listed file is at the source.
    fn src_path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

/// One tree to copy: the listed source, where it goes, and the ids to rewrite in `MLmodel`s.
pub struct TreeCopy<'a> {
    pub src: &'a Listed,
    pub dst: ArtifactRoot,
    pub ids: IdMap,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ArtifactStats {
    pub files: u64,
    pub bytes: u64,
    /// Files already at the destination with the same size (an interrupted copy's work).
    pub skipped: u64,
}

/// An `MLmodel` file larger than this is not a model descriptor; it is streamed unchanged.
const MLMODEL_MAX: u64 = 1 << 20;
/// How often (in bytes) a long transfer reports progress.
const PROGRESS_EVERY: u64 = 16 << 20;

pub fn list(c: &Copier, root: ArtifactRoot) -> anyhow::Result<Listed> {
    list_under(c, root, "")
}

/// The files below folder `dir` of a source tree (all of them for `""`).
pub fn list_under(c: &Copier, root: ArtifactRoot, dir: &str) -> anyhow::Result<Listed> {
    let prefix = match dir.trim_matches('/') {
        "" => String::new(),
        dir => format!("{dir}/"),
    };
    let files: Vec<FileEntry> = c
        .src
        .artifacts
        .list(&root)
        .with_context(|| format!("listing the artifacts of source {}", root.describe()))?
        .into_iter()
        .filter_map(|f| {
            let path = f.path.strip_prefix(&prefix)?.to_string();
            Some(FileEntry { path, size: f.size })
        })
        .collect();
    if let Some(bad) = files.iter().find(|f| !is_safe_path(&f.path)) {
        return Err(CopyError::upstream(format!(
            "source {} lists an unsafe artifact path {:?} (empty, `.` or `..` segments, an \
             absolute path, backslashes or control characters); nothing was copied",
            root.describe(),
            bad.path
        ))
        .into());
    }
    Ok(Listed {
        root,
        prefix,
        files,
    })
}

/// A relative path of plain names: what a destination can store under the same name. Anything
/// else is refused rather than renamed, so a copy never differs silently from its source.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
        && !path.chars().any(|c| c == '\\' || c.is_control())
}

/// An `MLmodel` file: copied with its ids re-pointed at the copies (`mlmodel::rewrite`).
pub fn is_mlmodel(path: &str, size: u64) -> bool {
    size <= MLMODEL_MAX && path.rsplit('/').next() == Some("MLmodel")
}

/// One file to stream: the index of its tree, and the file.
type Streamed<'a> = (usize, &'a FileEntry);

/// Copies every tree, while the scheduler also sends `calls` (the metric
/// pipeline). With `resuming`, files already present at the destination with the source's size
/// are skipped.
pub fn copy_trees(
    c: &mut Copier,
    trees: &[TreeCopy<'_>],
    resuming: bool,
    calls: &mut dyn PendingCalls,
) -> anyhow::Result<ArtifactStats> {
    let mut stats = ArtifactStats::default();
    let mut streamed = Vec::new();
    let mut rewrites = Vec::new();
    let mut total_bytes = 0;
    for (index, tree) in trees.iter().enumerate() {
        let present: HashMap<String, u64> = if resuming {
            let listed = c
                .dst
                .artifacts
                .list(&tree.dst)
                .with_context(|| format!("listing destination {}", tree.dst.describe()))?;
            listed.into_iter().map(|f| (f.path, f.size)).collect()
        } else {
            HashMap::new()
        };
        for file in &tree.src.files {
            if is_mlmodel(&file.path, file.size) {
                total_bytes += file.size;
                rewrites.push((tree, file));
                continue;
            }
            if present.get(&file.path) == Some(&file.size) {
                stats.skipped += 1;
                continue;
            }
            total_bytes += file.size;
            streamed.push((index, file));
        }
    }
    let files_total = (streamed.len() + rewrites.len()) as u64;
    c.phase(format!(
        "artifacts: {files_total} files to copy, {} already present",
        stats.skipped
    ));
    let totals = (files_total, total_bytes);
    stream(c, trees, &streamed, totals, calls, &mut stats)?;
    for (tree, file) in rewrites {
        let label = label(tree, file);
        let original = c
            .src
            .artifacts
            .read_small(&tree.src.root, &tree.src.src_path(&file.path))
            .with_context(|| format!("reading {label}"))?;
        let rewritten = mlmodel::rewrite(&original, &tree.ids).unwrap_or_else(|| original.clone());
        c.dst
            .artifacts
            .write_small(&tree.dst, &file.path, rewritten)
            .with_context(|| format!("writing {label}"))?;
        stats.files += 1;
        stats.bytes += original.len() as u64;
        c.progress.event(Event::Artifacts {
            files_done: stats.files,
            files_total,
            bytes_done: stats.bytes,
            bytes_total: total_bytes,
        });
    }
    Ok(stats)
}

fn label(tree: &TreeCopy, file: &FileEntry) -> String {
    format!("{} artifact {:?}", tree.src.root.describe(), file.path)
}

/// The jobs for these files: each store says how its side travels, in one call per tree, so
/// that a store can sign a batch of URLs at once.
fn open(
    (src, dst): (&Stores, &Stores),
    trees: &[TreeCopy],
    streamed: &[Streamed],
    ids: &[usize],
) -> Result<Vec<FileJob>, CopyError> {
    let mut jobs: Vec<Option<FileJob>> = ids.iter().map(|_| None).collect();
    for (index, tree) in trees.iter().enumerate() {
        let slots: Vec<usize> = (0..ids.len())
            .filter(|&slot| streamed[ids[slot]].0 == index)
            .collect();
        if slots.is_empty() {
            continue;
        }
        let files: Vec<&FileEntry> = slots.iter().map(|&slot| streamed[ids[slot]].1).collect();
        let src_paths: Vec<String> = files.iter().map(|f| tree.src.src_path(&f.path)).collect();
        let paths: Vec<&str> = src_paths.iter().map(String::as_str).collect();
        let downloads = src.artifacts.downloads(&tree.src.root, &paths)?;
        let uploads = dst.artifacts.uploads(&tree.dst, &files)?;
        for (((&slot, file), download), upload) in
            slots.iter().zip(files).zip(downloads).zip(uploads)
        {
            jobs[slot] = Some(FileJob {
                label: label(tree, file),
                size: file.size,
                download,
                upload,
            });
        }
    }
    Ok(jobs
        .into_iter()
        .map(|job| job.expect("a store answers for every file"))
        .collect())
}

fn stream(
    c: &mut Copier,
    trees: &[TreeCopy],
    streamed: &[Streamed],
    (files_total, bytes_total): (u64, u64),
    calls: &mut dyn PendingCalls,
    stats: &mut ArtifactStats,
) -> anyhow::Result<()> {
    let Copier {
        src,
        dst,
        scheduler,
        progress,
        concurrency,
        ..
    } = c;
    let (mut files_done, mut bytes_done, mut reported) = (0u64, 0u64, 0u64);
    let written = scheduler.copy_files(
        streamed.len(),
        *concurrency,
        calls,
        &mut |ids| open((src, dst), trees, streamed, ids),
        &mut |p| {
            match p {
                Transferred::Bytes(n) => {
                    bytes_done += n;
                    if bytes_done < reported + PROGRESS_EVERY {
                        return;
                    }
                }
                Transferred::File { .. } => files_done += 1,
            }
            reported = bytes_done;
            progress.event(Event::Artifacts {
                files_done,
                files_total,
                bytes_done: bytes_done.min(bytes_total),
                bytes_total,
            });
        },
    )?;
    if let Some(limit) = scheduler.files_limit().filter(|_| !streamed.is_empty()) {
        progress.event(Event::Phase {
            phase: format!("files: {limit}"),
        });
    }
    stats.files += streamed.len() as u64;
    stats.bytes += written;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_relative_paths_are_safe() {
        for ok in [
            "a.txt",
            "model/MLmodel",
            "odd names/ü #1%.txt",
            ".hidden",
            "a..b",
        ] {
            assert!(super::is_safe_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "../x",
            "a/../../x",
            "./a",
            "a\\b",
            "a\u{1}b",
            "a\nb",
        ] {
            assert!(!super::is_safe_path(bad), "{bad:?}");
        }
    }
}
