//! What a file transfer is made of: how to read a file (`Download`) and write it (`Upload`),
//! the route a store may give up for another (`Fallback`), the job a store hands the
//! transport (`FileJob`), what `Http::stream` moves and reports (`StreamJob`, `Part`,
//! `StreamEvent`, `StreamFailure`, `End`) and the progress callers see (`Transferred`). How
//! the transport schedules and retries them is `stream_files`.

use super::{Multipart, Request};
use crate::api::CopyError;
use std::time::Duration;

/// A route a store tries first and gives up for another when it is refused (a workspace's
/// Files API, which may be off for an operation). The store and the files it planned on the
/// route share it: a transfer refused on the route marks it, and the retried file, opened
/// again, is planned by the store on its other route.
#[derive(Debug, Clone, Default)]
pub struct Fallback(std::rc::Rc<std::cell::Cell<bool>>);

impl Fallback {
    /// Whether the route was refused (then the store plans its other route).
    pub fn refused(&self) -> bool {
        self.0.get()
    }

    pub fn refuse(&self) {
        self.0.set(true)
    }

    /// Marks the route refused (and says so).
    pub(super) fn refuse_now(&self) -> bool {
        self.refuse();
        true
    }
}

/// How to read one file: a GET that its store has authorised (or signed).
#[derive(Debug, Clone)]
pub struct Download {
    pub(super) request: Request,
    pub(super) signed: bool,
    pub(super) fallback: Option<Fallback>,
}

impl Download {
    pub fn get(request: Request) -> Download {
        Download {
            request,
            signed: false,
            fallback: None,
        }
    }

    /// A GET on a route the store gives up when it is refused (see `Fallback`).
    pub fn with_fallback(request: Request, fallback: Fallback) -> Download {
        Download {
            fallback: Some(fallback),
            ..Download::get(request)
        }
    }

    /// A GET of a signed URL: it carries no credentials of ours, and it expires (a 401 or 403
    /// is answered by opening the file again, with a fresh URL).
    pub fn signed(request: Request) -> Download {
        Download {
            request,
            signed: true,
            fallback: None,
        }
    }

    pub fn request(&self) -> &Request {
        &self.request
    }
}

/// How to write one file: a PUT that its store has authorised (or signed), whose body is the
/// file, streamed, with the source's length; or parts committed together (`Multipart`), as
/// cloud storage requires of large files.
pub struct Upload {
    pub(super) kind: UploadKind,
    pub(super) fallback: Option<Fallback>,
}

pub(super) enum UploadKind {
    Whole { request: Request, signed: bool },
    Parts(Box<dyn Multipart>),
}

impl Upload {
    pub fn put(request: Request) -> Upload {
        Upload {
            kind: UploadKind::Whole {
                request,
                signed: false,
            },
            fallback: None,
        }
    }

    /// An upload (whole or in parts) on a route the store gives up when it is refused (see
    /// `Fallback`): a refused PUT, or a refused start of the parts, is opened again.
    pub fn with_fallback(self, fallback: Fallback) -> Upload {
        Upload {
            fallback: Some(fallback),
            ..self
        }
    }

    /// A PUT to a signed URL (see `Download::signed`).
    pub fn signed(request: Request) -> Upload {
        Upload {
            kind: UploadKind::Whole {
                request,
                signed: true,
            },
            fallback: None,
        }
    }

    /// A file written in parts. Its part requests count as signed: a refused one is asked for
    /// again (`Multipart::part` with `refresh`).
    pub fn parts(upload: Box<dyn Multipart>) -> Upload {
        Upload {
            kind: UploadKind::Parts(upload),
            fallback: None,
        }
    }

    /// The PUT of a file written whole (`None` for one written in parts).
    pub fn request(&self) -> Option<&Request> {
        match &self.kind {
            UploadKind::Whole { request, .. } => Some(request),
            UploadKind::Parts(_) => None,
        }
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            UploadKind::Whole { request, .. } => write!(f, "Upload({})", request.describe()),
            UploadKind::Parts(_) => f.write_str("Upload(parts)"),
        }
    }
}

/// One file to stream from its source store to its destination store.
#[derive(Debug)]
pub struct FileJob {
    /// What the file is, for messages (e.g. `run abc artifact model/MLmodel`).
    pub label: String,
    /// Its size as listed: the upload declares it, and a source that sends another length
    /// fails the file (never a silently short or empty copy).
    pub size: u64,
    pub download: Download,
    pub upload: Upload,
}

/// What `Http::stream` moves: bytes `offset..size` of a download, written into `parts` in
/// sequence, each upload taking the next `length` bytes as its body (with that exact
/// Content-Length, streamed). A whole file is one part from offset 0.
#[derive(Debug, Clone)]
pub struct StreamJob {
    /// The GET of the whole file. From an `offset` above 0 the host asks for the rest with a
    /// `Range` header; a source that ignores it is read from its start and the first `offset`
    /// bytes are dropped (slower, never wrong).
    pub download: Request,
    pub offset: u64,
    /// The whole file's size, as listed.
    pub size: u64,
    pub parts: Vec<Part>,
}

/// One upload of a `StreamJob`.
#[derive(Debug, Clone)]
pub struct Part {
    pub request: Request,
    pub length: u64,
}

/// Why one streamed file failed.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFailure {
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
    /// HTTP status of the failing side, if a server answered.
    pub status: Option<u16>,
    /// Which side answered `status`, when one did.
    pub end: Option<End>,
}

/// The two sides of a streamed file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    Source,
    Destination,
}

/// What `Http::stream` reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `bytes` more bytes reached the destination.
    Bytes(u64),
    /// Part number `part` of the job's `parts` was accepted, with these answer headers (an S3
    /// part's ETag). Parts are reported in order, before the job's `Finished`.
    PartWritten {
        id: usize,
        part: usize,
        headers: Vec<(String, String)>,
    },
    /// The job with this id finished: the bytes it wrote, or why it failed.
    Finished {
        id: usize,
        result: Result<u64, StreamFailure>,
    },
}

/// Progress of `Transport::stream_files`.
pub enum Transferred {
    /// More bytes reached a destination (possibly of a file that will be retried).
    Bytes(u64),
    /// File number `index` is complete.
    File { index: usize, bytes: u64 },
}

/// Turns file indices into jobs (see `Transport::stream_files`).
pub type OpenFiles<'a> = &'a mut dyn FnMut(&[usize]) -> Result<Vec<FileJob>, CopyError>;

/// The next job to stream and its id, or `None` when there is none (left).
pub type NextJob<'a> = &'a mut dyn FnMut() -> Option<(usize, StreamJob)>;
/// How many transfers may be in flight now: asked each time a slot frees up, so that the
/// limit may change during a transfer (`AdaptiveLimit`).
pub type Slots<'a> = &'a dyn Fn() -> usize;
