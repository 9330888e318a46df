//! What a copy reports while it runs. The command line prints these to stderr; the HTTP
//! function can stream them as NDJSON.

use crate::api::MigrationItem;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A step of the copy begins.
    Phase { phase: String },
    /// Something noteworthy that did not stop the copy.
    Warning { message: String },
    /// Artifact transfer progress; sent when a file completes and every few MiB.
    Artifacts {
        files_done: u64,
        files_total: u64,
        bytes_done: u64,
        bytes_total: u64,
    },
    /// A bulk copy finished one of its items (`done` of `total`): the item, the bytes and
    /// metric points written so far, and the time the rest should take at this pace.
    Item {
        done: u64,
        total: u64,
        item: MigrationItem,
        bytes_done: u64,
        points_done: u64,
        eta_seconds: Option<f64>,
    },
}

pub trait Progress {
    fn event(&mut self, event: Event);
}

/// Discards events (for callers that only want the result).
pub struct Silent;

impl Progress for Silent {
    fn event(&mut self, _: Event) {}
}

/// Human-readable lines, as the command line prints them.
pub fn human_line(event: &Event) -> String {
    match event {
        Event::Phase { phase } => format!("[mlflow-copy] {phase}"),
        Event::Warning { message } => format!("[mlflow-copy] warning: {message}"),
        Event::Artifacts {
            files_done,
            files_total,
            bytes_done,
            bytes_total,
        } => format!(
            "[mlflow-copy] artifacts: {files_done}/{files_total} files, {} / {}",
            human_bytes(*bytes_done),
            human_bytes(*bytes_total)
        ),
        Event::Item {
            done,
            total,
            item,
            bytes_done,
            points_done,
            eta_seconds,
        } => {
            let dst = item.dst_id.as_deref().unwrap_or("-");
            let eta = eta_seconds.map_or(String::new(), |s| format!(", ETA {}", human_seconds(s)));
            let why = match (&item.error, &item.detail) {
                (Some(e), _) => format!(": {}", e.message),
                (None, Some(detail)) => format!(" ({detail})"),
                (None, None) => String::new(),
            };
            format!(
                "[mlflow-copy] {done}/{total} {} -> {dst}: {}{why} [{} and {points_done} points so far{eta}]",
                item.src_id,
                item.status.as_str(),
                human_bytes(*bytes_done)
            )
        }
    }
}

fn human_seconds(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", (s + 30) / 60),
        _ => format!("{:.1} h", seconds / 3600.0),
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_output() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
        let e = Event::Artifacts {
            files_done: 1,
            files_total: 4,
            bytes_done: 2048,
            bytes_total: 4096,
        };
        assert_eq!(
            human_line(&e),
            "[mlflow-copy] artifacts: 1/4 files, 2.0 KiB / 4.0 KiB"
        );
        assert_eq!(
            serde_json::to_string(&Event::Phase {
                phase: "params".into()
            })
            .unwrap(),
            r#"{"event":"phase","phase":"params"}"#
        );
    }
}
