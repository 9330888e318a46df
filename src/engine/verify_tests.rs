//! verify-run, verify-experiment and verify-model-version on in-memory stores: a faithful
//! copy verifies clean, and each kind of damage to it is found and named.

use super::copy_experiment::copy_experiment;
use super::copy_model_version::copy_model_version;
use super::tests::{seed_run, seed_version, the_copy, version_request, world, Recorded, World};
use super::verify::verify_run;
use super::verify_experiment::verify_experiment;
use super::verify_model_version::verify_model_version;
use crate::api::{
    CopyExperimentRequest, ErrorKind, VerifyExperimentRequest, VerifyModelVersionRequest,
    VerifyRunRequest,
};
use crate::stores::model::KeyValue;
use crate::stores::Tracking;

fn copied_run(w: &World) -> (String, String) {
    let src = seed_run(&w.src);
    let dst = copy_of(w, &src);
    (src, dst)
}

/// Copies the experiment of source run `src`; the id of the run's copy.
fn copy_of(w: &World, src: &str) -> String {
    let exp = w.src.run(src).info.experiment_id;
    let mut progress = Recorded::default();
    copy_experiment(
        &mut w.copier(&w.dst, &mut progress),
        &experiment_copy(&exp),
        &mut super::item_executor::Local,
    )
    .unwrap();
    the_copy(&w.dst, src).info.run_id
}

fn experiment_copy(exp: &str) -> CopyExperimentRequest {
    CopyExperimentRequest {
        src_experiment_name: None,
        src_experiment_id: Some(exp.to_string()),
        dst_experiment_name: "copies".into(),
        src_mlflow_uri: "http://src".into(),
        dst_mlflow_uri: "http://dst".into(),
        filter: None,
        run_ids: Vec::new(),
        max_runs: None,
        dry_run: false,
        verify: false,
        via: None,
        parallel: None,
        concurrency: 4,
    }
}

fn verify_experiment_request(exp: &str) -> VerifyExperimentRequest {
    VerifyExperimentRequest(experiment_copy(exp))
}

fn run_differences(w: &World, src: &str, dst: &str) -> Vec<String> {
    let request = VerifyRunRequest {
        src_run_id: src.into(),
        dst_run_id: dst.into(),
        src_mlflow_uri: "http://src".into(),
        dst_mlflow_uri: "http://dst".into(),
    };
    let mut progress = Recorded::default();
    verify_run(&mut w.copier(&w.dst, &mut progress), &request)
        .unwrap()
        .differences
}

#[test]
fn content_is_compared_by_checksum_and_mlmodel_files_with_their_ids_re_pointed() {
    let w = world();
    let (src, dst) = copied_run(&w);
    assert_eq!(run_differences(&w, &src, &dst), Vec::<String>::new());
    let uri = w.dst.run(&dst).info.artifact_uri;
    // Same size, other bytes: only a checksum tells.
    w.dst.put_file(&uri, "a.txt", b"jello");
    // An MLmodel naming another run than the copy.
    let elsewhere = "artifact_path: model\nrun_id: elsewhere\nflavors: {}\n";
    w.dst.put_file(&uri, "model/MLmodel", elsewhere.as_bytes());
    let differences = run_differences(&w, &src, &dst);
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert!(
        differences[0].starts_with("artifact \"a.txt\": content differs (sha256 "),
        "{differences:?}"
    );
    assert!(
        differences[1].starts_with("artifact \"model/MLmodel\": content differs from the source's"),
        "{differences:?}"
    );
    assert_eq!(
        w.src
            .file(&w.src.run(&src).info.artifact_uri, "a.txt")
            .unwrap(),
        b"hello"
    );
}

#[test]
fn an_experiment_copy_lists_missing_runs_and_every_run_difference() {
    let w = world();
    let (src, dst) = copied_run(&w);
    let exp = w.src.run(&src).info.experiment_id;
    let mut progress = Recorded::default();
    let mut c = w.copier(&w.dst, &mut progress);
    let clean = verify_experiment(&mut c, &verify_experiment_request(&exp)).unwrap();
    assert_eq!((clean.runs_compared, clean.failure()), (1, None));

    let later = w.src.add_run(&exp, Default::default(), Vec::new());
    w.src
        .set_experiment_tag(&exp, &KeyValue::new("team", "ml"))
        .unwrap();
    w.dst.delete_tag(&dst, "team").unwrap();
    let report = verify_experiment(&mut c, &verify_experiment_request(&exp)).unwrap();
    assert_eq!(report.missing, [later]);
    assert_eq!(report.runs_differing, 1);
    assert_eq!(
        report.differences,
        [
            "experiment tag \"team\": missing from the copy".to_string(),
            format!("run {src} (copy {dst}): tag \"team\": missing from the copy"),
        ]
    );
    let failure = report.failure().unwrap();
    assert_eq!(failure.kind, ErrorKind::Conflict);
    assert!(
        failure.message.contains("1 runs missing, 1 runs differ"),
        "{failure}"
    );
}

fn version_check(w: &World, dst_version: Option<&str>) -> Vec<String> {
    let copy = version_request(true);
    let request = VerifyModelVersionRequest {
        dst_version: dst_version.map(str::to_string),
        ..VerifyModelVersionRequest::of_copy(&copy, "0")
    };
    let mut progress = Recorded::default();
    verify_model_version(&mut w.copier(&w.dst, &mut progress), &request)
        .unwrap()
        .differences
}

#[test]
fn a_version_copy_is_compared_by_source_tags_stage_aliases_and_run() {
    let w = world();
    let src_run = seed_version(&w.src);
    let mut progress = Recorded::default();
    copy_model_version(&mut w.copier(&w.dst, &mut progress), &version_request(true)).unwrap();
    assert_eq!(
        version_check(&w, None),
        Vec::<String>::new(),
        "found by its source"
    );
    assert_eq!(version_check(&w, Some("1")), Vec::<String>::new());

    {
        let mut state = w.dst.state.borrow_mut();
        let version = &mut state.versions[0];
        version.tags.retain(|t| t.key != "validated");
        version.tags.push(KeyValue::new("extra", "x"));
        version.current_stage = Some("Archived".into());
        version.description = Some("changed".into());
        state.registered[0].aliases.clear();
    }
    let run = the_copy(&w.dst, &src_run).info.run_id;
    w.dst.delete_tag(&run, "team").unwrap();
    let differences = version_check(&w, Some("1"));
    let fields: Vec<&str> = differences
        .iter()
        .map(|d| d.split(':').next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "description",
            "tag \"validated\"",
            "tag \"extra\"",
            "stage",
            "aliases",
            "run"
        ],
        "{differences:?}"
    );
}

#[test]
fn a_logged_model_copy_is_compared_field_by_field_and_file_by_file() {
    let w = world();
    let (src, dst) = copied_run(&w);
    let copy_uri = {
        let mut state = w.dst.state.borrow_mut();
        let copy = state
            .models
            .iter_mut()
            .find(|m| m.info.source_run_id.as_deref() == Some(dst.as_str()))
            .unwrap();
        copy.info.tags.retain(|t| t.key != "stage");
        copy.data.params[0].value = "2.0".into();
        copy.info.artifact_uri.clone()
    };
    w.dst.put_file(&copy_uri, "model.pkl", &[8u8; 3000]);
    let differences = run_differences(&w, &src, &dst);
    let fields: Vec<&str> = differences
        .iter()
        .map(|d| d.split(") ").nth(1).unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["param \"C\"", "tag \"stage\"", "artifact \"model.pkl\""],
        "{differences:?}"
    );
}

#[test]
fn traces_are_compared_with_their_copies_info_assessments_and_spans() {
    let w = world();
    let src = seed_run(&w.src);
    let ids = super::tests::traces::seed_traces(&w.src, &src);
    let dst = copy_of(&w, &src);
    let mut progress = Recorded::default();
    let request = VerifyRunRequest {
        src_run_id: src.clone(),
        dst_run_id: dst.clone(),
        src_mlflow_uri: "http://src".into(),
        dst_mlflow_uri: "http://dst".into(),
    };
    let mut c = w.copier(&w.dst, &mut progress);
    let clean = verify_run(&mut c, &request).unwrap();
    assert_eq!(
        (clean.traces, clean.differences.len()),
        (3, 0),
        "{:?}",
        clean.differences
    );

    {
        let mut state = w.dst.state.borrow_mut();
        state.traces.retain(|t| t.id() != ids[0]);
        let second = state.traces.iter_mut().find(|t| t.id() == ids[1]).unwrap();
        second.info["state"] = "ERROR".into();
        second.info["assessments"] = serde_json::json!([]);
        let third = state.traces.iter_mut().find(|t| t.id() == ids[2]).unwrap();
        third.spans.pop();
    }
    let damaged = verify_run(&mut c, &request).unwrap().differences;
    let fields: Vec<String> = damaged
        .iter()
        .map(|d| d.split(": ").next().unwrap().to_string())
        .collect();
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(
        fields,
        [
            format!("trace {a}"),
            format!("trace {b} (copy {b}) state"),
            format!("trace {b} (copy {b}) assessments"),
            format!("trace {c} (copy {c}) spans"),
        ],
        "{damaged:?}"
    );
}
