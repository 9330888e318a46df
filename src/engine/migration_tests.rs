//! The bulk commands on in-memory stores: plans that write nothing, parents before children,
//! re-runs that find every copy, and failed items that do not stop the others.

use super::copy_experiment::copy_experiment;
use super::copy_model::copy_model;
use super::item_executor::Local;
use super::lineage;
use super::tests::{point, seed_run, seed_version, the_copy, world, Recorded, World};
use crate::api::{
    CopyError, CopyExperimentRequest, CopyModelRequest, ErrorKind, ItemStatus, MigrationReport,
};
use crate::stores::model::{KeyValue, NewVersion, Run};
use crate::stores::{Registry, Tracking};

/// A source experiment: the seeded run, its child and grandchild (listed before it: newer),
/// a failed run and a deleted one. Returns (experiment id, [root, child, grandchild, failed]).
pub(super) fn seed_experiment(w: &World) -> (String, Vec<String>) {
    let root = seed_run(&w.src);
    let exp = w.src.run(&root).info.experiment_id;
    w.src
        .set_experiment_tag(&exp, &KeyValue::new("mlflow.note.content", "the wine runs"))
        .unwrap();
    let mut ids = vec![root.clone()];
    let mut parent = root;
    for start in [1_800_000_000_000, 1_900_000_000_000] {
        let mut child = Run::default();
        child.info.status = Some("FINISHED".into());
        child.info.start_time = Some(start);
        child.data.tags = vec![KeyValue::new(lineage::PARENT_RUN_ID, &parent)];
        parent = w.src.add_run(&exp, child, vec![point("loss", 0.5, 0)]);
        ids.push(parent.clone());
    }
    let mut failed = Run::default();
    failed.info.status = Some("FAILED".into());
    failed.info.start_time = Some(1_600_000_000_000);
    ids.push(w.src.add_run(&exp, failed, Vec::new()));
    let mut deleted = Run::default();
    deleted.info.lifecycle_stage = "deleted".into();
    w.src.add_run(&exp, deleted, Vec::new());
    w.src.state.borrow_mut().writes.clear();
    (exp, ids)
}

pub(super) fn experiment_request(exp: &str, dry_run: bool) -> CopyExperimentRequest {
    CopyExperimentRequest {
        src_experiment_name: None,
        src_experiment_id: Some(exp.to_string()),
        dst_experiment_name: "migrated".into(),
        src_mlflow_uri: "http://src".into(),
        dst_mlflow_uri: "http://dst".into(),
        filter: None,
        run_ids: Vec::new(),
        max_runs: None,
        dry_run,
        verify: true,
        via: None,
        parallel: None,
        concurrency: 4,
    }
}

fn migrate_experiment(w: &World, request: &CopyExperimentRequest) -> MigrationReport {
    let mut progress = Recorded::default();
    copy_experiment(&mut w.copier(&w.dst, &mut progress), request, &mut Local).unwrap()
}

fn statuses(report: &MigrationReport) -> Vec<ItemStatus> {
    report.items.iter().map(|i| i.status).collect()
}

#[test]
fn an_experiment_is_planned_then_copied_parents_first_then_found_copied() {
    let w = world();
    let (exp, ids) = seed_experiment(&w);

    let plan = migrate_experiment(&w, &experiment_request(&exp, true));
    assert_eq!(w.dst.writes(), 0, "a dry run writes nothing");
    assert_eq!(plan.dst, None);
    assert_eq!(statuses(&plan), vec![ItemStatus::WouldCreate; 4]);
    let parent_of = |id: &String| {
        let item = plan.items.iter().find(|i| &i.src_id == id).unwrap();
        item.src_parent_id.clone()
    };
    assert_eq!(
        parent_of(&ids[1]),
        Some(ids[0].clone()),
        "what a host's waves need"
    );
    assert_eq!(parent_of(&ids[2]), Some(ids[1].clone()));
    assert_eq!(parent_of(&ids[0]), None);

    let report = migrate_experiment(&w, &experiment_request(&exp, false));
    assert_eq!((report.created, report.failed), (4, 0));
    let order: Vec<&str> = report.items.iter().map(|i| i.src_id.as_str()).collect();
    // Parents first (the failed run and the root at depth 0, oldest first), deleted run left out.
    assert_eq!(order, [&ids[3], &ids[0], &ids[1], &ids[2]]);
    let (root, child, grandchild) = (
        the_copy(&w.dst, &ids[0]),
        the_copy(&w.dst, &ids[1]),
        the_copy(&w.dst, &ids[2]),
    );
    assert_eq!(
        child.data.tag(lineage::PARENT_RUN_ID),
        Some(root.info.run_id.as_str())
    );
    assert_eq!(
        grandchild.data.tag(lineage::PARENT_RUN_ID),
        Some(child.info.run_id.as_str())
    );
    assert_eq!(
        the_copy(&w.dst, &ids[3]).info.status.as_deref(),
        Some("FAILED")
    );
    let dst_exp = w
        .dst
        .experiment_by_id(report.dst.as_deref().unwrap())
        .unwrap();
    assert!(dst_exp
        .tags
        .contains(&KeyValue::new("mlflow.note.content", "the wine runs")));
    assert_eq!(
        report.items[1].dst_id.as_deref(),
        Some(root.info.run_id.as_str())
    );

    let writes = w.dst.writes();
    let again = migrate_experiment(&w, &experiment_request(&exp, false));
    assert_eq!(statuses(&again), vec![ItemStatus::Existing; 4]);
    assert_eq!(w.dst.writes(), writes, "a re-run writes nothing");
    let plan = migrate_experiment(&w, &experiment_request(&exp, true));
    assert_eq!(statuses(&plan), vec![ItemStatus::Existing; 4]);
}

#[test]
fn a_failed_item_does_not_stop_the_others_and_a_re_run_finishes_it() {
    let w = world();
    let (exp, ids) = seed_experiment(&w);
    // The last run (the grandchild, a leaf) cannot be finished (once).
    w.dst.fail("update_run", 3);
    let report = migrate_experiment(&w, &experiment_request(&exp, false));
    assert_eq!(
        (report.created, report.failed),
        (3, 1),
        "{:?}",
        report.items
    );
    let failed = report
        .items
        .iter()
        .find(|i| i.status == ItemStatus::Failed)
        .unwrap();
    assert_eq!(failed.error.as_ref().unwrap().kind, ErrorKind::Upstream);
    assert!(report
        .failure()
        .unwrap()
        .message
        .starts_with("1 of 4 items failed"));

    let plan = migrate_experiment(&w, &experiment_request(&exp, true));
    let resumable: Vec<&str> = plan
        .items
        .iter()
        .filter(|i| i.status == ItemStatus::WouldResume)
        .map(|i| i.src_id.as_str())
        .collect();
    assert_eq!(resumable, [failed.src_id.as_str()]);

    let again = migrate_experiment(&w, &experiment_request(&exp, false));
    assert_eq!((again.resumed, again.existing, again.failed), (1, 3, 0));
    assert!(ids
        .iter()
        .all(|id| the_copy(&w.dst, id).data.tag(lineage::INCOMPLETE).is_none()));
}

#[test]
fn the_children_of_a_failed_run_wait_for_the_re_run_to_be_nested() {
    let w = world();
    let (exp, ids) = seed_experiment(&w);
    // The root (second in order, after the older failed run) cannot be finished (once).
    w.dst.fail("update_run", 1);
    let report = migrate_experiment(&w, &experiment_request(&exp, false));
    assert_eq!(
        (report.created, report.failed),
        (1, 3),
        "{:?}",
        report.items
    );
    let waiting = &report.items[2].error.as_ref().unwrap().message;
    assert!(
        waiting.contains(&format!("its parent run {} failed", ids[0])),
        "{waiting}"
    );

    let again = migrate_experiment(&w, &experiment_request(&exp, false));
    assert_eq!((again.resumed, again.created, again.existing), (1, 2, 1));
    let root = the_copy(&w.dst, &ids[0]);
    let child = the_copy(&w.dst, &ids[1]);
    assert_eq!(
        child.data.tag(lineage::PARENT_RUN_ID),
        Some(root.info.run_id.as_str())
    );
}

#[test]
fn listed_runs_are_checked_before_anything_is_written() {
    let w = world();
    let (exp, ids) = seed_experiment(&w);
    let other = w.src.create_experiment("elsewhere").unwrap();
    let stranger = w.src.add_run(&other, Run::default(), Vec::new());
    let mut request = experiment_request(&exp, false);
    request.run_ids = vec![ids[1].clone(), stranger.clone()];
    let mut progress = Recorded::default();
    let err =
        copy_experiment(&mut w.copier(&w.dst, &mut progress), &request, &mut Local).unwrap_err();
    let err = CopyError::from_chain(&err);
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(err.message.contains(&stranger), "{err}");
    assert_eq!(w.dst.writes(), 0);

    request.run_ids = vec![ids[1].clone()];
    request.max_runs = Some(1);
    let report = migrate_experiment(&w, &request);
    assert_eq!(report.items.len(), 1);
    // Its parent has no copy: the copy is not nested.
    assert_eq!(
        the_copy(&w.dst, &ids[1]).data.tag(lineage::PARENT_RUN_ID),
        None
    );
}

fn model_request(dry_run: bool) -> CopyModelRequest {
    CopyModelRequest {
        src_model: "wine".into(),
        dst_model: "wine-prod".into(),
        src_registry_uri: "http://src".into(),
        dst_registry_uri: "http://dst".into(),
        dst_experiment_name: Some("copies".into()),
        versions: Vec::new(),
        stages: Vec::new(),
        aliases: Vec::new(),
        copy_permissions: false,
        copy_stages_and_aliases: true,
        copy_lineage_tags: true,
        dry_run,
        verify: true,
        via: None,
        parallel: None,
        concurrency: 4,
    }
}

#[test]
fn a_model_is_copied_version_by_version_with_its_numbers_and_aliases_last() {
    let w = world();
    let run_id = seed_version(&w.src);
    // Version 2 from the same run's artifacts; the alias moves to it.
    let new = NewVersion {
        source: format!("{}/model", w.src.run(&run_id).info.artifact_uri),
        run_id: Some(run_id.clone()),
        ..NewVersion::default()
    };
    w.src.create_model_version("wine", &new).unwrap();
    w.src.set_alias("wine", "champion", "2").unwrap();
    w.src.state.borrow_mut().writes.clear();

    let mut progress = Recorded::default();
    let plan = copy_model(
        &mut w.copier(&w.dst, &mut progress),
        &model_request(true),
        &mut Local,
    )
    .unwrap();
    assert_eq!(w.dst.writes(), 0);
    assert_eq!(statuses(&plan), vec![ItemStatus::WouldCreate; 2]);

    let report = copy_model(
        &mut w.copier(&w.dst, &mut progress),
        &model_request(false),
        &mut Local,
    )
    .unwrap();
    assert_eq!(
        statuses(&report),
        vec![ItemStatus::Created; 2],
        "{:?}",
        report.items
    );
    let dst_ids: Vec<&str> = report
        .items
        .iter()
        .filter_map(|i| i.dst_id.as_deref())
        .collect();
    assert_eq!(dst_ids, ["1", "2"]);
    let model = w.dst.registered_model("wine-prod").unwrap().unwrap();
    assert_eq!(model.aliases.len(), 1);
    assert_eq!(
        (
            model.aliases[0].alias.as_str(),
            model.aliases[0].version.as_str()
        ),
        ("champion", "2")
    );
    assert_eq!(
        w.dst
            .model_version("wine-prod", "1")
            .unwrap()
            .current_stage
            .as_deref(),
        Some("Production")
    );

    let writes = w.dst.writes();
    let again = copy_model(
        &mut w.copier(&w.dst, &mut progress),
        &model_request(false),
        &mut Local,
    )
    .unwrap();
    assert_eq!(statuses(&again), vec![ItemStatus::Existing; 2]);
    assert_eq!(w.dst.writes(), writes);
    let plan = copy_model(
        &mut w.copier(&w.dst, &mut progress),
        &model_request(true),
        &mut Local,
    )
    .unwrap();
    assert_eq!(
        statuses(&plan),
        vec![ItemStatus::Existing; 2],
        "{:?}",
        plan.items
    );
}
