//! Creates that never make a duplicate. A create is not retried blindly: when its answer was
//! lost or was a 500/502/504 (`MAYBE_CREATED`), the server may have carried it out, so the
//! engine first looks for what it would have made (by lineage tags or name) and sends it again
//! only when nothing is there.

use super::Copier;
use crate::api::{CopyError, MAYBE_CREATED};

/// Runs `create`; after an uncertain failure, waits as before a retry (`Scheduler`), returns
/// what `find` finds, or tries again (within the attempts a request gets).
pub fn create_once<T>(
    c: &Copier,
    mut create: impl FnMut() -> Result<T, CopyError>,
    mut find: impl FnMut() -> Result<Option<T>, CopyError>,
) -> Result<T, CopyError> {
    let mut retry = 0;
    loop {
        let error = match create() {
            Err(e) if e.has_code(MAYBE_CREATED) => e,
            done => return done,
        };
        if !c.scheduler.pause_before_retry(retry) {
            return Err(error);
        }
        retry += 1;
        match find() {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            // Nothing can be known for sure: the create's own failure is the one to report.
            Err(_) => return Err(error),
        }
    }
}
