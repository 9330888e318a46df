//! Files written in parts: what a store says about its multipart protocol (`Multipart`), and
//! what the transport keeps of one such file between attempts (`Parted`).
//!
//! A part that fails is sent again from its start: the transport asks the source for the rest
//! of the file from that part's offset with an HTTP `Range` GET (S3, Azure, the Files API and
//! MLflow's artifact proxy honour it; a source that does not is read from its start and the
//! bytes before the offset are dropped). Parts already accepted are never sent again, and no
//! part is ever held whole in memory, nor on disk.

use super::{Part, Request, Transport};
use crate::api::CopyError;

/// A store's protocol for writing one file in parts and committing them (an S3 multipart
/// upload, Azure blocks and a block list, ADLS appends and a flush). The transport streams the
/// file's bytes into the parts, in order.
pub trait Multipart {
    /// Starts the upload (e.g. S3 `create-multipart-upload`) and says how long each part is,
    /// in order; the lengths add up to the file's size (no parts for an empty file, if the
    /// storage allows it). Called once, when the file's first transfer begins.
    fn begin(&mut self) -> Result<Vec<u64>, CopyError>;
    /// The request that writes part `index`; its body will be the part. `refresh` asks for a
    /// fresh signature: the last request for this part was refused (a signed URL expired).
    fn part(&mut self, index: usize, refresh: bool) -> Result<Request, CopyError>;
    /// Commits the parts, given each part's answer headers in order (S3 needs the ETags).
    fn complete(&mut self, answers: &[Vec<(String, String)>]) -> Result<(), CopyError>;
    /// Discards what was written: the file failed for good. Best effort (a failure here must
    /// not hide the one that ended the file).
    fn abort(&mut self);
}

/// One file being written in parts, kept across attempts so that a retry resumes where the
/// last one stopped.
pub(super) struct Parted {
    upload: Box<dyn Multipart>,
    lengths: Vec<u64>,
    /// The answer headers of the parts accepted so far, in order.
    answers: Vec<Vec<(String, String)>>,
    /// Whether the next part's request must be fetched fresh (its last one was refused).
    refresh: bool,
    /// Parts whose request was refreshed after a refusal: refused again, the refusal is real.
    refreshed: Vec<usize>,
}

impl Parted {
    /// Starts the upload; `label` names the file in messages.
    pub(super) fn begin(
        mut upload: Box<dyn Multipart>,
        size: u64,
        label: &str,
    ) -> Result<Parted, CopyError> {
        let lengths = upload.begin()?;
        if lengths.iter().sum::<u64>() != size {
            upload.abort();
            return Err(CopyError::upstream(format!(
                "internal error: the parts of {label} do not add up to its {size} bytes"
            )));
        }
        Ok(Parted {
            upload,
            lengths,
            answers: Vec::new(),
            refresh: false,
            refreshed: Vec::new(),
        })
    }

    /// How many parts were accepted.
    pub(super) fn written(&self) -> usize {
        self.answers.len()
    }

    /// Where the next attempt starts in the file, and the parts it writes (empty when every
    /// part was accepted: only the commit is left).
    pub(super) fn remaining(&mut self) -> Result<(u64, Vec<Part>), CopyError> {
        let first = self.written();
        let offset = self.lengths[..first].iter().sum();
        let mut parts = Vec::with_capacity(self.lengths.len() - first);
        for index in first..self.lengths.len() {
            let refresh = self.refresh && index == first;
            parts.push(Part {
                request: self.upload.part(index, refresh)?,
                length: self.lengths[index],
            });
        }
        self.refresh = false;
        Ok((offset, parts))
    }

    /// Part `part` of the last `remaining()` was accepted.
    pub(super) fn part_written(&mut self, part: usize, headers: Vec<(String, String)>) {
        debug_assert!(part <= self.lengths.len(), "part within the file");
        self.answers.push(headers);
    }

    /// The next part's request was refused: whether that is the first time (then the next
    /// attempt asks for a fresh one).
    pub(super) fn first_refusal(&mut self) -> bool {
        let part = self.written();
        if self.refreshed.contains(&part) {
            return false;
        }
        self.refreshed.push(part);
        self.refresh = true;
        true
    }

    pub(super) fn complete(&mut self) -> Result<(), CopyError> {
        self.upload.complete(&self.answers)
    }

    pub(super) fn abort(&mut self) {
        self.upload.abort()
    }
}

impl Transport {
    /// Writes a small body held in memory (an `MLmodel`) through a store's multipart protocol:
    /// each part sent whole and retried as `send` does, a refused part's request refreshed once,
    /// then the commit; on failure the upload is aborted.
    pub fn send_parts(&self, upload: &mut dyn Multipart, body: &[u8]) -> Result<(), CopyError> {
        let result = self.send_parts_once(upload, body);
        if result.is_err() {
            upload.abort();
        }
        result
    }

    fn send_parts_once(&self, upload: &mut dyn Multipart, body: &[u8]) -> Result<(), CopyError> {
        let lengths = upload.begin()?;
        let mut answers = Vec::with_capacity(lengths.len());
        let mut offset = 0usize;
        for (index, &length) in lengths.iter().enumerate() {
            let end = offset + length as usize;
            let mut refresh = false;
            loop {
                let mut request = upload.part(index, refresh)?;
                request.body = body[offset..end].to_vec();
                let response = self.send(&request, true)?;
                if response.is_success() {
                    answers.push(response.headers);
                    break;
                }
                if matches!(response.status, 401 | 403) && !refresh {
                    refresh = true;
                    continue;
                }
                let what = format!("for part {} of {}", index + 1, lengths.len());
                return Err(super::storage_refusal(&request, &response, &what));
            }
            offset = end;
        }
        upload.complete(&answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::retry::RetryPolicy;
    use crate::transport::{
        send_each, Attempts, Download, FileJob, Http, Method, NextJob, NoCalls, Response,
        SendError, Slots, StreamEvent, StreamFailure, StreamJob, Transferred, Upload,
    };
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    use url::Url;

    /// What the store's side of a multipart upload was asked.
    #[derive(Default)]
    struct Log {
        begun: u32,
        parts: Vec<(usize, bool)>,
        completed: Option<Vec<String>>,
        aborted: u32,
    }

    struct FakeUpload {
        lengths: Vec<u64>,
        log: Rc<RefCell<Log>>,
    }

    impl Multipart for FakeUpload {
        fn begin(&mut self) -> Result<Vec<u64>, CopyError> {
            self.log.borrow_mut().begun += 1;
            Ok(self.lengths.clone())
        }
        fn part(&mut self, index: usize, refresh: bool) -> Result<Request, CopyError> {
            self.log.borrow_mut().parts.push((index, refresh));
            let url = format!("http://storage/f?part={index}&fresh={refresh}");
            Ok(Request::new(Method::Put, Url::parse(&url).unwrap()))
        }
        fn complete(&mut self, answers: &[Vec<(String, String)>]) -> Result<(), CopyError> {
            let etags = answers.iter().map(|a| a[0].1.clone()).collect();
            self.log.borrow_mut().completed = Some(etags);
            Ok(())
        }
        fn abort(&mut self) {
            self.log.borrow_mut().aborted += 1;
        }
    }

    /// One job's scripted attempt: how many of its parts are accepted, then how it ends.
    type Attempt = (usize, Result<(), StreamFailure>);

    /// Streams by script, recording each job it was given; a part's ETag is its URL's `part`.
    #[derive(Default)]
    struct Scripted {
        rounds: RefCell<VecDeque<Vec<Attempt>>>,
        jobs: Rc<RefCell<Vec<StreamJob>>>,
        answers: RefCell<VecDeque<Response>>,
        sent: Rc<RefCell<Vec<Request>>>,
    }

    impl Http for Scripted {
        fn send(&self, request: &Request) -> Result<Response, SendError> {
            self.sent.borrow_mut().push(request.clone());
            Ok(self
                .answers
                .borrow_mut()
                .pop_front()
                .expect("answer scripted"))
        }
        fn stream(
            &self,
            next: NextJob,
            _: Slots,
            calls: &mut dyn Attempts,
            events: &mut dyn FnMut(StreamEvent),
        ) {
            send_each(self, calls);
            // Requests alone (`send_all`) take no scripted round.
            let Some(round) = self.rounds.borrow_mut().pop_front() else {
                return;
            };
            for (written, end) in round {
                let (id, job) = next().expect("a job per scripted attempt");
                for (part, p) in job.parts.iter().take(written).enumerate() {
                    let etag = p.request.url.query_pairs().next().unwrap().1.to_string();
                    events(StreamEvent::Bytes(p.length));
                    let headers = vec![("etag".to_string(), etag)];
                    events(StreamEvent::PartWritten { id, part, headers });
                }
                let sent = job.parts.iter().take(written).map(|p| p.length).sum();
                self.jobs.borrow_mut().push(job);
                events(StreamEvent::Finished {
                    id,
                    result: end.map(|()| sent),
                });
            }
            assert!(next().is_none(), "every job scripted");
        }

        fn digest(
            &self,
            _: &[(Request, u64)],
            _: usize,
        ) -> Vec<Result<crate::transport::Digest, crate::transport::StreamFailure>> {
            unreachable!("these tests read no file through")
        }
    }

    fn failure(status: u16) -> Result<(), StreamFailure> {
        Err(StreamFailure {
            message: format!("destination answered HTTP {status}"),
            retryable: status >= 500,
            retry_after: None,
            status: Some(status),
            end: None,
        })
    }

    fn transport(http: Scripted, max_attempts: u32) -> Transport {
        let policy = RetryPolicy {
            max_attempts,
            ..RetryPolicy::without_waits()
        };
        Transport::new(Box::new(http), policy)
    }

    fn parted_job(lengths: &[u64], log: &Rc<RefCell<Log>>) -> FileJob {
        let get = Request::new(Method::Get, Url::parse("http://source/f").unwrap());
        FileJob {
            label: "run r artifact \"big.bin\"".into(),
            size: lengths.iter().sum(),
            download: Download::signed(get),
            upload: Upload::parts(Box::new(FakeUpload {
                lengths: lengths.to_vec(),
                log: log.clone(),
            })),
        }
    }

    /// Streams one file written in parts by script; what the store was asked, the jobs the
    /// host got, how often the file was opened, and the result.
    fn copy(
        lengths: &[u64],
        rounds: Vec<Vec<Attempt>>,
        max_attempts: u32,
    ) -> (Log, Vec<StreamJob>, u32, Result<u64, CopyError>) {
        let log = Rc::new(RefCell::new(Log::default()));
        let jobs = Rc::new(RefCell::new(Vec::new()));
        let http = Scripted {
            rounds: RefCell::new(rounds.into()),
            jobs: jobs.clone(),
            ..Scripted::default()
        };
        let t = transport(http, max_attempts);
        let mut opened = 0;
        let mut done = Vec::new();
        let result = t.stream_files(
            1,
            1,
            &mut NoCalls,
            &mut |_| {
                opened += 1;
                Ok(vec![parted_job(lengths, &log)])
            },
            &mut |p| {
                if let Transferred::File { bytes, .. } = p {
                    done.push(bytes)
                }
            },
        );
        if let Ok(total) = result {
            assert_eq!(done, vec![total], "one file reported, with its size");
        }
        let log = Rc::try_unwrap(log).ok().unwrap().into_inner();
        let jobs = jobs.take();
        (log, jobs, opened, result)
    }

    #[test]
    fn parts_are_streamed_in_order_and_committed_with_their_etags() {
        let (log, jobs, _, result) = copy(&[10, 10, 5], vec![vec![(3, Ok(()))]], 5);
        assert_eq!(result.unwrap(), 25);
        assert_eq!(log.begun, 1);
        let lengths: Vec<u64> = jobs[0].parts.iter().map(|p| p.length).collect();
        assert_eq!(
            (jobs[0].offset, jobs[0].size, lengths),
            (0, 25, vec![10, 10, 5])
        );
        assert_eq!(log.completed.unwrap(), vec!["0", "1", "2"]);
        assert_eq!(log.aborted, 0);
    }

    #[test]
    fn a_failed_part_resumes_at_its_offset_and_a_refused_one_gets_a_fresh_url() {
        let rounds = vec![
            vec![(1, failure(403))],
            vec![(1, failure(503))],
            vec![(1, Ok(()))],
        ];
        let (log, jobs, opened, result) = copy(&[10, 10, 5], rounds, 5);
        assert_eq!(result.unwrap(), 25);
        // Begun once, though the file was opened again for each retry (fresh download URL).
        assert_eq!((log.begun, opened), (1, 3));
        let offsets: Vec<u64> = jobs.iter().map(|j| j.offset).collect();
        assert_eq!(offsets, vec![0, 10, 20]);
        // Only the refused part was asked for afresh; a 503 keeps the URL.
        assert_eq!(
            jobs[1].parts[0].request.url.query(),
            Some("part=1&fresh=true")
        );
        assert_eq!(
            jobs[2].parts[0].request.url.query(),
            Some("part=2&fresh=false")
        );
        assert_eq!(log.completed.unwrap(), vec!["0", "1", "2"]);
    }

    #[test]
    fn a_part_refused_again_with_a_fresh_url_fails_and_aborts_the_upload() {
        let rounds = vec![vec![(1, failure(403))], vec![(0, failure(403))]];
        let (log, _, _, result) = copy(&[10, 10, 5], rounds, 5);
        let err = result.unwrap_err();
        assert_eq!(err.kind, crate::api::ErrorKind::Unauthorized);
        assert!(
            err.message.contains("big.bin") && err.message.contains("403"),
            "{}",
            err.message
        );
        assert_eq!((log.completed, log.aborted), (None, 1));
    }

    #[test]
    fn a_file_that_progresses_gets_a_fresh_budget_and_one_that_does_not_gives_up() {
        // Two attempts per budget: four failures spread over four parts still finish.
        let rounds = (0..4)
            .map(|_| vec![(1, failure(503))])
            .chain([vec![(1, Ok(()))]])
            .collect();
        let (log, _, _, result) = copy(&[6; 5], rounds, 2);
        assert_eq!(result.unwrap(), 30);
        assert_eq!(log.completed.unwrap().len(), 5);
        // Two failures on the same part use up its budget.
        let rounds = vec![vec![(1, failure(503))], vec![(0, failure(503))]];
        let (log, _, _, result) = copy(&[6; 5], rounds, 2);
        assert!(result.unwrap_err().message.contains("after 2 attempts"));
        assert_eq!(log.aborted, 1);
    }

    #[test]
    fn an_upload_without_parts_is_only_committed() {
        let (log, jobs, _, result) = copy(&[], vec![vec![]], 5);
        assert_eq!(result.unwrap(), 0);
        assert!(jobs.is_empty(), "nothing to download");
        assert_eq!(log.completed.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn small_bodies_are_sent_in_parts_and_a_refused_part_is_refreshed_once() {
        let answer = |status: u16, etag: &str| Response {
            status,
            headers: vec![("etag".into(), etag.into())],
            body: vec![],
        };
        let http = Scripted {
            answers: RefCell::new(vec![answer(201, "a"), answer(403, ""), answer(201, "b")].into()),
            ..Scripted::default()
        };
        let sent = http.sent.clone();
        let t = transport(http, 5);
        let log = Rc::new(RefCell::new(Log::default()));
        let mut upload = FakeUpload {
            lengths: vec![3, 2],
            log: log.clone(),
        };
        t.send_parts(&mut upload, b"hello").unwrap();
        let bodies: Vec<Vec<u8>> = sent.borrow().iter().map(|r| r.body.clone()).collect();
        assert_eq!(
            bodies,
            vec![b"hel".to_vec(), b"lo".to_vec(), b"lo".to_vec()]
        );
        assert_eq!(log.borrow().parts, vec![(0, false), (1, false), (1, true)]);
        assert_eq!(log.borrow().completed.clone().unwrap(), vec!["a", "b"]);
    }
}
