//! `Transport::digest_files`: files read through and hashed (SHA-256) as their chunks come,
//! never held whole and never written anywhere: how verify compares a copy's content with its
//! source's. Reading is always safe to repeat, so each file is retried on its own, reopened
//! first (a signed URL may have expired).

use super::assessment::stream_error;
use super::stream_files::OPEN_AHEAD_PER_SLOT;
use super::{retry, sleep, Download, Request, StreamFailure, Transport};
use crate::api::CopyError;
use std::time::Instant;

/// One file to read through: how to read it, and its size as listed (a source that sends
/// another length fails the file, as it fails a copy).
#[derive(Debug, Clone)]
pub struct DigestJob {
    /// What the file is, for messages (`the copy's run r artifact a.txt`).
    pub label: String,
    pub size: u64,
    pub download: Download,
}

/// What a file read through came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest {
            bytes: bytes.len() as u64,
            sha256: sha2::Sha256::digest(bytes).into(),
        }
    }

    pub fn hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Turns file indices into jobs; called again for a file that is retried.
pub type OpenDigests<'a> = &'a mut dyn FnMut(&[usize]) -> Result<Vec<DigestJob>, CopyError>;

impl Transport {
    /// The digests of files `0..count`, in order, at most `concurrency` read at once. A file
    /// that fails transiently (or whose signed URL is refused, once) is reopened and read
    /// again within the retry policy's budget; the first that cannot be read ends the call.
    pub fn digest_files(
        &self,
        count: usize,
        concurrency: usize,
        open: OpenDigests,
    ) -> Result<Vec<Digest>, CopyError> {
        let concurrency = concurrency.max(1);
        let mut digests: Vec<Option<Digest>> = vec![None; count];
        let mut pending: Vec<usize> = (0..count).collect();
        let started = Instant::now();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            let mut again: Vec<(usize, String, StreamFailure)> = Vec::new();
            for batch in pending.chunks(concurrency * OPEN_AHEAD_PER_SLOT) {
                let jobs = open(batch)?;
                let requests = ready_requests(&jobs)?;
                let results = self.http.digest(&requests, concurrency);
                for ((&index, job), result) in batch.iter().zip(&jobs).zip(results) {
                    match result {
                        Ok(digest) => digests[index] = Some(digest),
                        Err(failure) if worth_retrying(job, &failure, attempts) => {
                            again.push((index, job.label.clone(), failure))
                        }
                        Err(failure) => return Err(reading_error(&job.label, &failure, attempts)),
                    }
                }
            }
            let Some((_, label, failure)) = again.first() else {
                break;
            };
            let asked = again.iter().filter_map(|(_, _, f)| f.retry_after).max();
            let wait = self.policy.delay(attempts - 1, asked, retry::jitter());
            if !self.policy.may_retry(attempts, started.elapsed(), wait) {
                return Err(reading_error(label, failure, attempts));
            }
            sleep(wait);
            pending = again.into_iter().map(|(index, _, _)| index).collect();
        }
        Ok(digests
            .into_iter()
            .map(|d| d.expect("every file read"))
            .collect())
    }
}

/// The jobs' downloads with their credentials, and sizes.
fn ready_requests(jobs: &[DigestJob]) -> Result<Vec<(Request, u64)>, CopyError> {
    jobs.iter()
        .map(|job| {
            let request = job
                .download
                .request
                .ready_to_send()
                .map_err(|e| CopyError {
                    message: format!("reading {}: {}", job.label, e.message),
                    ..CopyError::from(e)
                })?;
            Ok((request, job.size))
        })
        .collect()
}

/// Transient failures are retried; so is a signed URL refused on its first use (it expired:
/// the file is opened again for a fresh one).
fn worth_retrying(job: &DigestJob, failure: &StreamFailure, attempts: u32) -> bool {
    failure.retryable
        || (job.download.signed && matches!(failure.status, Some(401 | 403)) && attempts == 1)
}

fn reading_error(label: &str, failure: &StreamFailure, attempts: u32) -> CopyError {
    stream_error(&format!("reading {label}"), failure, attempts).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::testing::{get, transport, Scripted};
    use std::cell::RefCell;

    fn scripted(rounds: Vec<Vec<Result<Digest, StreamFailure>>>) -> Transport {
        let (mut t, sent) = transport(vec![]);
        t.http = Box::new(Scripted {
            answers: RefCell::default(),
            sent,
            stream_rounds: RefCell::default(),
            digest_rounds: RefCell::new(rounds.into()),
        });
        t
    }

    fn failure(retryable: bool, status: u16) -> StreamFailure {
        StreamFailure {
            message: format!("HTTP {status}"),
            retryable,
            retry_after: None,
            status: Some(status),
            end: None,
        }
    }

    fn jobs(indices: &[usize], signed: bool) -> Vec<DigestJob> {
        let download = if signed {
            Download::signed(get())
        } else {
            Download::get(get())
        };
        indices
            .iter()
            .map(|i| DigestJob {
                label: format!("file {i}"),
                size: 3,
                download: download.clone(),
            })
            .collect()
    }

    #[test]
    fn only_the_failed_files_are_reopened_and_read_again() {
        let t = scripted(vec![
            vec![
                Ok(Digest::of(b"abc")),
                Err(failure(true, 503)),
                Ok(Digest::of(b"xyz")),
            ],
            vec![Ok(Digest::of(b"def"))],
        ]);
        let mut opened = Vec::new();
        let digests = t
            .digest_files(3, 2, &mut |indices| {
                opened.push(indices.to_vec());
                Ok(jobs(indices, false))
            })
            .unwrap();
        assert_eq!(opened, vec![vec![0, 1, 2], vec![1]]);
        assert_eq!(digests[1], Digest::of(b"def"));
    }

    #[test]
    fn a_refused_file_ends_the_call_naming_it_and_a_refused_signed_url_is_renewed_once() {
        let t = scripted(vec![vec![Err(failure(false, 404))]]);
        let err = t
            .digest_files(1, 1, &mut |i| Ok(jobs(i, false)))
            .unwrap_err();
        assert!(
            err.message
                .contains("reading file 0: HTTP 404 (after 1 attempt)"),
            "{}",
            err.message
        );
        let t = scripted(vec![
            vec![Err(failure(false, 403))],
            vec![Err(failure(false, 403))],
        ]);
        let err = t
            .digest_files(1, 1, &mut |i| Ok(jobs(i, true)))
            .unwrap_err();
        assert!(
            err.message.contains("(after 2 attempts)"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_digest_is_the_sha256_of_the_bytes() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            Digest::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::of(b"abc").bytes, 3);
    }
}
