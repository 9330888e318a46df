//! Metric points on their way to the destination: full log-batch requests, and the MLflow 3
//! link between a run's metric points and the logged models they belong to.

use crate::stores::model::Metric;
use std::collections::{HashMap, HashSet};

/// Most metric points one log-batch request may carry.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// Most params (or tags) one log-batch request may carry.
pub const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;

/// Collects points and hands them out in full batches, across metric keys.
#[derive(Default)]
pub struct MetricBatcher {
    pending: Vec<Metric>,
}

impl MetricBatcher {
    /// Adds a point; returns a batch when one is full.
    pub fn push(&mut self, point: Metric) -> Option<Vec<Metric>> {
        self.pending.push(point);
        (self.pending.len() == MAX_METRICS_PER_BATCH).then(|| std::mem::take(&mut self.pending))
    }

    /// The last, partial batch.
    pub fn take(&mut self) -> Option<Vec<Metric>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Which run metric points were logged for a logged model (with `model_id`, dataset name and
/// digest). OSS history pages leave these fields out; the logged model's own `data.metrics`
/// has them, so points are matched on (key, timestamp, step) — on value too, when it agrees.
#[derive(Default)]
pub struct ModelLinks {
    by_point: HashMap<(String, i64, i64), Vec<Metric>>,
}

impl ModelLinks {
    /// `metrics` are the source models' metrics, with `model_id` already mapped to the
    /// destination's id.
    pub fn new(metrics: impl IntoIterator<Item = Metric>) -> ModelLinks {
        let mut by_point: HashMap<_, Vec<Metric>> = HashMap::new();
        for m in metrics {
            by_point
                .entry((m.key.clone(), m.timestamp, m.step))
                .or_default()
                .push(m);
        }
        ModelLinks { by_point }
    }

    /// Gives `point` the model link that belongs to it, if any (each link is used once).
    pub fn link(&mut self, point: &mut Metric) {
        let Some(candidates) =
            self.by_point
                .get_mut(&(point.key.clone(), point.timestamp, point.step))
        else {
            return;
        };
        let same_value = candidates
            .iter()
            .position(|m| m.value.to_bits() == point.value.to_bits());
        let Some(index) = same_value.or((!candidates.is_empty()).then_some(0)) else {
            return;
        };
        let link = candidates.swap_remove(index);
        point.model_id = link.model_id;
        point.dataset_name = link.dataset_name;
        point.dataset_digest = link.dataset_digest;
    }

    /// Links that matched no run point.
    pub fn unmatched(&self) -> usize {
        self.by_point.values().map(Vec::len).sum()
    }
}

/// Points already at the destination (when resuming), so that they are not sent twice.
#[derive(Default)]
pub struct AlreadyCopied {
    points: HashSet<(String, u64, i64, i64)>,
}

impl AlreadyCopied {
    pub fn add(&mut self, point: &Metric) {
        self.points.insert(point.identity());
    }

    pub fn contains(&self, point: &Metric) -> bool {
        self.points.contains(&point.identity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(key: &str, value: f64, ts: i64, step: i64) -> Metric {
        Metric {
            key: key.into(),
            value,
            timestamp: ts,
            step,
            ..Metric::default()
        }
    }

    #[test]
    fn batches_are_full_except_the_last() {
        let mut b = MetricBatcher::default();
        let mut sizes = Vec::new();
        for i in 0..2500 {
            if let Some(batch) = b.push(point(if i < 1200 { "a" } else { "b" }, 1.0, i, i)) {
                sizes.push(batch.len());
            }
        }
        sizes.push(b.take().unwrap().len());
        assert_eq!(sizes, vec![1000, 1000, 500]);
        assert!(MetricBatcher::default().take().is_none());
    }

    #[test]
    fn model_links_attach_once_and_prefer_equal_values() {
        let mut linked = point("loss", 0.25, 30, 3);
        linked.model_id = Some("m-new".into());
        linked.dataset_name = Some("ds".into());
        let mut nan_link = point("acc", 0.0, 3, 3);
        nan_link.model_id = Some("m-new".into());
        let mut links = ModelLinks::new([linked, nan_link]);

        let mut p = point("loss", 0.25, 30, 3);
        links.link(&mut p);
        assert_eq!(p.model_id.as_deref(), Some("m-new"));
        assert_eq!(p.dataset_name.as_deref(), Some("ds"));
        let mut again = point("loss", 0.25, 30, 3);
        links.link(&mut again);
        assert_eq!(again.model_id, None, "a link is used once");

        // The server may report a NaN point's model metric as 0.0: still the same point.
        let mut nan = point("acc", f64::NAN, 3, 3);
        links.link(&mut nan);
        assert_eq!(nan.model_id.as_deref(), Some("m-new"));
        let mut other = point("loss", 0.25, 31, 3);
        links.link(&mut other);
        assert_eq!(other.model_id, None);
        assert_eq!(links.unmatched(), 0);
    }

    #[test]
    fn already_copied_points_are_recognised_including_nan() {
        let mut seen = AlreadyCopied::default();
        seen.add(&point("a", f64::NAN, 1, 1));
        assert!(seen.contains(&point("a", f64::NAN, 1, 1)));
        assert!(!seen.contains(&point("a", 0.0, 1, 1)));
        assert!(!seen.contains(&point("a", f64::NAN, 1, 2)));
    }
}
