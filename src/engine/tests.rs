//! The engine's steps on in-memory stores (`stores::fake`): a faithful run copy, resume from
//! every half-done state, model-version copies, and the failure paths.

use super::progress::{Event, Progress};
use super::{copy_model_version::copy_model_version, copy_run::copy_run, lineage, Copier};
use crate::api::{CopyError, CopyModelVersionRequest, CopyRunRequest, ErrorKind, Outcome};
use crate::stores::fake::{FakeHttp, FakeServer};
use crate::stores::model::*;
use crate::stores::{Registry, Scheduler, Tracking};
use crate::transport::retry::RetryPolicy;
use crate::transport::Transport;
use std::rc::Rc;
use std::time::Duration;

/// Events a copy reported.
#[derive(Default)]
pub(super) struct Recorded(pub(super) Vec<Event>);

impl Progress for Recorded {
    fn event(&mut self, event: Event) {
        self.0.push(event);
    }
}

impl Recorded {
    fn warnings(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message } => Some(message.as_str()),
                _ => None,
            })
            .collect()
    }
}

pub(super) struct World {
    pub(super) src: Rc<FakeServer>,
    pub(super) dst: Rc<FakeServer>,
    pub(super) transport: Rc<Transport>,
}

pub(super) fn world() -> World {
    let (src, dst) = (FakeServer::new("src"), FakeServer::new("dst"));
    let http = FakeHttp {
        servers: vec![src.clone(), dst.clone()],
    };
    let policy = RetryPolicy::without_waits();
    let transport = Rc::new(Transport::new(Box::new(http), policy));
    World {
        src,
        dst,
        transport,
    }
}

impl World {
    pub(super) fn copier<'p>(
        &self,
        dst: &Rc<FakeServer>,
        progress: &'p mut Recorded,
    ) -> Copier<'p> {
        Copier {
            src: self.src.stores(),
            dst: dst.stores(),
            scheduler: Scheduler::new(self.transport.clone()),
            progress,
            concurrency: 4,
            alive_poll: Duration::ZERO,
        }
    }

    fn copy_run(&self, run_id: &str) -> Result<crate::api::CopyRunReport, CopyError> {
        self.copy_run_with(run_id, false, &mut Recorded::default())
    }

    fn copy_run_with(
        &self,
        run_id: &str,
        copy_children: bool,
        progress: &mut Recorded,
    ) -> Result<crate::api::CopyRunReport, CopyError> {
        let request = CopyRunRequest {
            run_id: run_id.into(),
            experiment_name: "copies".into(),
            src_mlflow_uri: "http://src".into(),
            dst_mlflow_uri: "http://dst".into(),
            copy_children,
            concurrency: 4,
        };
        copy_run(&mut self.copier(&self.dst, progress), &request)
            .map_err(|e| CopyError::from_chain(&e))
    }
}

pub(super) fn point(key: &str, value: f64, step: i64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp: 1_700_000_000_000 + step,
        step,
        ..Metric::default()
    }
}

const MLMODEL: &str = "artifact_path: model\nrun_id: RUN\nflavors: {}\n";

/// A finished source run with 150 params, 2,600 metric points (one NaN), a dataset, a logged
/// model it produced (with a linked metric) and artifacts of both.
pub(super) fn seed_run(src: &FakeServer) -> String {
    let exp = src.create_experiment("source").unwrap();
    let mut run = Run::default();
    run.info.run_name = Some("training".into());
    run.info.user_id = Some("alice".into());
    run.info.status = Some("FINISHED".into());
    run.info.start_time = Some(1_700_000_000_000);
    run.info.end_time = Some(1_700_000_999_000);
    run.data.params = (0..150)
        .map(|i| KeyValue::new(format!("p{i}"), format!("v{i}")))
        .collect();
    run.data.tags = vec![
        KeyValue::new("mlflow.user", "alice"),
        KeyValue::new("team", "ml"),
    ];
    run.inputs.dataset_inputs = vec![DatasetInput {
        tags: vec![KeyValue::new("mlflow.data.context", "train")],
        dataset: Dataset {
            name: "wine".into(),
            digest: "d1".into(),
            source_type: "code".into(),
            source: "{}".into(),
            ..Dataset::default()
        },
    }];
    let mut history: Vec<Metric> = (0..2500)
        .map(|i| point("loss", 1.0 / (i + 1) as f64, i))
        .collect();
    history.extend((0..99).map(|i| point("acc", i as f64 / 100.0, i)));
    history.push(point("acc", f64::NAN, 99));
    let run_id = src.add_run(&exp, run, history);
    let run = src.run(&run_id);
    src.put_file(&run.info.artifact_uri, "a.txt", b"hello");
    src.put_file(&run.info.artifact_uri, "dir/empty", b"");
    src.put_file(
        &run.info.artifact_uri,
        "model/MLmodel",
        MLMODEL.replace("RUN", &run_id).as_bytes(),
    );

    let model = src
        .create_logged_model(
            &exp,
            &NewLoggedModel {
                name: "clf".into(),
                model_type: Some("sklearn".into()),
                params: vec![KeyValue::new("C", "1.0")],
                tags: vec![KeyValue::new("stage", "dev")],
                source_run_id: Some(run_id.clone()),
            },
        )
        .unwrap();
    let model_id = model.info.model_id.clone();
    src.finalize_logged_model(&model_id, "LOGGED_MODEL_READY")
        .unwrap();
    {
        let mut state = src.state.borrow_mut();
        let m = state
            .models
            .iter_mut()
            .find(|m| m.info.model_id == model_id)
            .unwrap();
        let mut linked = point("acc", 0.98, 98);
        linked.model_id = Some(model_id.clone());
        linked.run_id = Some(run_id.clone());
        m.data.metrics.push(linked);
        let run = state
            .runs
            .iter_mut()
            .find(|r| r.info.run_id == run_id)
            .unwrap();
        run.outputs.model_outputs.push(ModelOutput {
            model_id: model_id.clone(),
            step: 7,
        });
    }
    let mlmodel = format!(
        "artifact_path: {}\nmodel_id: {model_id}\nrun_id: {run_id}\n",
        model.info.artifact_uri
    );
    src.put_file(&model.info.artifact_uri, "MLmodel", mlmodel.as_bytes());
    src.put_file(&model.info.artifact_uri, "model.pkl", &[7u8; 3000]);
    src.state.borrow_mut().writes.clear();
    run_id
}

/// The destination's copy of a source run (the one active run carrying its lineage).
pub(super) fn the_copy(dst: &FakeServer, src_run_id: &str) -> Run {
    let state = dst.state.borrow();
    let copies: Vec<&Run> = state
        .runs
        .iter()
        .filter(|r| r.data.tag(lineage::SRC_RUN_ID) == Some(src_run_id) && !r.info.is_deleted())
        .collect();
    assert_eq!(copies.len(), 1, "exactly one copy of {src_run_id}");
    copies[0].clone()
}

fn assert_faithful(w: &World, src_run_id: &str) -> Run {
    let src = w.src.run(src_run_id);
    let dst = w.dst.run(&the_copy(&w.dst, src_run_id).info.run_id);
    let dst_id = dst.info.run_id.as_str();
    assert_eq!(dst.info.run_name, src.info.run_name);
    assert_eq!(dst.info.user_id, src.info.user_id);
    assert_eq!(dst.info.status, src.info.status);
    assert_eq!(dst.info.start_time, src.info.start_time);
    assert_eq!(dst.info.end_time, src.info.end_time);
    assert_eq!(dst.data.params, src.data.params);
    for tag in &src.data.tags {
        assert_eq!(
            dst.data.tag(&tag.key),
            Some(tag.value.as_str()),
            "{}",
            tag.key
        );
    }
    assert_eq!(dst.data.tag(lineage::SRC_TRACKING_URI), Some("http://src"));
    assert_eq!(
        dst.data.tag(lineage::INCOMPLETE),
        None,
        "the copy is marked complete"
    );
    assert_eq!(dst.inputs.dataset_inputs, src.inputs.dataset_inputs);
    for key in ["loss", "acc"] {
        let identity = |h: Vec<Metric>| h.iter().map(Metric::identity).collect::<Vec<_>>();
        assert_eq!(
            identity(w.dst.history(dst_id, key)),
            identity(w.src.history(src_run_id, key)),
            "history of {key}"
        );
    }
    // Artifacts: bytes equal, MLmodel ids re-pointed at the copy.
    assert_eq!(
        w.dst.file(&dst.info.artifact_uri, "a.txt").unwrap(),
        b"hello"
    );
    assert_eq!(
        w.dst.file(&dst.info.artifact_uri, "dir/empty").unwrap(),
        b""
    );
    let mlmodel = w.dst.file(&dst.info.artifact_uri, "model/MLmodel").unwrap();
    assert_eq!(
        String::from_utf8(mlmodel).unwrap(),
        MLMODEL.replace("RUN", dst_id)
    );
    // The logged model: recreated, finalized, linked, its files copied.
    let models = w.dst.state.borrow().models.clone();
    assert_eq!(models.len(), 1, "one logged model copy");
    let model = &models[0].info;
    assert_eq!(
        (model.name.as_str(), model.model_type.as_deref()),
        ("clf", Some("sklearn"))
    );
    assert_eq!(model.status.as_deref(), Some("LOGGED_MODEL_READY"));
    assert_eq!(model.source_run_id.as_deref(), Some(dst_id));
    assert_eq!(model.tag("stage"), Some("dev"));
    assert!(model.tag(lineage::SRC_MODEL_ID).is_some());
    assert_eq!(models[0].data.params, vec![KeyValue::new("C", "1.0")]);
    assert_eq!(
        dst.outputs.model_outputs,
        vec![ModelOutput {
            model_id: model.model_id.clone(),
            step: 7
        }]
    );
    let pkl = w.dst.file(&model.artifact_uri, "model.pkl").unwrap();
    assert_eq!(pkl, vec![7u8; 3000]);
    let mlmodel = String::from_utf8(w.dst.file(&model.artifact_uri, "MLmodel").unwrap()).unwrap();
    assert_eq!(
        mlmodel,
        format!(
            "artifact_path: {}\nmodel_id: {}\nrun_id: {dst_id}\n",
            model.artifact_uri, model.model_id
        )
    );
    let linked: Vec<Metric> = w.dst.state.borrow().history[dst_id]
        .iter()
        .filter(|m| m.model_id.is_some())
        .cloned()
        .collect();
    assert_eq!(linked.len(), 1, "the model's metric point is linked");
    assert_eq!(
        (linked[0].step, linked[0].model_id.as_deref()),
        (98, Some(model.model_id.as_str()))
    );
    dst
}

#[test]
fn a_run_is_copied_faithfully_in_full_batches() {
    let w = world();
    let run_id = seed_run(&w.src);
    let report = w.copy_run(&run_id).unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert_eq!(
        (report.params, report.metric_points, report.dataset_inputs),
        (150, 2600, 1)
    );
    assert_eq!(
        (
            report.logged_models,
            report.artifact_files,
            report.artifact_files_skipped
        ),
        (1, 5, 0)
    );
    let source_bytes: usize = w.src.state.borrow().files.values().map(Vec::len).sum();
    assert_eq!(report.artifact_bytes, source_bytes as u64);
    let dst = assert_faithful(&w, &run_id);
    assert_eq!(report.dst_run_id, dst.info.run_id);
    // Full log-batch requests, across keys: 2,600 points in 1000 + 1000 + 600.
    assert_eq!(w.dst.state.borrow().metric_batches, vec![1000, 1000, 600]);
    assert!(w.src.writes() == 0, "the source is never written");
}

/// A source run with `keys` metrics of different lengths, spanning several history pages.
fn seed_long_histories(src: &FakeServer, keys: usize) -> String {
    let exp = src.create_experiment("long").unwrap();
    let mut run = Run::default();
    run.info.status = Some("FINISHED".into());
    let history = (0..keys)
        .flat_map(|k| (0..(k * 611) as i64).map(move |i| point(&format!("m{k}"), i as f64, i)))
        .collect();
    src.add_run(&exp, run, history)
}

#[test]
fn long_histories_are_written_once_each_in_source_order_and_full_batches() {
    let w = world();
    let run_id = seed_long_histories(&w.src, 8);
    let report = w.copy_run(&run_id).unwrap();
    let total: usize = (0..8).map(|k| k * 611).sum();
    assert_eq!(report.metric_points, total as u64);
    for k in 1..8 {
        let key = format!("m{k}");
        let steps = |h: Vec<Metric>| h.iter().map(|m| m.step).collect::<Vec<_>>();
        assert_eq!(
            steps(w.dst.history(&report.dst_run_id, &key)),
            steps(w.src.history(&run_id, &key)),
            "every point of {key} once, in order"
        );
    }
    let batches = w.dst.state.borrow().metric_batches.clone();
    assert_eq!(batches.len(), total.div_ceil(1000));
    assert!(batches[..batches.len() - 1].iter().all(|&n| n == 1000));
}

#[test]
fn a_metric_pipeline_broken_mid_way_leaves_the_copy_incomplete_and_a_re_run_completes_it() {
    // The source stops answering history reads after a few pages, then the destination stops
    // taking batches: each time the copy is FAILED and incomplete, and the next run goes on.
    let w = world();
    let run_id = seed_long_histories(&w.src, 8);
    w.src.fail("get_history", 5);
    let err = w.copy_run(&run_id).unwrap_err();
    assert!(
        err.message.contains("copying the history of metric"),
        "{}",
        err.message
    );
    w.dst.fail("log_metric_batch", 4);
    let err = w.copy_run(&run_id).unwrap_err();
    assert!(err.message.contains("copying metrics"), "{}", err.message);
    let broken = the_copy(&w.dst, &run_id);
    assert_eq!(broken.info.status.as_deref(), Some("FAILED"));
    assert_eq!(broken.data.tag(lineage::INCOMPLETE), Some("true"));

    let resumed = w.copy_run(&run_id).unwrap();
    assert_eq!(resumed.outcome, Outcome::Resumed);
    for k in 1..8 {
        let key = format!("m{k}");
        let mut steps: Vec<i64> = w
            .dst
            .history(&resumed.dst_run_id, &key)
            .iter()
            .map(|m| m.step)
            .collect();
        steps.sort();
        assert_eq!(
            steps,
            (0..(k * 611) as i64).collect::<Vec<_>>(),
            "{key}: every point exactly once"
        );
    }
    assert_eq!(
        the_copy(&w.dst, &run_id).data.tag(lineage::INCOMPLETE),
        None
    );
}

#[test]
fn a_second_copy_finds_the_first_and_writes_nothing() {
    let w = world();
    let run_id = seed_run(&w.src);
    let first = w.copy_run(&run_id).unwrap();
    let writes = w.dst.writes();
    let again = w.copy_run(&run_id).unwrap();
    assert_eq!(again.outcome, Outcome::Existing);
    assert_eq!(again.dst_run_id, first.dst_run_id);
    assert_eq!(w.dst.writes(), writes);
}

#[test]
fn a_copy_interrupted_at_any_step_is_marked_failed_and_resumed_by_the_same_command() {
    for (op, succeed_first) in [
        ("log_batch", 1),
        ("log_inputs", 0),
        ("create_logged_model", 0),
        ("log_metric_batch", 1),
        ("log_outputs", 0),
        ("upload", 2),
        ("write_small", 1),
        ("finalize_logged_model", 0),
        ("update_run", 0),
        ("delete_tag", 0),
    ] {
        let w = world();
        let run_id = seed_run(&w.src);
        w.dst.fail(op, succeed_first);
        let err = w.copy_run(&run_id).unwrap_err();
        assert!(
            err.message.contains(&format!("injected failure of {op}")),
            "{op}: {}",
            err.message
        );
        assert!(
            err.message.contains("re-run the same command"),
            "{op}: {}",
            err.message
        );
        let broken = the_copy(&w.dst, &run_id);
        assert_eq!(broken.info.status.as_deref(), Some("FAILED"), "{op}");
        assert_eq!(broken.data.tag(lineage::INCOMPLETE), Some("true"), "{op}");

        let resumed = w.copy_run(&run_id).unwrap();
        assert_eq!(resumed.outcome, Outcome::Resumed, "{op}");
        assert_eq!(resumed.dst_run_id, broken.info.run_id, "{op}");
        assert_faithful(&w, &run_id);
    }
}

#[test]
fn a_copy_of_a_copy_carries_the_lineage_of_its_immediate_source() {
    let w = world();
    let run_id = seed_run(&w.src);
    let first = w.copy_run(&run_id).unwrap();
    let first_model = w.dst.state.borrow().models[0].info.model_id.clone();
    // The copy goes back to the first server, into another experiment.
    let request = CopyRunRequest {
        run_id: first.dst_run_id.clone(),
        experiment_name: "second hop".into(),
        src_mlflow_uri: "http://dst".into(),
        dst_mlflow_uri: "http://src".into(),
        copy_children: false,
        concurrency: 2,
    };
    let hop = |progress: &mut Recorded| {
        let mut c = Copier {
            src: w.dst.stores(),
            dst: w.src.stores(),
            scheduler: Scheduler::new(w.transport.clone()),
            progress,
            concurrency: 2,
            alive_poll: Duration::ZERO,
        };
        copy_run(&mut c, &request).map_err(|e| CopyError::from_chain(&e))
    };
    let second = hop(&mut Recorded::default()).unwrap();
    assert_eq!(second.outcome, Outcome::Created);
    let copy = w.src.run(&second.dst_run_id);
    assert_eq!(
        copy.data.tag(lineage::SRC_RUN_ID),
        Some(first.dst_run_id.as_str())
    );
    assert_eq!(copy.data.tag(lineage::SRC_TRACKING_URI), Some("http://dst"));
    assert_eq!(copy.data.tag(lineage::INCOMPLETE), None);
    let models = w
        .src
        .logged_models_of_run(&copy.info.experiment_id, &copy.info.run_id)
        .unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(
        models[0].info.tag(lineage::SRC_MODEL_ID),
        Some(first_model.as_str())
    );
    assert_eq!(
        hop(&mut Recorded::default()).unwrap().outcome,
        Outcome::Existing
    );
}

#[test]
fn a_copy_left_without_its_final_status_is_resumed_not_reported_existing() {
    // The state a lost answer to the last write leaves: the mark is gone, but the run was then
    // marked FAILED by the attempt that saw the failure.
    let w = world();
    let run_id = seed_run(&w.src);
    let first = w.copy_run(&run_id).unwrap();
    w.dst.update_run(&first.dst_run_id, "FAILED", None).unwrap();
    let again = w.copy_run(&run_id).unwrap();
    assert_eq!(again.outcome, Outcome::Resumed);
    assert_eq!(again.dst_run_id, first.dst_run_id);
    assert_faithful(&w, &run_id);
}

/// A copy of `src_run_id` as an identical command started at the same moment makes it.
fn sibling_copy(w: &World, src_run_id: &str, status: &str, complete: bool) -> Run {
    let src = w.src.run(src_run_id);
    // As the identical command's create_run made it.
    let mut run = Run::default();
    run.info.run_name = src.info.run_name.clone();
    run.info.start_time = src.info.start_time;
    run.info.user_id = src.info.user_id.clone();
    run.info.status = Some(status.into());
    run.info.end_time = src.info.end_time;
    run.data.tags = vec![
        KeyValue::new(lineage::SRC_RUN_ID, src_run_id),
        KeyValue::new(lineage::SRC_TRACKING_URI, "http://src"),
    ];
    if !complete {
        run.data
            .tags
            .push(KeyValue::new(lineage::INCOMPLETE, "true"));
    }
    run
}

/// The copies of `src_run_id` in the destination experiment that are not deleted.
fn active_copies(w: &World, experiment_id: &str, src_run_id: &str) -> Vec<Run> {
    w.dst
        .runs_with_tags(experiment_id, &[(lineage::SRC_RUN_ID, src_run_id)])
        .unwrap()
}

#[test]
fn identical_copies_started_together_converge_on_one() {
    // The sibling created its run first (a lower id) and finished: this copy steps aside.
    let w = world();
    let run_id = seed_run(&w.src);
    let exp = w.dst.create_experiment("copies").unwrap();
    w.dst
        .race_next_create(&exp, sibling_copy(&w, &run_id, "FINISHED", true));
    let report = w.copy_run(&run_id).unwrap();
    assert_eq!(report.outcome, Outcome::Existing);
    let active = active_copies(&w, &exp, &run_id);
    assert_eq!(active.len(), 1, "the loser deleted its own run");
    assert_eq!(active[0].info.run_id, report.dst_run_id);

    // The sibling failed: this copy resumes it, and there is one faithful copy.
    let w = world();
    let run_id = seed_run(&w.src);
    let exp = w.dst.create_experiment("copies").unwrap();
    w.dst
        .race_next_create(&exp, sibling_copy(&w, &run_id, "FAILED", false));
    let report = w.copy_run(&run_id).unwrap();
    assert_eq!(report.outcome, Outcome::Resumed);
    assert_faithful(&w, &run_id);
    let active = active_copies(&w, &exp, &run_id);
    assert_eq!(active.len(), 1);
}

#[test]
fn a_racing_copy_that_completed_first_is_kept_and_this_one_removed() {
    // The sibling's create landed after this copy's first look, and it finished first: this
    // copy removes its run and the logged models it made, and reports the sibling's.
    let w = world();
    let run_id = seed_run(&w.src);
    let exp = w.dst.create_experiment("copies").unwrap();
    let sibling = sibling_copy(&w, &run_id, "FINISHED", true);
    w.dst.race_before("finalize_logged_model", &exp, sibling);
    let report = w.copy_run(&run_id).unwrap();
    assert_eq!(report.outcome, Outcome::Existing);
    let active = active_copies(&w, &exp, &run_id);
    assert_eq!(active.len(), 1, "the loser deleted its own run");
    assert_eq!(active[0].info.run_id, report.dst_run_id);
    assert!(
        w.dst.state.borrow().models.is_empty(),
        "the loser's logged models are removed with its run"
    );
    assert_eq!(
        w.dst.writes_of("delete_tag"),
        0,
        "the loser never marked itself complete"
    );
}

#[test]
fn a_copy_being_written_that_its_writer_deletes_is_not_resumed() {
    // Another command is writing an incomplete copy, then steps aside for a copy this command
    // cannot see yet and deletes it: this command looks again instead of resuming it.
    let w = world();
    let run_id = seed_run(&w.src);
    let exp = w.dst.create_experiment("copies").unwrap();
    let other = w.dst.add_run(
        &exp,
        sibling_copy(&w, &run_id, "RUNNING", false),
        Vec::new(),
    );
    w.dst.vanish_on_next_look(&other);
    let report = w.copy_run(&run_id).unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert_ne!(report.dst_run_id, other);
    assert!(w.dst.run(&other).info.is_deleted());
    assert_faithful(&w, &run_id);
}

#[test]
fn a_resumed_copy_skips_files_already_in_place() {
    let w = world();
    let run_id = seed_run(&w.src);
    w.dst.fail("update_run", 0);
    w.copy_run(&run_id).unwrap_err();
    let uploads_before = w.dst.writes_of("upload");
    let resumed = w.copy_run(&run_id).unwrap();
    let uploads_after = w.dst.writes_of("upload");
    assert_eq!(
        resumed.artifact_files_skipped, 3,
        "a.txt, dir/empty, model.pkl"
    );
    assert_eq!(uploads_after, uploads_before, "nothing streamed again");
}

#[test]
fn source_failures_leave_nothing_at_the_destination() {
    let w = world();
    let run_id = seed_run(&w.src);
    let err = w.copy_run("run-unknown").unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message
            .contains("source run run-unknown not found on http://src"),
        "{}",
        err.message
    );

    w.src.state.borrow_mut().runs[0].info.lifecycle_stage = "deleted".into();
    let err = w.copy_run(&run_id).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("is deleted"), "{}", err.message);

    // An unsafe artifact path is refused, not renamed, before anything is written.
    w.src.state.borrow_mut().runs[0].info.lifecycle_stage = "active".into();
    let root = w.src.run(&run_id).info.artifact_uri;
    w.src.put_file(&root, "../escape", b"x");
    let err = w.copy_run(&run_id).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Upstream);
    assert!(
        err.message.contains("unsafe artifact path \"../escape\""),
        "{}",
        err.message
    );
    assert_eq!(w.dst.writes(), 0);
}

#[test]
fn a_deleted_destination_experiment_is_a_conflict() {
    let w = world();
    let run_id = seed_run(&w.src);
    w.dst.create_experiment("copies").unwrap();
    w.dst.state.borrow_mut().experiments[0].lifecycle_stage = "deleted".into();
    let err = w.copy_run(&run_id).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(w.dst.state.borrow().runs.is_empty());
}

#[test]
fn child_runs_are_nested_under_the_copy_of_their_parent() {
    let w = world();
    let parent = seed_run(&w.src);
    let exp = w.src.run(&parent).info.experiment_id;
    let mut child = Run::default();
    child.info.status = Some("FINISHED".into());
    child.data.tags = vec![KeyValue::new(lineage::PARENT_RUN_ID, &parent)];
    let child = w.src.add_run(&exp, child, vec![point("x", 1.0, 0)]);
    let report = w
        .copy_run_with(&parent, true, &mut Recorded::default())
        .unwrap();
    assert_eq!(report.child_run_ids.len(), 1);
    let copy = the_copy(&w.dst, &child);
    assert_eq!(copy.info.run_id, report.child_run_ids[0]);
    assert_eq!(
        copy.data.tag(lineage::PARENT_RUN_ID),
        Some(report.dst_run_id.as_str())
    );

    // A child copied alone is not nested, and says why.
    let w2 = world();
    let parent = seed_run(&w2.src);
    let exp = w2.src.run(&parent).info.experiment_id;
    let mut orphan = Run::default();
    orphan.data.tags = vec![KeyValue::new(lineage::PARENT_RUN_ID, &parent)];
    let orphan = w2.src.add_run(&exp, orphan, Vec::new());
    let mut progress = Recorded::default();
    w2.copy_run_with(&orphan, false, &mut progress).unwrap();
    assert_eq!(
        the_copy(&w2.dst, &orphan).data.tag(lineage::PARENT_RUN_ID),
        None
    );
    assert!(progress.warnings().iter().any(|m| m.contains("not nested")));
}

/// A registered model `wine` whose version 1 comes from the seeded run's logged model, with
/// a stage, an alias, tags and a grant.
pub(super) fn seed_version(src: &FakeServer) -> String {
    let run_id = seed_run(src);
    let model_id = src.state.borrow().models[0].info.model_id.clone();
    src.create_registered_model("wine", Some("wine model"), &[KeyValue::new("owner", "ml")])
        .unwrap();
    let new = NewVersion {
        source: format!("models:/{model_id}"),
        run_id: Some(run_id.clone()),
        model_id: Some(model_id),
        description: Some("first".into()),
        tags: vec![
            KeyValue::new("validated", "yes"),
            KeyValue::new("mlflow_exim.src_version.name", "older"),
        ],
        ..NewVersion::default()
    };
    let version = src.create_model_version("wine", &new).unwrap();
    src.transition_stage("wine", &version.version, "Production")
        .unwrap();
    src.set_alias("wine", "champion", &version.version).unwrap();
    let mut state = src.state.borrow_mut();
    state.users = vec!["bob".into()];
    state.grants = Some(vec![
        (
            "wine".into(),
            Grant {
                principal: "bob".into(),
                permission: "EDIT".into(),
            },
        ),
        (
            "wine".into(),
            Grant {
                principal: "ghost".into(),
                permission: "READ".into(),
            },
        ),
    ]);
    state.writes.clear();
    run_id
}

pub(super) fn version_request(deep: bool) -> CopyModelVersionRequest {
    CopyModelVersionRequest {
        src_model: "wine".into(),
        src_version: "1".into(),
        dst_model: "wine-prod".into(),
        src_registry_uri: "http://src".into(),
        dst_registry_uri: "http://dst".into(),
        dst_experiment_name: deep.then(|| "copies".to_string()),
        copy_permissions: true,
        copy_stages_and_aliases: true,
        copy_lineage_tags: true,
        concurrency: 4,
    }
}

#[test]
fn a_deep_version_copy_points_at_the_copied_model_with_stage_alias_tags_and_grants() {
    let w = world();
    let run_id = seed_version(&w.src);
    w.dst.state.borrow_mut().users = vec!["bob".into()];
    w.dst.state.borrow_mut().grants = Some(Vec::new());
    let mut progress = Recorded::default();
    let report = copy_model_version(&mut w.copier(&w.dst, &mut progress), &version_request(true))
        .map_err(|e| CopyError::from_chain(&e))
        .unwrap();
    assert_eq!(
        (report.outcome, report.registered_model_created),
        (Outcome::Created, true)
    );
    let copy = assert_faithful(&w, &run_id);
    let model_copy = w.dst.state.borrow().models[0].info.model_id.clone();
    let version = w
        .dst
        .model_version("wine-prod", &report.dst_version)
        .unwrap();
    assert_eq!(version.source, format!("models:/{model_copy}"));
    assert_eq!(version.model_id.as_deref(), Some(model_copy.as_str()));
    assert_eq!(
        report.dst_run_id.as_deref(),
        Some(copy.info.run_id.as_str())
    );
    assert_eq!(version.description.as_deref(), Some("first"));
    assert_eq!(version.current_stage.as_deref(), Some("Production"));
    let tag = |k: &str| {
        version
            .tags
            .iter()
            .find(|t| t.key == k)
            .map(|t| t.value.clone())
    };
    assert_eq!(tag("validated").as_deref(), Some("yes"));
    assert_eq!(
        tag("mlflow_exim.src_version.name").as_deref(),
        Some("wine"),
        "lineage replaced"
    );
    assert_eq!(tag("mlflow_exim.src_version.run_id"), Some(run_id.clone()));
    assert_eq!(
        tag("mlflow_exim.src_run.mlflow.user").as_deref(),
        Some("alice")
    );
    let registered = w.dst.registered_model("wine-prod").unwrap().unwrap();
    assert_eq!(registered.description.as_deref(), Some("wine model"));
    assert_eq!(registered.tags, vec![KeyValue::new("owner", "ml")]);
    assert_eq!(
        registered.aliases,
        vec![RegisteredModelAlias {
            alias: "champion".into(),
            version: "1".into()
        }]
    );
    assert_eq!(report.permissions, 1);
    assert_eq!(
        w.dst.model_grants("wine-prod").unwrap().unwrap(),
        vec![Grant {
            principal: "bob".into(),
            permission: "EDIT".into()
        }]
    );
    assert!(
        progress.warnings().iter().any(|m| m.contains("ghost")),
        "a missing user is a warning"
    );

    // The same command again finds the copy and writes nothing.
    let writes = w.dst.writes();
    let again = copy_model_version(
        &mut w.copier(&w.dst, &mut Recorded::default()),
        &version_request(true),
    )
    .unwrap();
    assert_eq!(
        (again.outcome, again.dst_version),
        (Outcome::Existing, report.dst_version)
    );
    assert_eq!(w.dst.writes(), writes);
}

#[test]
fn a_version_found_from_an_interrupted_copy_gets_what_it_lacks() {
    let w = world();
    seed_version(&w.src);
    w.dst.state.borrow_mut().users = vec!["bob".into()];
    let copy = || {
        copy_model_version(
            &mut w.copier(&w.dst, &mut Recorded::default()),
            &version_request(true),
        )
        .map_err(|e| CopyError::from_chain(&e))
    };
    let first = copy().unwrap();
    // As if the answer to model-versions/create had been lost: no tags, stage or alias yet.
    {
        let mut state = w.dst.state.borrow_mut();
        let v = state
            .versions
            .iter_mut()
            .find(|v| v.name == "wine-prod")
            .unwrap();
        v.tags.clear();
        v.current_stage = Some("None".into());
        state.registered.iter_mut().for_each(|m| m.aliases.clear());
    }
    let again = copy().unwrap();
    assert_eq!(
        (again.outcome, &again.dst_version),
        (Outcome::Resumed, &first.dst_version)
    );
    let version = w
        .dst
        .model_version("wine-prod", &first.dst_version)
        .unwrap();
    assert_eq!(version.current_stage.as_deref(), Some("Production"));
    assert!(version.tags.iter().any(|t| t.key == "validated"));
    assert!(version
        .tags
        .iter()
        .any(|t| t.key == "mlflow_exim.src_version.version" && t.value == "1"));
    let aliases = w
        .dst
        .registered_model("wine-prod")
        .unwrap()
        .unwrap()
        .aliases;
    assert_eq!(aliases.len(), 1);
    assert_eq!(
        w.dst.versions("wine-prod").unwrap().len(),
        1,
        "no second version"
    );
    assert_eq!(copy().unwrap().outcome, Outcome::Existing);
}

#[test]
fn a_shallow_copy_stays_on_its_server_and_is_refused_across_servers() {
    let w = world();
    seed_version(&w.src);
    let err = copy_model_version(
        &mut w.copier(&w.dst, &mut Recorded::default()),
        &version_request(false),
    )
    .map_err(|e| CopyError::from_chain(&e))
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(
        err.message.contains("--dst-experiment-name"),
        "{}",
        err.message
    );
    assert_eq!(w.dst.writes(), 0, "nothing created");

    let mut request = version_request(false);
    request.dst_registry_uri = "http://src".into();
    let report =
        copy_model_version(&mut w.copier(&w.src, &mut Recorded::default()), &request).unwrap();
    let version = w
        .src
        .model_version("wine-prod", &report.dst_version)
        .unwrap();
    assert_eq!(
        version.source,
        w.src.model_version("wine", "1").unwrap().source
    );
    assert_eq!(version.current_stage.as_deref(), Some("Production"));
}

#[test]
fn version_errors_name_what_was_wrong() {
    let w = world();
    seed_version(&w.src);
    let mut request = version_request(true);
    request.src_version = "9".into();
    let err = copy_model_version(&mut w.copier(&w.dst, &mut Recorded::default()), &request)
        .map_err(|e| CopyError::from_chain(&e))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message
            .contains("model version wine/9 not found on http://src"),
        "{}",
        err.message
    );

    // A destination name the registry refuses is refused before the deep copy writes anything.
    let mut request = version_request(true);
    request.dst_model = "a/b".into();
    let err = copy_model_version(&mut w.copier(&w.dst, &mut Recorded::default()), &request)
        .map_err(|e| CopyError::from_chain(&e))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert_eq!(w.dst.writes(), 0);

    w.src.state.borrow_mut().versions[0].status = Some("PENDING_REGISTRATION".into());
    let err = copy_model_version(
        &mut w.copier(&w.dst, &mut Recorded::default()),
        &version_request(true),
    )
    .map_err(|e| CopyError::from_chain(&e))
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(err.message.contains("not READY"), "{}", err.message);
    assert_eq!(w.dst.writes(), 0);
}

/// Gives the seeded logged model's `MLmodel` a full signature (what Unity Catalog needs).
fn sign_seeded_model(src: &FakeServer) {
    let uri = src.state.borrow().models[0].info.artifact_uri.clone();
    let mlmodel = String::from_utf8(src.file(&uri, "MLmodel").unwrap()).unwrap();
    let signed = format!("{mlmodel}signature:\n  inputs: '[{{\"type\": \"double\"}}]'\n  outputs: '[{{\"type\": \"long\"}}]'\n");
    src.put_file(&uri, "MLmodel", signed.as_bytes());
}

fn uc_request() -> CopyModelVersionRequest {
    CopyModelVersionRequest {
        dst_model: "main.default.wine".into(),
        copy_permissions: false,
        ..version_request(true)
    }
}

#[test]
fn a_version_copied_into_unity_catalog_carries_its_files_and_is_finalized() {
    let w = world();
    let src_run = seed_version(&w.src);
    sign_seeded_model(&w.src);
    w.dst.unity_catalog.set(true);
    let mut progress = Recorded::default();
    let report = copy_model_version(&mut w.copier(&w.dst, &mut progress), &uc_request())
        .map_err(|e| CopyError::from_chain(&e))
        .unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    let version = w
        .dst
        .model_version("main.default.wine", &report.dst_version)
        .unwrap();
    assert_eq!(version.status.as_deref(), Some("READY"));
    // The version's own files: the model's, its MLmodel naming the copies.
    let key = format!("versions/main.default.wine/{}", version.version);
    assert_eq!(w.dst.file(&key, "model.pkl"), Some(vec![7u8; 3000]));
    // ... the same MLmodel as the copied logged model's (ids and location rewritten alike).
    let dst_run = report.dst_run_id.clone().unwrap();
    let copied_model = w.dst.state.borrow().models[0].info.artifact_uri.clone();
    let mlmodel = w.dst.file(&key, "MLmodel").unwrap();
    assert_eq!(Some(mlmodel.clone()), w.dst.file(&copied_model, "MLmodel"));
    let text = String::from_utf8(mlmodel).unwrap();
    assert!(
        text.contains(&format!("artifact_path: {copied_model}\n")),
        "{text}"
    );
    assert!(
        !text.contains("fake://src") && !src_run.is_empty(),
        "{text}"
    );
    // UC records the run; tag keys lose their dots; the stage is skipped with a warning.
    assert_eq!(version.run_id.as_deref(), Some(dst_run.as_str()));
    assert!(version
        .tags
        .contains(&KeyValue::new("mlflow_exim_src_version_name", "wine")));
    assert!(
        !version.tags.iter().any(|t| t.key.contains('.')),
        "{:?}",
        version.tags
    );
    assert_eq!(version.current_stage.as_deref(), Some("None"));
    assert!(progress.warnings().iter().any(|m| m.contains("Production")));
    assert_eq!(report.aliases, vec!["champion".to_string()]);
    // Finalized once, after the files.
    let writes = w.dst.state.borrow().writes.clone();
    let finalize = writes
        .iter()
        .position(|op| *op == "finalize_version")
        .unwrap();
    assert!(writes[..finalize].contains(&"upload"));
    assert_eq!(
        writes
            .iter()
            .filter(|op| **op == "finalize_version")
            .count(),
        1
    );
}

#[test]
fn a_model_without_a_signature_is_refused_before_unity_catalog_sees_anything() {
    let w = world();
    seed_version(&w.src);
    w.dst.unity_catalog.set(true);
    let err = copy_model_version(
        &mut w.copier(&w.dst, &mut Recorded::default()),
        &uc_request(),
    )
    .map_err(|e| CopyError::from_chain(&e))
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadInput, "{}", err.message);
    assert!(err.message.contains("signature"), "{}", err.message);
    assert_eq!(w.dst.writes(), 0, "nothing written, not even the run");
}

#[test]
fn a_unity_catalog_version_left_pending_is_finished_by_the_same_command() {
    let w = world();
    seed_version(&w.src);
    sign_seeded_model(&w.src);
    w.dst.unity_catalog.set(true);
    // The upload of the version's model file fails (after the run's own files went through).
    let uploads_before_version = {
        let probe = world();
        seed_version(&probe.src);
        sign_seeded_model(&probe.src);
        probe.copy_run(&the_source_run(&probe.src)).unwrap();
        let uploads = probe
            .dst
            .state
            .borrow()
            .writes
            .iter()
            .filter(|op| **op == "upload")
            .count();
        uploads as u32
    };
    w.dst.fail("upload", uploads_before_version);
    let failed = copy_model_version(
        &mut w.copier(&w.dst, &mut Recorded::default()),
        &uc_request(),
    )
    .map_err(|e| CopyError::from_chain(&e))
    .unwrap_err();
    assert!(
        failed.message.contains("re-run the same command"),
        "{}",
        failed.message
    );
    let pending = w.dst.versions("main.default.wine").unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status.as_deref(), Some("PENDING_REGISTRATION"));

    let report = copy_model_version(
        &mut w.copier(&w.dst, &mut Recorded::default()),
        &uc_request(),
    )
    .unwrap();
    assert_eq!(report.outcome, Outcome::Resumed);
    let versions = w.dst.versions("main.default.wine").unwrap();
    assert_eq!(versions.len(), 1, "no second version");
    assert_eq!(versions[0].status.as_deref(), Some("READY"));
}

fn the_source_run(src: &FakeServer) -> String {
    src.state.borrow().runs[0].info.run_id.clone()
}

#[test]
fn creates_whose_answers_are_lost_are_found_not_made_twice() {
    let w = world();
    let run_id = seed_version(&w.src);
    for op in [
        "create_experiment",
        "create_run",
        "create_logged_model",
        "create_registered_model",
        "create_model_version",
    ] {
        w.dst.lose_answer(op);
    }
    let mut progress = Recorded::default();
    let report = copy_model_version(&mut w.copier(&w.dst, &mut progress), &version_request(true))
        .map_err(|e| CopyError::from_chain(&e))
        .unwrap();
    assert_eq!(report.outcome, Outcome::Created);
    assert_faithful(&w, &run_id);
    let state = w.dst.state.borrow();
    assert_eq!(state.experiments.len(), 1);
    assert_eq!(
        state.runs.len(),
        1,
        "one run, though its create was answered 500"
    );
    assert_eq!(state.models.len(), 1);
    assert_eq!(state.registered.len(), 1);
    assert_eq!(state.versions.len(), 1);
    assert_eq!(report.dst_version, "1");
}

pub(super) mod traces {
    use super::*;
    use crate::stores::fake_traces::FakeTrace;
    use serde_json::{json, Value};

    /// Three traces of the run: two by metadata, one by association only; each with two spans
    /// and a feedback.
    pub(in crate::engine) fn seed_traces(src: &FakeServer, run_id: &str) -> Vec<String> {
        let experiment = src.get_run(run_id).unwrap().info.experiment_id;
        let mut ids = Vec::new();
        for n in 1..=3u8 {
            let hex = format!("{n:032x}");
            let id = format!("tr-{hex}");
            let b64 = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                (0..16)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect::<Vec<_>>(),
            );
            let metadata = if n == 3 {
                json!({"mlflow.trace_schema.version": "3"})
            } else {
                json!({"mlflow.sourceRun": run_id, "mlflow.trace_schema.version": "3"})
            };
            let info = json!({
                "trace_id": id, "trace_metadata": metadata, "state": "OK",
                "trace_location": crate::stores::mlflow::experiment_location(&experiment),
                "tags": {"mlflow.traceName": "agent", "mlflow.trace.spansLocation": "TRACKING_STORE"},
                "assessments": [{"assessment_id": format!("a-{n}"), "trace_id": id,
                    "assessment_name": "helpful", "feedback": {"value": true},
                    "metadata": {"mlflow.assessment.sourceRunId": run_id}}],
            });
            let spans = vec![
                json!({"trace_id": b64, "span_id": "AAAAAAAAAAE=", "name": "root",
                       "start_time_unix_nano": 1796163286959085413u64}),
                json!({"trace_id": b64, "span_id": "AAAAAAAAAAI=", "parent_span_id": "AAAAAAAAAAE=",
                       "name": "child", "start_time_unix_nano": 1796163286959085999u64}),
            ];
            let runs = if n == 3 {
                vec![run_id.to_string()]
            } else {
                Vec::new()
            };
            src.state
                .borrow_mut()
                .traces
                .push(FakeTrace { info, spans, runs });
            ids.push(id);
        }
        ids
    }

    fn traces_of(server: &FakeServer, run_id: &str) -> Vec<FakeTrace> {
        let state = server.state.borrow();
        let linked = |t: &&FakeTrace| {
            t.info["trace_metadata"]["mlflow.sourceRun"] == run_id
                || t.runs.iter().any(|r| r == run_id)
        };
        state.traces.iter().filter(linked).cloned().collect()
    }

    #[test]
    fn traces_travel_with_their_ids_spans_and_assessments_repointed() {
        let w = world();
        let run = seed_run(&w.src);
        let ids = seed_traces(&w.src, &run);
        let report = w.copy_run(&run).unwrap();
        assert_eq!((report.traces, report.assessments), (3, 3));
        let copied = traces_of(&w.dst, &report.dst_run_id);
        let mut copied_ids: Vec<&str> = copied.iter().map(FakeTrace::id).collect();
        copied_ids.sort();
        assert_eq!(copied_ids, ids, "ids kept across servers");
        assert!(
            report.new_trace_ids.is_empty(),
            "{:?}",
            report.new_trace_ids
        );
        for t in &copied {
            assert_eq!(t.spans.len(), 2);
            assert_eq!(
                t.spans[0]["start_time_unix_nano"].as_u64(),
                Some(1796163286959085413)
            );
            let a = &t.info["assessments"][0];
            assert_eq!(
                a["metadata"]["mlflow.assessment.sourceRunId"],
                json!(report.dst_run_id)
            );
            assert!(t.info["tags"].get("mlflow.trace.spansLocation").is_none());
            assert_eq!(
                t.info["tags"][crate::engine::traces::SRC_TRACE_ID],
                json!(t.id())
            );
        }
        let by_association = copied.iter().find(|t| t.id() == ids[2]).unwrap();
        assert_eq!(by_association.runs, vec![report.dst_run_id.clone()]);
    }

    #[test]
    fn a_run_without_traces_costs_a_source_search_per_group_and_none_at_the_destination() {
        let w = world();
        let run = seed_run(&w.src);
        // Any trace search at the destination fails the copy, as does a third at the source
        // (one for the run's traces, one for its logged model's).
        w.dst.fail("search_traces", 0);
        w.src.fail("search_traces", 2);
        let report = w.copy_run(&run).unwrap();
        assert_eq!(report.traces, 0);
    }

    #[test]
    fn a_copy_that_failed_mid_traces_resumes_without_duplicates() {
        let w = world();
        let run = seed_run(&w.src);
        seed_traces(&w.src, &run);
        w.dst.fail("start_trace", 1);
        let err = w.copy_run(&run).unwrap_err();
        assert!(err.message.contains("copying trace"), "{}", err.message);
        // A wave's writes are all sent: only the trace whose info was refused is left.
        let resumed = w.copy_run(&run).unwrap();
        assert_eq!((resumed.outcome, resumed.traces), (Outcome::Resumed, 1));
        assert_eq!(traces_of(&w.dst, &resumed.dst_run_id).len(), 3);
        assert_eq!(w.dst.state.borrow().traces.len(), 3);
        let again = w.copy_run(&run).unwrap();
        assert_eq!((again.outcome, again.traces), (Outcome::Existing, 0));
    }

    #[test]
    fn a_trace_whose_info_was_written_first_is_finished_on_resume_not_duplicated() {
        let w = world();
        w.dst.traces_info_first.set(true);
        let run = seed_run(&w.src);
        let ids = seed_traces(&w.src, &run);
        w.dst.fail("start_trace", 1);
        w.copy_run(&run).unwrap_err();
        let pending: Vec<FakeTrace> = w.dst.state.borrow().traces.clone();
        let begun: Vec<&FakeTrace> = pending
            .iter()
            .filter(|t| {
                let lineage = &t.info["tags"][crate::engine::traces::SRC_TRACE_ID];
                lineage.as_str().unwrap().starts_with("incomplete")
            })
            .collect();
        assert_eq!(
            (pending.len(), begun.len()),
            (3, 1),
            "all begun, one left incomplete"
        );
        let resumed = w.copy_run(&run).unwrap();
        assert_eq!(resumed.traces, 1, "the begun trace is finished");
        let traces = w.dst.state.borrow().traces.clone();
        let mut copied: Vec<&str> = traces.iter().map(FakeTrace::id).collect();
        copied.sort();
        assert_eq!(copied, ids, "the begun trace kept its id: no duplicate");
        for t in &traces {
            assert_eq!(
                t.info["tags"][crate::engine::traces::SRC_TRACE_ID],
                json!(t.id())
            );
        }
    }

    #[test]
    fn a_same_server_copy_mints_new_ids_and_leaves_the_source_alone() {
        let w = world();
        let run = seed_run(&w.src);
        let ids = seed_traces(&w.src, &run);
        let before: Vec<Value> = traces_of(&w.src, &run)
            .into_iter()
            .map(|t| t.info)
            .collect();
        let mut progress = Recorded::default();
        let request = CopyRunRequest {
            run_id: run.clone(),
            experiment_name: "copies".into(),
            src_mlflow_uri: "http://src".into(),
            dst_mlflow_uri: "http://src".into(),
            copy_children: false,
            concurrency: 4,
        };
        let report = copy_run(&mut w.copier(&w.src, &mut progress), &request).unwrap();
        let after: Vec<Value> = traces_of(&w.src, &run)
            .into_iter()
            .map(|t| t.info)
            .collect();
        assert_eq!(after, before, "the source's traces are unchanged");
        let copied = traces_of(&w.src, &report.dst_run_id);
        assert_eq!(copied.len(), 3);
        assert!(copied.iter().all(|t| !ids.contains(&t.id().to_string())));
        let mut renamed: Vec<&String> = report.new_trace_ids.keys().collect();
        renamed.sort();
        assert_eq!(
            renamed,
            ids.iter().collect::<Vec<_>>(),
            "every new id is reported"
        );
        for t in &copied {
            let src = t.info["tags"][crate::engine::traces::SRC_TRACE_ID]
                .as_str()
                .unwrap();
            assert_eq!(report.new_trace_ids[src], t.id());
        }
        assert!(copied
            .iter()
            .all(|t| t.info["assessments"][0]["assessment_id"] != json!("a-1")));
    }
}
