//! Copying artifact trees: every file is streamed from the source server to the destination,
//! several at once; `MLmodel` files are the exception, rewritten to name the copied ids.

use super::mlmodel::{self, IdMap};
use super::progress::Event;
use super::Copier;
use crate::stores::mlflow::{ArtifactRoot, FileEntry};
use crate::transport::{StreamJob, Transferred};
use anyhow::Context;
use std::collections::HashMap;

/// A source tree, listed before anything is written at the destination.
pub struct Listed {
    pub root: ArtifactRoot,
    pub files: Vec<FileEntry>,
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
    let files = c
        .src
        .list_files(&root)
        .with_context(|| format!("listing the artifacts of source {}", root.describe()))?;
    Ok(Listed { root, files })
}

fn is_mlmodel(file: &FileEntry) -> bool {
    file.size <= MLMODEL_MAX && file.path.rsplit('/').next() == Some("MLmodel")
}

/// Copies every tree. With `resuming`, files already present at the destination with the
/// source's size are skipped.
pub fn copy_trees(
    c: &mut Copier,
    trees: &[TreeCopy<'_>],
    resuming: bool,
) -> anyhow::Result<ArtifactStats> {
    let mut stats = ArtifactStats::default();
    let mut jobs = Vec::new();
    let mut rewrites = Vec::new();
    let mut total_bytes = 0;
    for tree in trees {
        let present: HashMap<String, u64> = if resuming {
            let listed = c
                .dst
                .list_files(&tree.dst)
                .with_context(|| format!("listing destination {}", tree.dst.describe()))?;
            listed.into_iter().map(|f| (f.path, f.size)).collect()
        } else {
            HashMap::new()
        };
        for file in &tree.src.files {
            if is_mlmodel(file) {
                total_bytes += file.size;
                rewrites.push((tree, file));
                continue;
            }
            if present.get(&file.path) == Some(&file.size) {
                stats.skipped += 1;
                continue;
            }
            total_bytes += file.size;
            jobs.push(StreamJob {
                label: format!("{} artifact {:?}", tree.src.root.describe(), file.path),
                get: c.src.read_request(&tree.src.root, &file.path),
                put: c.dst.write_request(&tree.dst, &file.path)?,
            });
        }
    }
    let files_total = (jobs.len() + rewrites.len()) as u64;
    c.phase(format!(
        "artifacts: {files_total} files to copy, {} already present",
        stats.skipped
    ));
    stream(c, &jobs, files_total, total_bytes, &mut stats)?;
    for (tree, file) in rewrites {
        let label = format!("{} artifact {:?}", tree.src.root.describe(), file.path);
        let original = c
            .src
            .read_small(&tree.src.root, &file.path)
            .with_context(|| format!("reading {label}"))?;
        let rewritten = mlmodel::rewrite(&original, &tree.ids).unwrap_or_else(|| original.clone());
        c.dst
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

fn stream(
    c: &mut Copier,
    jobs: &[StreamJob],
    files_total: u64,
    bytes_total: u64,
    stats: &mut ArtifactStats,
) -> anyhow::Result<()> {
    let transport = c.transport.clone();
    let progress = &mut *c.progress;
    let (mut files_done, mut bytes_done, mut reported) = (0u64, 0u64, 0u64);
    let written = transport.stream_all(jobs, c.concurrency, &mut |p| {
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
    })?;
    stats.files += jobs.len() as u64;
    stats.bytes += written;
    Ok(())
}
