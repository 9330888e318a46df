//! How the engine has the stores' work carried out without knowing the wire.
//!
//! A store turns an operation into a [`Call`]: a request it has prepared ([`Outgoing`], opaque
//! to the engine) and how the final answer is read. The engine decides what to send and when,
//! through [`PendingCalls`]; the [`Scheduler`] sends those calls in the same loop as the
//! artifact transfers (the component is single-threaded: concurrency is several requests polled
//! together), with the transport's retries and limits underneath. So the engine plans in store
//! operations and never holds an HTTP request or the transport itself.

use crate::api::CopyError;
use crate::transport::{self, Calls, OpenDigests, OpenFiles, Request, Response, Transport};
use std::rc::Rc;
use std::time::Duration;

/// The transfer vocabulary the engine and the stores share: a file to copy (its download and
/// upload, which the stores make), a file to digest, a digest, and the progress of a transfer.
pub use crate::transport::{Digest, DigestJob, FileJob, Transferred};

/// A request a store prepared, handed on by the engine as it is. (Its inside is the stores'
/// business: a store that sends calls its own way, as `MlflowRest::run_together`, opens it.)
pub struct Outgoing(pub(in crate::stores) Request);

/// The final answer to an `Outgoing` (after its retries), handed back to the call's `Reader`.
pub struct Answer(Result<Response, transport::Error>);

/// A store operation the engine sends along with other work (other calls, file transfers):
/// the request, and how its final answer is read. A store that does not make one request per
/// operation (the in-memory fake) answers at once instead.
pub enum Call<'s, T> {
    Send {
        request: Outgoing,
        read: Reader<'s, T>,
    },
    Done(Result<T, CopyError>),
}

/// Reads the final answer to a call's request into the call's result.
pub struct Reader<'s, T>(pub(in crate::stores) ReadAnswer<'s, T>);

pub(in crate::stores) type ReadAnswer<'s, T> =
    Box<dyn FnOnce(Result<Response, transport::Error>) -> Result<T, CopyError> + 's>;

impl<'s, T: 's> Call<'s, T> {
    /// The call of a store that sends `request` and reads the answer with `read`.
    pub fn send(
        request: Request,
        read: impl FnOnce(Result<Response, transport::Error>) -> Result<T, CopyError> + 's,
    ) -> Call<'s, T> {
        Call::Send {
            request: Outgoing(request),
            read: Reader(Box::new(read)),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U + 's) -> Call<'s, U> {
        match self {
            Call::Send { request, read } => Call::Send {
                request,
                read: Reader(Box::new(move |answer| (read.0)(answer).map(f))),
            },
            Call::Done(result) => Call::Done(result.map(f)),
        }
    }

    /// Sends the call's request on its own (a read outside a pipeline) and reads its answer.
    pub fn run_alone(self, transport: &Transport) -> Result<T, CopyError> {
        match self {
            Call::Done(result) => result,
            Call::Send { request, read } => (read.0)(transport.send(&request.0, true)),
        }
    }
}

impl<T> Reader<'_, T> {
    pub fn read(self, answer: Answer) -> Result<T, CopyError> {
        (self.0)(answer.0)
    }
}

/// Store calls the engine keeps in flight alongside file transfers (the metric pipeline). The
/// scheduler asks for calls each time round its loop, retries each on its own budget (as an
/// idempotent request) and hands back its final answer.
pub trait PendingCalls {
    /// The next call to send now, with the caller's id for it; `None` while there is nothing
    /// to send. The caller decides how many it keeps in flight.
    fn next(&mut self) -> Option<(usize, Outgoing)>;
    /// The final answer to call `id`, after its retries.
    fn answer(&mut self, id: usize, answer: Answer);
    /// Whether every call was answered and no more will come.
    fn done(&self) -> bool;
    /// What one attempt of call `id` met, retried or not: the server answered in `latency`,
    /// and said it is overloaded (429, 503, `Retry-After`: `Some` of the wait it asked, zero if
    /// none) or not (`None`). For a caller that adapts its limits (`limits::AdaptiveLimit`).
    fn attempted(&mut self, _id: usize, _latency: Duration, _overloaded: Option<Duration>) {}
}

/// No calls: a transfer of files only.
pub struct NoCalls;

impl PendingCalls for NoCalls {
    fn next(&mut self) -> Option<(usize, Outgoing)> {
        None
    }
    fn answer(&mut self, _: usize, _: Answer) {}
    fn done(&self) -> bool {
        true
    }
}

/// Carries out the stores' work for the engine: calls sent alone, file transfers with calls
/// alongside, digests, and the pause before an uncertain create is tried again.
pub struct Scheduler {
    transport: Rc<Transport>,
}

impl Scheduler {
    pub fn new(transport: Rc<Transport>) -> Scheduler {
        Scheduler { transport }
    }

    /// Sends one call on its own and reads its answer.
    pub fn run<T>(&self, call: Call<'_, T>) -> Result<T, CopyError> {
        call.run_alone(&self.transport)
    }

    /// Streams files `0..count` (jobs made by `open`, a few ids at a time), at most
    /// `concurrency` at once, while `calls` go out in the same loop; the bytes written.
    pub fn copy_files(
        &self,
        count: usize,
        concurrency: usize,
        calls: &mut dyn PendingCalls,
        open: OpenFiles,
        on_progress: &mut dyn FnMut(Transferred),
    ) -> Result<u64, CopyError> {
        let mut calls = OnTransport(calls);
        self.transport
            .stream_files(count, concurrency, &mut calls, open, on_progress)
    }

    /// The digests of files `0..count` (jobs made by `open`), in order.
    pub fn digest_files(
        &self,
        count: usize,
        concurrency: usize,
        open: OpenDigests,
    ) -> Result<Vec<Digest>, CopyError> {
        self.transport.digest_files(count, concurrency, open)
    }

    /// Where the file transfers' limit settled, once files were streamed (for the report).
    pub fn files_limit(&self) -> Option<String> {
        self.transport.files_limit()
    }

    /// Before trying again the `retry`th time (from 0): waits as the transport would before a
    /// retry and says true, or says false when the transport's attempts are used up.
    pub fn pause_before_retry(&self, retry: u32) -> bool {
        if retry + 1 >= self.transport.max_attempts() {
            return false;
        }
        transport::sleep(self.transport.backoff(retry));
        true
    }
}

/// The engine's pending calls as the transport's `Calls`.
struct OnTransport<'a>(&'a mut dyn PendingCalls);

impl Calls for OnTransport<'_> {
    fn next(&mut self) -> Option<(usize, Request)> {
        self.0.next().map(|(id, outgoing)| (id, outgoing.0))
    }
    fn answer(&mut self, id: usize, answer: Result<Response, transport::Error>) {
        self.0.answer(id, Answer(answer));
    }
    fn done(&self) -> bool {
        self.0.done()
    }
    fn attempted(&mut self, id: usize, latency: Duration, overloaded: Option<Duration>) {
        self.0.attempted(id, latency, overloaded);
    }
}

#[cfg(test)]
impl Outgoing {
    /// The request, for tests that answer calls themselves.
    pub fn into_request(self) -> Request {
        self.0
    }
}

#[cfg(test)]
impl Answer {
    pub fn of(answer: Result<Response, transport::Error>) -> Answer {
        Answer(answer)
    }
}
