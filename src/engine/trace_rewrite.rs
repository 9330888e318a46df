//! How one source trace becomes its copy (pure functions, no store): its info with the copy's
//! id and location, run and model ids re-pointed at the copies, server-managed tags dropped,
//! the lineage tag added; its spans with the copy's OTel id; the ids derived for copies that
//! cannot keep the source's; and the links to prompt versions rewritten to the destination's.

use super::prompts::{self, LINKED_PROMPTS};
use super::traces::SRC_TRACE_ID;
use crate::stores::mlflow::span_json::plain_value;
use anyhow::Context;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Metadata keys (trace and assessment) whose value is a run or logged-model id.
const ID_KEYS: [&str; 3] = [
    "mlflow.sourceRun",
    "mlflow.modelId",
    "mlflow.assessment.sourceRunId",
];
/// Tags the destination server sets for itself (where it keeps the trace's data).
pub(super) const SERVER_TAGS: [&str; 2] = ["mlflow.artifactLocation", "mlflow.trace.spansLocation"];
/// Metadata an open-source server adds once a trace's info follows its spans (its own mark,
/// `store/tracking/sqlalchemy_store.py`); another kind of server has no such step.
pub(super) const SERVER_METADATA: [&str; 1] = ["mlflow.trace.infoFinalized"];

/// How one source trace becomes its copy.
pub struct Rewrite<'a> {
    pub trace_id: String,
    pub experiment_id: &'a str,
    /// Source run and logged-model ids to the copies' ids.
    pub ids: &'a BTreeMap<String, String>,
    /// New assessment ids (same server), derived from the source ones.
    pub new_assessment_ids: bool,
}

/// Every `mlflow.linkedPrompts` value of a trace: its tag and its spans' attributes.
pub(super) fn prompt_links(info: &Value, spans: &[Value]) -> Vec<String> {
    let tag = info["tags"][LINKED_PROMPTS].as_str().map(str::to_string);
    let attributes = spans
        .iter()
        .filter_map(|s| s["attributes"].as_array())
        .flatten()
        .filter(|a| a["key"] == LINKED_PROMPTS)
        .map(|a| match a["value"]["string_value"].as_str() {
            Some(raw) => unwrap_attribute(raw),
            None => plain_value(&a["value"]).to_string(),
        });
    tag.into_iter().chain(attributes).collect()
}

/// Rewrites the `version` of each `{name, version}` kvlist in an `array_value` attribute.
fn relink_any(any: &mut Value, map: &prompts::PromptMap) {
    let Some(values) = any["array_value"]["values"].as_array_mut() else {
        return;
    };
    for link in values {
        let plain = plain_value(link);
        let (Some(name), Some(version)) = (plain["name"].as_str(), plain["version"].as_str())
        else {
            continue;
        };
        let Some(new) = map.get(&(name.to_string(), version.to_string())) else {
            continue;
        };
        let pairs = link["kvlist_value"]["values"].as_array_mut();
        for kv in pairs
            .into_iter()
            .flatten()
            .filter(|kv| kv["key"] == "version")
        {
            kv["value"] = json!({ "string_value": new });
        }
    }
}

/// MLflow keeps span attribute values JSON-encoded: a list becomes the string of its JSON.
fn unwrap_attribute(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::String(inner)) => inner,
        _ => raw.to_string(),
    }
}

/// The trace tag and span attributes `mlflow.linkedPrompts` with destination versions.
pub fn relink_trace(info: &mut Value, spans: &mut [Value], map: &prompts::PromptMap) {
    if let Some(tag) = info["tags"][LINKED_PROMPTS].as_str() {
        info["tags"][LINKED_PROMPTS] = json!(prompts::relink(tag, map));
    }
    let attributes = spans
        .iter_mut()
        .filter_map(|s| s["attributes"].as_array_mut())
        .flatten()
        .filter(|a| a["key"] == LINKED_PROMPTS);
    for attribute in attributes {
        let Some(raw) = attribute["value"]["string_value"].as_str() else {
            relink_any(&mut attribute["value"], map);
            continue;
        };
        let inner = unwrap_attribute(raw);
        let relinked = prompts::relink(&inner, map);
        if relinked != inner {
            // Encoded as it came: a JSON string of the JSON list, or the list itself.
            let encoded = if inner == raw {
                relinked
            } else {
                json!(relinked).to_string()
            };
            attribute["value"]["string_value"] = json!(encoded);
        }
    }
}

/// The copy's info: new id and location, run and model ids re-pointed, server-managed tags
/// dropped, the lineage tag added, assessments re-pointed at the new trace.
pub fn rewrite_info(src: &Value, src_id: &str, rewrite: &Rewrite) -> Value {
    let mut info = src.clone();
    info["trace_id"] = json!(rewrite.trace_id);
    info["trace_location"] = crate::stores::mlflow::experiment_location(rewrite.experiment_id);
    repoint(&mut info["trace_metadata"], rewrite.ids);
    if let Some(metadata) = info["trace_metadata"].as_object_mut() {
        for key in SERVER_METADATA {
            metadata.remove(key);
        }
    }
    if let Some(tags) = info["tags"].as_object_mut() {
        for key in SERVER_TAGS {
            tags.remove(key);
        }
    }
    info["tags"][SRC_TRACE_ID] = json!(src_id);
    if let Some(assessments) = info["assessments"].as_array_mut() {
        for a in assessments {
            a["trace_id"] = json!(rewrite.trace_id);
            repoint(&mut a["metadata"], rewrite.ids);
            if rewrite.new_assessment_ids {
                for key in ["assessment_id", "overrides"] {
                    if let Some(old) = a[key].as_str().filter(|s| !s.is_empty()) {
                        a[key] = json!(derived_assessment_id(old, &rewrite.trace_id));
                    }
                }
            }
        }
    }
    info
}

/// Replaces run and model ids in a metadata map's id-valued keys.
pub(super) fn repoint(map: &mut Value, ids: &BTreeMap<String, String>) {
    let Some(map) = map.as_object_mut() else {
        return;
    };
    for key in ID_KEYS {
        if let Some(new) = map
            .get(key)
            .and_then(Value::as_str)
            .and_then(|v| ids.get(v))
        {
            map.insert(key.to_string(), json!(new));
        }
    }
}

/// The spans with the copy's OTel trace id (base64, as OTLP proto JSON has it).
pub fn rewrite_spans(mut spans: Vec<Value>, trace_id: &str) -> anyhow::Result<Vec<Value>> {
    let otel = otel_id(trace_id)
        .with_context(|| format!("trace id {trace_id:?} is not tr-<32 hex digits>"))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(otel);
    for span in &mut spans {
        span["trace_id"] = json!(encoded);
    }
    Ok(spans)
}

/// The 16 bytes of an OSS trace id `tr-<32 lowercase hex>`.
pub(super) fn otel_id(trace_id: &str) -> Option<[u8; 16]> {
    let hex = trace_id.strip_prefix("tr-")?;
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// `tr-` and 32 hex digits from the source id and the destination run: the same on every
/// attempt of one copy, different for copies into different runs.
pub fn derived_trace_id(src_id: &str, dst_run_id: &str) -> String {
    format!("tr-{:032x}", hash128(&format!("{src_id}\n{dst_run_id}")))
}

fn derived_assessment_id(src_id: &str, dst_trace_id: &str) -> String {
    format!("a-{:032x}", hash128(&format!("{src_id}\n{dst_trace_id}")))
}

/// Two FNV-1a 64-bit hashes with different offsets: deterministic ids, not a secret.
fn hash128(text: &str) -> u128 {
    let fnv = |offset: u64| {
        text.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x6c62_272e_07bb_0142))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("run-src".to_string(), "run-dst".to_string()),
            ("m-src".to_string(), "m-dst".to_string()),
        ])
    }

    fn source_info() -> Value {
        json!({
            "trace_id": "tr-0123456789abcdef0123456789abcdef",
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "1"}},
            "request_time": "2026-12-01T22:14:46.959Z",
            "trace_metadata": {"mlflow.sourceRun": "run-src", "mlflow.modelId": "m-src", "mlflow.user": "root"},
            "tags": {"mlflow.artifactLocation": "mlflow-artifacts:/1/traces/x", "mlflow.trace.spansLocation": "TRACKING_STORE", "team": "qa"},
            "assessments": [{"assessment_id": "a-1", "trace_id": "tr-0123456789abcdef0123456789abcdef",
                "metadata": {"mlflow.assessment.sourceRunId": "run-src"}, "overrides": "a-0",
                "feedback": {"value": 0.5}}]
        })
    }

    #[test]
    fn info_is_repointed_at_the_copies() {
        let ids = ids();
        let rewrite = Rewrite {
            trace_id: "tr-ffffffffffffffffffffffffffffffff".into(),
            experiment_id: "7",
            ids: &ids,
            new_assessment_ids: false,
        };
        let src = source_info();
        let info = rewrite_info(&src, "tr-0123456789abcdef0123456789abcdef", &rewrite);
        assert_eq!(info["trace_id"], "tr-ffffffffffffffffffffffffffffffff");
        assert_eq!(
            info["trace_location"]["mlflow_experiment"]["experiment_id"],
            "7"
        );
        assert_eq!(info["trace_metadata"]["mlflow.sourceRun"], "run-dst");
        assert_eq!(info["trace_metadata"]["mlflow.modelId"], "m-dst");
        assert_eq!(info["trace_metadata"]["mlflow.user"], "root");
        assert_eq!(info["tags"]["team"], "qa");
        assert!(info["tags"].get("mlflow.artifactLocation").is_none());
        assert!(info["tags"].get("mlflow.trace.spansLocation").is_none());
        assert_eq!(
            info["tags"][SRC_TRACE_ID],
            "tr-0123456789abcdef0123456789abcdef"
        );
        let a = &info["assessments"][0];
        assert_eq!(a["trace_id"], "tr-ffffffffffffffffffffffffffffffff");
        assert_eq!(a["metadata"]["mlflow.assessment.sourceRunId"], "run-dst");
        assert_eq!(
            (a["assessment_id"].as_str(), a["overrides"].as_str()),
            (Some("a-1"), Some("a-0"))
        );
        assert_eq!(a["feedback"]["value"], 0.5);
        assert_eq!(src, source_info(), "the source is left alone");
    }

    #[test]
    fn same_server_copies_get_new_assessment_ids_consistently() {
        let ids = ids();
        let rewrite = Rewrite {
            trace_id: derived_trace_id("tr-0123456789abcdef0123456789abcdef", "run-dst"),
            experiment_id: "1",
            ids: &ids,
            new_assessment_ids: true,
        };
        let info = rewrite_info(
            &source_info(),
            "tr-0123456789abcdef0123456789abcdef",
            &rewrite,
        );
        let a = &info["assessments"][0];
        assert_eq!(
            a["assessment_id"],
            json!(derived_assessment_id("a-1", &rewrite.trace_id))
        );
        assert_eq!(
            a["overrides"],
            json!(derived_assessment_id("a-0", &rewrite.trace_id))
        );
        assert_ne!(a["assessment_id"], "a-1");
        assert!(
            a["assessment_id"].as_str().unwrap().len() <= 50,
            "the server's column limit"
        );
    }

    #[test]
    fn derived_ids_are_stable_and_depend_on_the_destination_run() {
        let a = derived_trace_id("tr-1", "run-a");
        assert_eq!(a, derived_trace_id("tr-1", "run-a"));
        assert_ne!(a, derived_trace_id("tr-1", "run-b"));
        assert_ne!(a, derived_trace_id("tr-2", "run-a"));
        assert!(otel_id(&a).is_some());
    }

    #[test]
    fn spans_get_the_copy_trace_id_and_keep_exact_nanos() {
        let raw = r#"[{"trace_id":"ASNFZ4mrze8BI0VniavN7w==","span_id":"AAAAAAAAAAE=",
            "start_time_unix_nano":1796163286959085413,"name":"root"}]"#;
        let spans: Vec<Value> = serde_json::from_str(raw).unwrap();
        let out = rewrite_spans(spans, "tr-ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(out[0]["trace_id"], "/////////////////////w==");
        assert_eq!(
            out[0]["start_time_unix_nano"].as_u64(),
            Some(1796163286959085413)
        );
        assert!(out[0].to_string().contains("1796163286959085413"));
    }

    #[test]
    fn prompt_links_in_tags_and_json_encoded_span_attributes_are_relinked() {
        let map = BTreeMap::from([(("qa".to_string(), "1".to_string()), "2".to_string())]);
        let list = r#"[{"name": "qa", "version": "1"}]"#;
        let mut info = json!({"tags": {"mlflow.linkedPrompts": list}});
        let encoded = json!(list).to_string();
        let mut spans = vec![json!({"attributes": [
            {"key": "mlflow.linkedPrompts", "value": {"string_value": encoded}},
            {"key": "other", "value": {"string_value": encoded}}]})];
        assert_eq!(
            prompt_links(&info, &spans),
            vec![list.to_string(), list.to_string()]
        );
        relink_trace(&mut info, &mut spans, &map);
        let want = r#"[{"name":"qa","version":"2"}]"#;
        assert_eq!(info["tags"]["mlflow.linkedPrompts"], want);
        let attribute = spans[0]["attributes"][0]["value"]["string_value"]
            .as_str()
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(attribute).unwrap(), want);
        assert_eq!(
            spans[0]["attributes"][1]["value"]["string_value"],
            json!(encoded)
        );
    }

    #[test]
    fn prompt_links_in_otlp_list_attributes_are_read_and_relinked() {
        let map = BTreeMap::from([(("qa".to_string(), "1".to_string()), "2".to_string())]);
        let link = |version: &str| {
            json!({"kvlist_value": {"values": [
            {"key": "name", "value": {"string_value": "qa"}},
            {"key": "version", "value": {"string_value": version}}]}})
        };
        let attribute = |version: &str| {
            json!({"key": "mlflow.linkedPrompts",
            "value": {"array_value": {"values": [link(version)]}}})
        };
        let mut spans = vec![json!({"attributes": [attribute("1")]})];
        let mut info = json!({"tags": {}});
        let links = prompt_links(&info, &spans);
        assert_eq!(prompts::linked(&links[0]), vec![("qa".into(), "1".into())]);
        relink_trace(&mut info, &mut spans, &map);
        assert_eq!(spans[0]["attributes"][0], attribute("2"));
    }

    #[test]
    fn otel_ids_need_the_oss_form() {
        assert_eq!(
            otel_id("tr-0123456789abcdef0123456789abcdef").unwrap()[0],
            0x01
        );
        assert!(otel_id("my-own-id").is_none());
        assert!(otel_id("tr-0123").is_none());
        assert!(otel_id("tr-zz23456789abcdef0123456789abcdef").is_none());
    }
}
