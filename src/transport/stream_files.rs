//! `Transport::stream_files`: files streamed in rounds, a few opened ahead of the transfer,
//! each retried on its own budget of attempts and time, reopened for fresh signed URLs or
//! credentials, moved to another route when one is refused, and written in parts resumed where
//! they stopped. What it keeps of each file between attempts is `FileState`.

use super::assessment::stream_error;
use super::calls::Retrying;
use super::files::UploadKind;
use super::multipart::Parted;
use super::retry;
use super::{
    credentials_refused, sleep, Attempts, Calls, Credential, End, Fallback, FileJob, OpenFiles,
    Part, Request, StreamEvent, StreamFailure, StreamJob, Transferred, Transport,
};
use crate::api::CopyError;
use crate::limits::AdaptiveLimit;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How many files are opened (their requests authorised or signed) at a time, per slot in
/// flight: enough to keep every slot busy, few enough that signed URLs are fresh when used.
pub(super) const OPEN_AHEAD_PER_SLOT: usize = 4;

/// Files in flight at the start, before the limit has learned anything (the old fixed
/// `--concurrency` default; `--concurrency` is now the upper bound).
pub const FILES_START: usize = 8;
/// Files up to this size take the time of their round trips, not of their bytes: their
/// transfer time is a latency sample for the limit. (A larger file's time says how big it is.)
const LATENCY_SAMPLE_MAX_SIZE: u64 = 1 << 20;

impl Transport {
    /// Streams files `0..count` while sending the requests of `calls` (see `Calls`). `open`
    /// turns file indices into jobs; it is called a few files ahead of the transfer, and again
    /// for a file that is retried, so that a store can sign URLs in batches and hand out fresh
    /// ones. Files that fail transiently are retried, each with its own budget of attempts and
    /// time (a long transfer never uses up another file's). A file written in parts resumes at
    /// its first part not yet accepted (a retry keeps the upload begun first, not the one a
    /// reopened job brings), gets a fresh budget whenever a part was accepted since its last
    /// failure, is committed after its last part, and is aborted when the copy fails. Returns
    /// the bytes written, or the first permanent failure of a file, once `calls` is done too
    /// (its failures are its own to report).
    ///
    /// Files in flight: an `AdaptiveLimit` of at most `concurrency`, kept by the transport from
    /// one call to the next (`files_limit`), fed each file's transfer time and the 429/503
    /// answers. Each slot holds at most one chunk (`wasi_http::CHUNK`, 1 MiB) of a file.
    pub fn stream_files(
        &self,
        count: usize,
        concurrency: usize,
        calls: &mut dyn Calls,
        open: OpenFiles,
        on_progress: &mut dyn FnMut(Transferred),
    ) -> Result<u64, CopyError> {
        let mut files: Vec<FileState> = (0..count).map(|_| FileState::default()).collect();
        if count > 0 {
            let mut limit = self.files.borrow_mut();
            limit
                .get_or_insert_with(|| AdaptiveLimit::new(FILES_START, concurrency))
                .set_max(concurrency);
        }
        let mut calls = Retrying::new(calls, &self.policy);
        let result = self.stream_rounds(&mut files, &mut calls, open, on_progress);
        if result.is_err() {
            for parted in files.iter_mut().filter_map(|f| f.parted.as_mut()) {
                parted.abort();
            }
        }
        result
    }

    fn stream_rounds(
        &self,
        files: &mut [FileState],
        calls: &mut dyn Attempts,
        open: OpenFiles,
        on_progress: &mut dyn FnMut(Transferred),
    ) -> Result<u64, CopyError> {
        let mut pending: Vec<usize> = (0..files.len()).collect();
        let mut total = 0u64;
        // The first round runs even without files: it carries the calls.
        loop {
            let round = Round {
                pending: &pending,
                calls: &mut *calls,
                open: &mut *open,
                on_progress: &mut *on_progress,
            };
            let failures = self.stream_round(round, files, &mut total)?;
            let wait = self.assess(files, &failures)?;
            pending = failures.into_iter().map(|(id, _)| id).collect();
            if pending.is_empty() {
                return Ok(total);
            }
            sleep(wait);
        }
    }

    /// One pass over the pending files: those that failed (to retry or give up on), or an
    /// error that ends the copy.
    fn stream_round(
        &self,
        round: Round,
        files: &mut [FileState],
        total: &mut u64,
    ) -> Result<Vec<(usize, StreamFailure)>, CopyError> {
        let Round {
            pending,
            calls,
            open,
            on_progress,
        } = round;
        let slots = || self.files.borrow().as_ref().map_or(1, AdaptiveLimit::get);
        let mut feed = Feed {
            waiting: pending.iter().copied().collect(),
            opened: VecDeque::new(),
            open_ahead: &|| slots() * OPEN_AHEAD_PER_SLOT,
            open,
            failed_to_open: None,
        };
        // The callbacks below reach the files' state and the limit; `Http::stream` never runs
        // them at once.
        let files = std::cell::RefCell::new(files);
        // When each transfer in flight started.
        let started: std::cell::RefCell<HashMap<usize, Instant>> = Default::default();
        let fatal: std::cell::RefCell<Option<CopyError>> = Default::default();
        let mut only_commit = Vec::new();
        let mut refused = Vec::new();
        let mut failures = Vec::new();
        let mut next = || loop {
            if fatal.borrow().is_some() {
                return None;
            }
            let (id, job) = feed.next()?;
            match files.borrow_mut()[id].prepare(job) {
                Ok(Prepared::Stream(stream)) => {
                    started.borrow_mut().insert(id, Instant::now());
                    return Some((id, stream));
                }
                Ok(Prepared::OnlyCommit) => only_commit.push(id),
                Ok(Prepared::Refused(failure)) => refused.push((id, failure)),
                Err(e) => *fatal.borrow_mut() = Some(e),
            }
        };
        let complete = |id: usize, streamed: u64| files.borrow_mut()[id].complete(streamed);
        let learn = |id: usize, result: &Result<u64, StreamFailure>| {
            let mut started = started.borrow_mut();
            let in_flight = started.len();
            let Some(since) = started.remove(&id) else {
                return;
            };
            let mut limit = self.files.borrow_mut();
            let Some(limit) = limit.as_mut() else { return };
            match result {
                Ok(_) => {
                    let small = files.borrow()[id].size <= LATENCY_SAMPLE_MAX_SIZE;
                    limit.answered(small.then(|| since.elapsed()), in_flight);
                }
                Err(failure) if overloaded(failure) => {
                    limit.overloaded(self.epoch.elapsed(), failure.retry_after)
                }
                Err(_) => {}
            }
        };
        self.http.stream(&mut next, &slots, calls, &mut |event| {
            if let StreamEvent::Finished { id, result } = &event {
                learn(*id, result);
            }
            match event {
                StreamEvent::Bytes(n) => on_progress(Transferred::Bytes(n)),
                StreamEvent::PartWritten { id, part, headers } => {
                    files.borrow_mut()[id].part_written(part, headers)
                }
                StreamEvent::Finished {
                    id,
                    result: Ok(streamed),
                } => match complete(id, streamed) {
                    Ok(bytes) => {
                        *total += bytes;
                        on_progress(Transferred::File { index: id, bytes });
                    }
                    Err(e) => {
                        fatal.borrow_mut().get_or_insert(e);
                    }
                },
                StreamEvent::Finished { id, result: Err(f) } => failures.push((id, f)),
            }
        });
        if let Some(error) = feed.failed_to_open.or(fatal.into_inner()) {
            return Err(error);
        }
        failures.extend(refused);
        for id in only_commit {
            let bytes = complete(id, 0)?;
            *total += bytes;
            on_progress(Transferred::File { index: id, bytes });
        }
        Ok(failures)
    }

    /// Decides about the files that failed in a round: how long to wait before retrying them,
    /// or the error that gives up the copy.
    fn assess(
        &self,
        files: &mut [FileState],
        failures: &[(usize, StreamFailure)],
    ) -> Result<Duration, CopyError> {
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for (id, failure) in failures {
            let file = &mut files[*id];
            file.renew_budget_on_progress();
            file.budget.attempts += 1;
            let first = *file.budget.first_failure.get_or_insert(now);
            // A signed URL that is refused has expired, most likely: once, a fresh one.
            // Refused on a route the store can replace: opened again at once, on the other.
            let rerouted = file.reroute(failure);
            let refused = credentials_refused(failure.status, &failure.message);
            let expired =
                rerouted || (refused && file.refresh_credentials() && file.first_refusal());
            let attempts = file.budget.attempts;
            let delay = self
                .policy
                .delay(attempts - 1, failure.retry_after, retry::jitter());
            let retry = (failure.retryable || expired)
                && self.policy.may_retry(attempts, now - first, delay);
            if !retry {
                return Err(
                    stream_error(&format!("copying {}", file.label), failure, attempts).into(),
                );
            }
            wait = wait.max(if expired { Duration::ZERO } else { delay });
        }
        Ok(wait)
    }
}

/// Whether a failed transfer says its server is overloaded: the limit backs off.
fn overloaded(failure: &StreamFailure) -> bool {
    matches!(failure.status, Some(429 | 503)) || failure.retry_after.is_some()
}

/// What one round of `stream_files` works on.
struct Round<'a> {
    pending: &'a [usize],
    calls: &'a mut dyn Attempts,
    open: OpenFiles<'a>,
    on_progress: &'a mut dyn FnMut(Transferred),
}

/// What `FileState::prepare` makes of a file's next attempt.
enum Prepared {
    Stream(StreamJob),
    /// Every part was accepted: only the commit is left.
    OnlyCommit,
    /// Its parts could not be begun on a route the store can replace (now marked refused).
    Refused(StreamFailure),
}

/// What `stream_files` keeps of one file between its attempts.
#[derive(Default)]
struct FileState {
    /// The routes of its last attempt that the store may replace: the download's, the upload's.
    fallbacks: [Option<Fallback>; 2],
    label: String,
    size: u64,
    /// Whether its requests are signed URLs (a refusal may mean they expired).
    signed: bool,
    /// The credentials its requests carry to their servers (a refusal may mean a token
    /// expired: they are refreshed, and the file sent again once).
    credentials: Vec<Credential>,
    budget: FileBudget,
    /// A file written in parts: the upload begun, and the parts accepted.
    parted: Option<Parted>,
}

impl FileState {
    /// The next attempt's transfer of this file.
    fn prepare(&mut self, job: FileJob) -> Result<Prepared, CopyError> {
        self.label = job.label;
        self.size = job.size;
        let download = job.download;
        self.credentials = download.request.credential.iter().cloned().collect();
        self.fallbacks = [download.fallback.clone(), job.upload.fallback.clone()];
        let (offset, parts) = match job.upload.kind {
            UploadKind::Whole { request, signed } => {
                self.signed = download.signed || signed;
                self.credentials.extend(request.credential.clone());
                let part = Part {
                    request,
                    length: job.size,
                };
                (0, vec![part])
            }
            UploadKind::Parts(upload) => {
                self.signed = true;
                // A retry reopens the file for fresh URLs; its upload was begun the first time.
                if self.parted.is_none() {
                    match Parted::begin(upload, job.size, &self.label) {
                        Ok(parted) => self.parted = Some(parted),
                        Err(e) => return self.refused_at_begin(e),
                    }
                }
                let parted = self.parted.as_mut().expect("begun");
                let (offset, parts) = parted.remaining()?;
                if parts.is_empty() {
                    return Ok(Prepared::OnlyCommit);
                }
                (offset, parts)
            }
        };
        // Credentials are added now, as the transfer starts (the file may have been opened a
        // while ago), and again for each retry.
        let ready = |request: &Request| {
            request.ready_to_send().map_err(|e| CopyError {
                message: format!("{}: {}", self.label, e.message),
                ..CopyError::from(e)
            })
        };
        let parts = parts
            .into_iter()
            .map(|part| {
                Ok(Part {
                    request: ready(&part.request)?,
                    length: part.length,
                })
            })
            .collect::<Result<Vec<Part>, CopyError>>()?;
        Ok(Prepared::Stream(StreamJob {
            download: ready(&download.request)?,
            offset,
            size: job.size,
            parts,
        }))
    }

    /// Parts that could not be begun: on a route the store can replace, a failure to retry
    /// on the other route; else the error that ends the copy.
    fn refused_at_begin(&mut self, error: CopyError) -> Result<Prepared, CopyError> {
        match &self.fallbacks[1] {
            Some(fallback) if fallback.refuse_now() => Ok(Prepared::Refused(StreamFailure {
                message: error.message,
                retryable: true,
                retry_after: None,
                status: None,
                end: Some(End::Destination),
            })),
            _ => Err(error),
        }
    }

    /// Whether this failure is a refusal (an answer that retrying will not change) on a route
    /// the store can replace: the route is marked refused, so that the store plans the file
    /// on its other route when it is opened again.
    fn reroute(&self, failure: &StreamFailure) -> bool {
        let fallback = match failure.end {
            Some(End::Source) => &self.fallbacks[0],
            Some(End::Destination) => &self.fallbacks[1],
            None => return false,
        };
        // A begun multipart upload keeps its route: a refused part is a signed URL that expired.
        let refusal = failure.status.is_some() && !failure.retryable && self.parted.is_none();
        // Every file planned on the route is moved, not only the first one refused.
        refusal && fallback.as_ref().is_some_and(|f| f.refuse_now())
    }

    fn part_written(&mut self, part: usize, headers: Vec<(String, String)>) {
        if let Some(parted) = self.parted.as_mut() {
            parted.part_written(part, headers);
        }
    }

    /// Commits a file whose bytes are all written (`streamed` of them by its last attempt);
    /// the file's byte count.
    fn complete(&mut self, streamed: u64) -> Result<u64, CopyError> {
        if let Some(parted) = self.parted.as_mut() {
            parted.complete().map_err(|e| CopyError {
                message: format!("committing {}: {}", self.label, e.message),
                ..e
            })?;
            // Committed: nothing to abort any more.
            self.parted = None;
            return Ok(self.size);
        }
        Ok(streamed)
    }

    /// A file written in parts that got further since its last failure starts a fresh budget:
    /// a long upload is not given up for failures spread over its parts.
    fn renew_budget_on_progress(&mut self) {
        let written = self.parted.as_ref().map_or(0, Parted::written);
        if written > self.budget.parts_written {
            self.budget = FileBudget {
                parts_written: written,
                ..FileBudget::default()
            };
        }
    }

    /// After a refusal: drops the cached tokens its requests carry (fetched again when it is
    /// next sent); whether fresh credentials may cure the refusal (signed URLs are signed
    /// again when the file is reopened).
    fn refresh_credentials(&self) -> bool {
        let refreshed = self.credentials.iter().filter(|c| c.refresh()).count();
        self.signed || refreshed > 0
    }

    /// Whether this refusal of a signed request is its first (then the next attempt gets
    /// fresh URLs): once per file, or once per part of a file written in parts.
    fn first_refusal(&mut self) -> bool {
        match self.parted.as_mut() {
            Some(parted) => parted.first_refusal(),
            None => !std::mem::replace(&mut self.budget.refreshed, true),
        }
    }
}

/// One file's retry budget.
#[derive(Default)]
struct FileBudget {
    attempts: u32,
    first_failure: Option<Instant>,
    /// Whether the file was opened again after its signed URL was refused.
    refreshed: bool,
    /// Parts accepted when the budget started.
    parts_written: usize,
}

/// Opens files a batch at a time as the transfer asks for them.
struct Feed<'a> {
    waiting: VecDeque<usize>,
    opened: VecDeque<(usize, FileJob)>,
    /// How many files to open at once.
    open_ahead: &'a dyn Fn() -> usize,
    open: OpenFiles<'a>,
    /// Set when opening failed: nothing more is handed out, the error ends the transfer.
    failed_to_open: Option<CopyError>,
}

impl Feed<'_> {
    fn next(&mut self) -> Option<(usize, FileJob)> {
        if self.opened.is_empty() && self.failed_to_open.is_none() && !self.waiting.is_empty() {
            let n = (self.open_ahead)().min(self.waiting.len());
            let ids: Vec<usize> = self.waiting.drain(..n).collect();
            match (self.open)(&ids) {
                Ok(jobs) => self.opened.extend(ids.into_iter().zip(jobs)),
                Err(e) => self.failed_to_open = Some(e),
            }
        }
        self.opened.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::testing::{get, job, transport, Scripted};
    use crate::transport::{Download, NoCalls};
    use std::cell::RefCell;
    use std::collections::VecDeque;

    fn transient() -> Result<u64, StreamFailure> {
        Err(StreamFailure {
            message: "HTTP 503".into(),
            retryable: true,
            retry_after: None,
            status: Some(503),
            end: None,
        })
    }

    #[test]
    fn streams_retry_only_the_failed_files() {
        let (mut t, _) = transport(vec![]);
        let rounds = vec![
            vec![Ok(10), transient(), Ok(5)],
            vec![transient()],
            vec![Ok(7)],
        ];
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(rounds.into()),
            digest_rounds: RefCell::default(),
        });
        let mut opened = Vec::new();
        let mut done = Vec::new();
        let total = t
            .stream_files(
                3,
                2,
                &mut NoCalls,
                &mut |ids| {
                    opened.push(ids.to_vec());
                    Ok(ids.iter().map(|i| job(&format!("f{i}"))).collect())
                },
                &mut |p| {
                    if let Transferred::File { index, bytes } = p {
                        done.push((index, bytes))
                    }
                },
            )
            .unwrap();
        assert_eq!(total, 22);
        assert_eq!(done, vec![(0, 10), (2, 5), (1, 7)]);
        // A retried file is opened again (fresh signed URLs), alone.
        assert_eq!(opened, vec![vec![0, 1, 2], vec![1], vec![1]]);
    }

    #[test]
    fn each_file_has_its_own_retry_clock() {
        // The whole transfer may take longer than one file's retry budget: a long file
        // (300 ms) must not use up the time of the file that fails after it.
        let (mut t, _) = transport(vec![]);
        t.policy.max_elapsed = Some(Duration::from_millis(200));
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![Ok(3000), transient()], vec![Ok(1)]].into()),
            digest_rounds: RefCell::default(),
        });
        let total = t
            .stream_files(
                2,
                1,
                &mut NoCalls,
                &mut |ids| Ok(ids.iter().map(|i| job(&format!("f{i}"))).collect()),
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(total, 3001);
    }

    #[test]
    fn a_file_that_keeps_failing_gives_up_after_its_attempts() {
        let (mut t, _) = transport(vec![]);
        let rounds: Vec<_> = (0..5).map(|_| vec![transient()]).collect();
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(rounds.into()),
            digest_rounds: RefCell::default(),
        });
        let err = t
            .stream_files(1, 1, &mut NoCalls, &mut |_| Ok(vec![job("f")]), &mut |_| {})
            .unwrap_err();
        assert!(err.message.contains("after 5 attempts"), "{}", err.message);
    }

    #[test]
    fn a_refused_route_with_a_fallback_is_replaced_when_the_file_is_opened_again() {
        let denied = |end| {
            Err(StreamFailure {
                message: "HTTP 403".into(),
                retryable: false,
                retry_after: None,
                status: Some(403),
                end: Some(end),
            })
        };
        let run = |rounds: Vec<Vec<Result<u64, StreamFailure>>>| {
            let count = rounds[0].len();
            let (mut t, _) = transport(vec![]);
            t.http = Box::new(Scripted {
                answers: RefCell::new(VecDeque::new()),
                sent: Default::default(),
                stream_rounds: RefCell::new(rounds.into()),
                digest_rounds: RefCell::default(),
            });
            let files_api = Fallback::default();
            let mut routes = Vec::new();
            let result = t.stream_files(
                count,
                count,
                &mut NoCalls,
                &mut |ids| {
                    // The store: the Files API until it is refused, then a signed URL.
                    let download = if files_api.refused() {
                        routes.push("signed");
                        Download::signed(get())
                    } else {
                        routes.push("files");
                        Download::with_fallback(get(), files_api.clone())
                    };
                    Ok(ids
                        .iter()
                        .map(|_| FileJob {
                            download: download.clone(),
                            ..job("f")
                        })
                        .collect())
                },
                &mut |_| {},
            );
            (result.map_err(|e| e.message), routes, files_api.refused())
        };
        // Refused at the source, the Files API's side: the retry goes by signed URL, at once.
        let (result, routes, refused) = run(vec![vec![denied(End::Source)], vec![Ok(4)]]);
        assert_eq!(
            (result, routes, refused),
            (Ok(4), vec!["files", "signed"], true)
        );
        // Refused at the other end: nothing to replace, the refusal ends the copy.
        let (result, routes, refused) = run(vec![vec![denied(End::Destination)]]);
        assert!(result.unwrap_err().contains("HTTP 403"));
        assert_eq!((routes, refused), (vec!["files"], false));
        // Both files of a batch planned on the route are moved, not only the first refused.
        let both = vec![
            vec![denied(End::Source), denied(End::Source)],
            vec![Ok(4), Ok(4)],
        ];
        let (result, routes, refused) = run(both);
        assert_eq!(
            (result, routes, refused),
            (Ok(8), vec!["files", "signed"], true)
        );
        // A transient failure is retried on the same route.
        let (result, routes, refused) = run(vec![vec![transient()], vec![Ok(4)]]);
        assert_eq!(
            (result, routes, refused),
            (Ok(4), vec!["files", "files"], false)
        );
    }

    #[test]
    fn a_refused_signed_url_is_opened_again_once() {
        let denied = || {
            Err(StreamFailure {
                message: "HTTP 403".into(),
                retryable: false,
                retry_after: None,
                status: Some(403),
                end: None,
            })
        };
        let (mut t, _) = transport(vec![]);
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![denied()], vec![Ok(4)]].into()),
            digest_rounds: RefCell::default(),
        });
        let signed = |ids: &[usize]| {
            let signed_job = |_| FileJob {
                download: Download::signed(get()),
                ..job("f")
            };
            Ok::<_, CopyError>(ids.iter().map(signed_job).collect())
        };
        let mut opened = 0;
        let total = t
            .stream_files(
                1,
                1,
                &mut NoCalls,
                &mut |ids| {
                    opened += 1;
                    signed(ids)
                },
                &mut |_| {},
            )
            .unwrap();
        assert_eq!((total, opened), (4, 2));

        // Refused again with a fresh URL: that is a real refusal.
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![denied()], vec![denied()]].into()),
            digest_rounds: RefCell::default(),
        });
        let err = t
            .stream_files(1, 1, &mut NoCalls, &mut |ids| signed(ids), &mut |_| {})
            .unwrap_err();
        assert_eq!(err.kind, crate::api::ErrorKind::Unauthorized);
        // An unsigned request refused is not retried at all.
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![denied()]].into()),
            digest_rounds: RefCell::default(),
        });
        let plain = |ids: &[usize]| Ok::<_, CopyError>(ids.iter().map(|_| job("f")).collect());
        assert!(t
            .stream_files(1, 1, &mut NoCalls, &mut |ids| plain(ids), &mut |_| {})
            .is_err());
    }

    #[test]
    fn the_files_limit_grows_with_good_transfers_and_halves_on_429() {
        let (mut t, _) = transport(vec![]);
        let throttled = || {
            Err(StreamFailure {
                message: "HTTP 429".into(),
                retryable: true,
                retry_after: Some(Duration::ZERO),
                status: Some(429),
                end: None,
            })
        };
        let rounds = vec![
            (0..40).map(|_| Ok(1)).collect(),
            // The next copy's transfers: four refused, then sent again.
            vec![
                throttled(),
                throttled(),
                throttled(),
                throttled(),
                Ok(1),
                Ok(1),
            ],
            vec![Ok(1), Ok(1), Ok(1), Ok(1)],
        ];
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(rounds.into()),
            digest_rounds: RefCell::default(),
        });
        assert_eq!(t.files_limit(), None);
        let mut open = |ids: &[usize]| Ok(ids.iter().map(|i| job(&format!("f{i}"))).collect());
        t.stream_files(40, 32, &mut NoCalls, &mut open, &mut |_| {})
            .unwrap();
        assert_eq!(t.files_limit().unwrap(), "limit settled at 32");
        // Learned over the command: the next transfer starts from 32; one halving per window.
        t.stream_files(6, 32, &mut NoCalls, &mut open, &mut |_| {})
            .unwrap();
        assert_eq!(
            t.files_limit().unwrap(),
            "limit settled at 16 (peak 32), 1 back-off(s) for 429/503"
        );
    }

    #[test]
    fn a_permanent_stream_failure_stops_the_copy() {
        let (mut t, _) = transport(vec![]);
        let denied = StreamFailure {
            message: "HTTP 403".into(),
            retryable: false,
            retry_after: None,
            status: Some(403),
            end: None,
        };
        t.http = Box::new(Scripted {
            answers: RefCell::new(VecDeque::new()),
            sent: Default::default(),
            stream_rounds: RefCell::new(vec![vec![Ok(1), Err(denied)]].into()),
            digest_rounds: RefCell::default(),
        });
        let err: CopyError = t
            .stream_files(
                2,
                2,
                &mut NoCalls,
                &mut |ids| Ok(ids.iter().map(|&i| job(["a", "b"][i])).collect()),
                &mut |_| {},
            )
            .unwrap_err();
        assert_eq!(err.kind, crate::api::ErrorKind::Unauthorized);
        assert!(
            err.message.starts_with("copying b: HTTP 403"),
            "{}",
            err.message
        );
    }
}
