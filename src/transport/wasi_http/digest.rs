//! `Http::digest` over WASI: downloads read through and hashed as their chunks come, several
//! at once in one `poll` loop. Nothing is kept of a file but its hash state and one chunk.

use super::{
    permanent, poll, stream_trouble, take_response, timer, transient, FutureIncomingResponse,
    Pollable, Source, StreamError, WasiHttp, CHUNK,
};
use crate::transport::{Digest, Request, StreamFailure, StreamJob};
use sha2::Digest as _;
use std::time::Instant;

/// One file being read. `wait` comes first: a pollable is dropped before what it watches.
struct Reading {
    wait: Vec<Pollable>,
    stage: Option<Stage>,
    index: usize,
    job: StreamJob,
    hash: sha2::Sha256,
    progressed: Instant,
}

enum Stage {
    AwaitSource(FutureIncomingResponse),
    Hashing(Source),
}

pub(super) fn read_through(
    http: &WasiHttp,
    downloads: &[(Request, u64)],
    concurrency: usize,
) -> Vec<Result<Digest, StreamFailure>> {
    let mut results: Vec<Option<Result<Digest, StreamFailure>>> = vec![None; downloads.len()];
    let mut queued = downloads.iter().enumerate();
    let mut active: Vec<Reading> = Vec::new();
    loop {
        while active.len() < concurrency.max(1) {
            let Some((index, (request, size))) = queued.next() else {
                break;
            };
            match Reading::start(index, request, *size, http) {
                Ok(reading) => active.push(reading),
                Err(failure) => results[index] = Some(Err(failure)),
            }
        }
        if active.is_empty() {
            break;
        }
        advance_all(&mut active, &mut results);
        if !active.is_empty() {
            wait_for_any(http, &mut active, &mut results);
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every download read"))
        .collect()
}

/// Moves every reading that is not waiting; each stops at its next wait or its end.
fn advance_all(active: &mut Vec<Reading>, results: &mut [Option<Result<Digest, StreamFailure>>]) {
    let mut i = 0;
    while i < active.len() {
        if !active[i].wait.is_empty() {
            i += 1;
            continue;
        }
        match active[i].advance() {
            Some(result) => {
                let done = active.swap_remove(i);
                results[done.index] = Some(result);
            }
            None => i += 1,
        }
    }
}

/// One `poll` for every reading, with a timer for the first to run out of time; those that
/// waited a whole timeout for their next byte end as timed out.
fn wait_for_any(
    http: &WasiHttp,
    active: &mut Vec<Reading>,
    results: &mut [Option<Result<Digest, StreamFailure>>],
) {
    let first = active
        .iter()
        .map(|r| r.progressed + http.timeout)
        .min()
        .unwrap_or_else(Instant::now);
    let timer = timer(first.saturating_duration_since(Instant::now()));
    let (owners, mut pollables): (Vec<usize>, Vec<&Pollable>) = active
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.wait.iter().map(move |p| (i, p)))
        .unzip();
    pollables.push(&timer);
    let ready = poll(&pollables);
    drop(pollables);
    for k in ready
        .into_iter()
        .map(|k| k as usize)
        .filter(|&k| k < owners.len())
    {
        let reading = &mut active[owners[k]];
        reading.wait.clear();
        reading.progressed = Instant::now();
    }
    let mut i = 0;
    while i < active.len() {
        if active[i].progressed.elapsed() < http.timeout {
            i += 1;
            continue;
        }
        let stalled = active.swap_remove(i);
        results[stalled.index] = Some(Err(transient(format!(
            "timed out: no byte for {} s from {}",
            http.timeout.as_secs_f64(),
            stalled.job.download.url.host_str().unwrap_or_default()
        ))));
    }
}

impl Reading {
    fn start(
        index: usize,
        request: &Request,
        size: u64,
        http: &WasiHttp,
    ) -> Result<Reading, StreamFailure> {
        let outgoing = http.outgoing_request(request, None)?;
        let future = super::handle(outgoing, "source", http.timeout)?;
        Ok(Reading {
            wait: Vec::new(),
            stage: Some(Stage::AwaitSource(future)),
            index,
            job: StreamJob {
                download: request.clone(),
                offset: 0,
                size,
                parts: Vec::new(),
            },
            hash: sha2::Sha256::new(),
            progressed: Instant::now(),
        })
    }

    /// Reads on until the file has to wait (sets `wait`, returns `None`) or ends.
    fn advance(&mut self) -> Option<Result<Digest, StreamFailure>> {
        loop {
            match self.stage.take().expect("reading has a stage") {
                Stage::AwaitSource(future) => match take_response(&future, "source") {
                    None => {
                        self.wait = vec![future.subscribe()];
                        self.stage = Some(Stage::AwaitSource(future));
                        return None;
                    }
                    Some(Err(failure)) => return Some(Err(failure)),
                    Some(Ok(response)) => match Source::begin(response, &self.job) {
                        Ok(source) => self.stage = Some(Stage::Hashing(source)),
                        Err(failure) => return Some(Err(failure)),
                    },
                },
                Stage::Hashing(mut source) => match source.stream.read(CHUNK) {
                    Ok(bytes) if bytes.is_empty() => {
                        self.wait = vec![source.stream.subscribe()];
                        self.stage = Some(Stage::Hashing(source));
                        return None;
                    }
                    Ok(bytes) => {
                        if let Err(failure) = source.take(bytes) {
                            return Some(Err(failure));
                        }
                        self.hash.update(&source.chunk[source.offset..]);
                        self.stage = Some(Stage::Hashing(source));
                    }
                    Err(StreamError::Closed) if source.left > 0 => {
                        return Some(Err(permanent(format!(
                            "the source ended after {} of {} bytes",
                            source.size - source.left,
                            source.size
                        ))))
                    }
                    Err(StreamError::Closed) => {
                        return Some(Ok(Digest {
                            bytes: self.job.size,
                            sha256: std::mem::take(&mut self.hash).finalize().into(),
                        }))
                    }
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Some(Err(transient(stream_trouble(
                            "reading source",
                            &e.to_debug_string(),
                        ))))
                    }
                },
            }
        }
    }
}
