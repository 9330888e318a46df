//! An artifact tree (a run's, a logged model's) compared with its copy: the same paths, sizes
//! and contents. Contents are compared by SHA-256, computed while both sides' downloads stream
//! (several files in flight, nothing held whole, nothing written). `MLmodel` files are copied
//! with their ids re-pointed at the copies, so the copy's must equal the source's re-pointed.

use super::artifacts;
use super::mlmodel::{self, IdMap};
use super::verify::Differences;
use super::Copier;
use crate::api::CopyError;
use crate::stores::model::ArtifactRoot;
use crate::stores::scheduler::{Digest, DigestJob};
use crate::stores::Stores;
use anyhow::Context;
use std::collections::BTreeMap;

/// Path -> size.
type Files = BTreeMap<String, u64>;

/// A source tree and its copy.
pub struct Trees {
    pub src: ArtifactRoot,
    pub dst: ArtifactRoot,
    /// The ids the copy re-pointed in its `MLmodel` files (source -> copy).
    pub ids: IdMap,
    /// Put before each difference (`logged model m-1 `; empty for the run's own tree).
    pub prefix: String,
}

/// What the source tree holds: files and bytes.
pub struct Compared {
    pub files: u64,
    pub bytes: u64,
}

pub fn compare_tree(c: &Copier, trees: &Trees, diff: &mut Differences) -> anyhow::Result<Compared> {
    let (src_files, dst_files) = (list(&c.src, &trees.src)?, list(&c.dst, &trees.dst)?);
    // (MLmodel files, the others)
    let split = |files: &Files| -> (Files, Files) {
        files
            .iter()
            .map(|(path, size)| (path.clone(), *size))
            .partition(|(path, size)| artifacts::is_mlmodel(path, *size))
    };
    let (src_mlmodels, src_plain) = split(&src_files);
    let (dst_mlmodels, dst_plain) = split(&dst_files);
    let prefix = &trees.prefix;
    diff.maps(&format!("{prefix}artifact (size)"), &src_plain, &dst_plain);
    let names = |files: &Files| -> BTreeMap<String, ()> {
        files.keys().map(|path| (path.clone(), ())).collect()
    };
    diff.maps(
        &format!("{prefix}artifact"),
        &names(&src_mlmodels),
        &names(&dst_mlmodels),
    );
    compare_contents(c, trees, &src_plain, &dst_plain, diff)?;
    for path in src_mlmodels
        .keys()
        .filter(|p| dst_mlmodels.contains_key(*p))
    {
        compare_mlmodel(c, trees, path, diff)?;
    }
    Ok(Compared {
        files: src_files.len() as u64,
        bytes: src_files.values().sum(),
    })
}

fn list(stores: &Stores, root: &ArtifactRoot) -> anyhow::Result<Files> {
    let listed = stores
        .artifacts
        .list(root)
        .with_context(|| format!("listing the artifacts of {}", root.describe()))?;
    Ok(listed.into_iter().map(|f| (f.path, f.size)).collect())
}

/// An `MLmodel`: the copy's is the source's with its ids re-pointed.
fn compare_mlmodel(
    c: &Copier,
    trees: &Trees,
    path: &str,
    diff: &mut Differences,
) -> anyhow::Result<()> {
    let read = |stores: &Stores, root: &ArtifactRoot| {
        stores
            .artifacts
            .read_small(root, path)
            .with_context(|| format!("reading {} artifact {path}", root.describe()))
    };
    let (original, copied) = (read(&c.src, &trees.src)?, read(&c.dst, &trees.dst)?);
    let expected = mlmodel::rewrite(&original, &trees.ids).unwrap_or(original);
    if expected != copied {
        diff.add(format!(
            "{}artifact {path:?}: content differs from the source's with its ids re-pointed \
             (sha256 {} expected, {} in the copy)",
            trees.prefix,
            Digest::of(&expected).hex(),
            Digest::of(&copied).hex()
        ));
    }
    Ok(())
}

/// The content of every file both trees have with the same size, both sides' files in flight
/// together.
fn compare_contents(
    c: &Copier,
    trees: &Trees,
    src_files: &Files,
    dst_files: &Files,
    diff: &mut Differences,
) -> anyhow::Result<()> {
    let same_size: Vec<(&str, u64)> = src_files
        .iter()
        .filter(|(path, size)| dst_files.get(*path) == Some(size))
        .map(|(path, size)| (path.as_str(), *size))
        .collect();
    let n = same_size.len();
    let sides = [(&c.src, &trees.src), (&c.dst, &trees.dst)];
    // Files 0..n are the source's, n..2n the copy's.
    let mut open =
        |indices: &[usize]| -> Result<Vec<DigestJob>, CopyError> {
            let mut jobs = Vec::with_capacity(indices.len());
            for (side, (stores, root)) in sides.iter().enumerate() {
                // A side's files are opened together (a store may sign their URLs in one call).
                let files: Vec<(&str, u64)> = indices
                    .iter()
                    .filter(|&&i| i / n == side)
                    .map(|&i| same_size[i % n])
                    .collect();
                let paths: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
                let downloads = stores.artifacts.downloads(root, &paths)?;
                jobs.extend(files.iter().zip(downloads).map(|((path, size), download)| {
                    DigestJob {
                        label: format!("{} artifact {path}", root.describe()),
                        size: *size,
                        download,
                    }
                }));
            }
            Ok(jobs)
        };
    let digests = c
        .scheduler
        .digest_files(2 * n, c.concurrency, &mut open)
        .context("comparing the artifacts' contents")?;
    for (i, (path, _)) in same_size.iter().enumerate() {
        let (from, to) = (&digests[i], &digests[n + i]);
        if from != to {
            diff.add(format!(
                "{}artifact {path:?}: content differs (sha256 {} in the source, {} in the copy)",
                trees.prefix,
                from.hex(),
                to.hex()
            ));
        }
    }
    Ok(())
}
