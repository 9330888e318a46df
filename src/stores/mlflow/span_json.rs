//! MLflow span JSON (`traces.json`, `get-trace-artifact`) to OTLP proto JSON (what `traces/get`
//! returns and `/v1/traces` takes), and back. The two differ mostly in attributes: MLflow keeps
//! each value as a JSON-encoded string (`tracing/utils/__init__.py:dump_span_attribute_value`),
//! OTLP as an `AnyValue`, which the server's ingest decodes and encodes again
//! (`entities/span.py:Span.from_otel_proto`, `tracing/utils/otlp.py:_decode_otel_proto_anyvalue`).
//! MLflow span JSON is what `entities/span.py:Span.to_dict` writes and `Span.from_dict` reads.

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// One span from MLflow span JSON as an OTLP proto-JSON span.
pub fn to_otlp(mut span: Value) -> Value {
    if span["parent_span_id"].is_null() {
        if let Some(fields) = span.as_object_mut() {
            fields.remove("parent_span_id");
        }
    }
    span["attributes"] = attribute_list(&span["attributes"], true);
    // Event attributes are plain values (`entities/span_event.py`), not JSON-encoded.
    if let Some(events) = span["events"].as_array_mut() {
        for event in events {
            event["attributes"] = attribute_list(&event["attributes"], false);
        }
    }
    span
}

/// `{"k": "<json>"}` (`encoded`) or `{"k": value}` as `[{"key": "k", "value": AnyValue}]`.
fn attribute_list(attributes: &Value, encoded: bool) -> Value {
    let Some(map) = attributes.as_object() else {
        return json!([]);
    };
    let list = map
        .iter()
        .map(|(key, raw)| {
            // A value that is not JSON (a foreign writer's plain string) stays a string.
            let decoded = match raw {
                Value::String(text) if encoded => {
                    serde_json::from_str(text).unwrap_or_else(|_| raw.clone())
                }
                other => other.clone(),
            };
            json!({ "key": key, "value": any_value(&decoded) })
        })
        .collect();
    Value::Array(list)
}

/// Span attribute naming the trace (`tracing/constant.py:SpanAttributeKey.REQUEST_ID`):
/// `Span.from_dict` refuses a span without it.
const REQUEST_ID: &str = "mlflow.traceRequestId";

/// One OTLP proto-JSON span as MLflow span JSON, in the trace `trace_id` (`tr-…`).
pub fn to_mlflow(span: &Value, trace_id: &str) -> Value {
    let mut attributes = Map::new();
    for kv in span["attributes"].as_array().into_iter().flatten() {
        let key = kv["key"].as_str().unwrap_or_default();
        attributes.insert(key.into(), json!(plain_value(&kv["value"]).to_string()));
    }
    attributes.insert(REQUEST_ID.into(), json!(json!(trace_id).to_string()));
    let events: Vec<Value> = span["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            json!({ "name": e["name"], "time_unix_nano": integer(&e["time_unix_nano"]),
                    "attributes": plain_map(&e["attributes"]) })
        })
        .collect();
    let parent = span["parent_span_id"].as_str().filter(|p| !p.is_empty());
    json!({
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "parent_span_id": parent,
        "name": span["name"],
        "start_time_unix_nano": integer(&span["start_time_unix_nano"]),
        "end_time_unix_nano": integer(&span["end_time_unix_nano"]),
        "events": events,
        "status": {
            "code": span["status"]["code"].as_str().unwrap_or("STATUS_CODE_UNSET"),
            "message": span["status"]["message"].as_str().unwrap_or_default(),
        },
        "attributes": attributes,
        "links": span["links"].as_array().into_iter().flatten().map(link).collect::<Vec<_>>(),
    })
}

/// An OTLP link as `entities/link.py:Link.to_dict` has it: ids in MLflow's hex forms.
fn link(otlp: &Value) -> Value {
    let hex = |id: &Value| -> String {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(id.as_str().unwrap_or_default())
            .unwrap_or_default();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    json!({
        "trace_id": format!("tr-{}", hex(&otlp["trace_id"])),
        "span_id": hex(&otlp["span_id"]),
        "attributes": plain_map(&otlp["attributes"]),
    })
}

/// Proto JSON writes 64-bit integers as strings; MLflow span JSON as numbers.
fn integer(value: &Value) -> Value {
    match value.as_str().and_then(|s| s.parse::<u64>().ok()) {
        Some(n) => json!(n),
        None => value.clone(),
    }
}

/// `[{"key", "value": AnyValue}]` as a plain JSON object.
fn plain_map(list: &Value) -> Value {
    let pairs = list.as_array().into_iter().flatten();
    let map = pairs
        .map(|kv| {
            (
                kv["key"].as_str().unwrap_or_default().to_string(),
                plain_value(&kv["value"]),
            )
        })
        .collect();
    Value::Object(map)
}

/// An OTLP `AnyValue` as plain JSON (a list attribute is an `array_value` of `kvlist_value`s;
/// proto JSON may write an `int_value` as a string).
pub fn plain_value(any: &Value) -> Value {
    if let Some(values) = any["array_value"]["values"].as_array() {
        return Value::Array(values.iter().map(plain_value).collect());
    }
    if any.get("kvlist_value").is_some() {
        return plain_map(&any["kvlist_value"]["values"]);
    }
    if let Some(int) = any.get("int_value") {
        return integer(int);
    }
    let scalar = ["string_value", "double_value", "bool_value"]
        .iter()
        .find_map(|k| any.get(*k));
    scalar.cloned().unwrap_or(Value::Null)
}

fn any_value(value: &Value) -> Value {
    match value {
        Value::Null => json!({}),
        Value::Bool(b) => json!({ "bool_value": b }),
        Value::Number(n) if n.is_f64() => json!({ "double_value": n }),
        Value::Number(n) => json!({ "int_value": n }),
        Value::String(s) => json!({ "string_value": s }),
        Value::Array(items) => {
            json!({ "array_value": { "values": items.iter().map(any_value).collect::<Vec<_>>() } })
        }
        Value::Object(fields) => json!({ "kvlist_value": { "values": kv_list(fields) } }),
    }
}

fn kv_list(fields: &Map<String, Value>) -> Vec<Value> {
    fields
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_become_any_values_and_times_stay_exact() {
        let span = json!({
            "trace_id": "MnB9oGjU", "span_id": "AAAAAAAAAAE=", "parent_span_id": null,
            "name": "retrieve", "start_time_unix_nano": 1796163286959085413u64,
            "attributes": {"mlflow.spanType": "\"RETRIEVER\"", "top_k": "2", "score": "0.5",
                           "ok": "true", "docs": "[\"a\", {\"id\": 1}]", "plain": "not json"},
            "events": [{"name": "exception", "time_unix_nano": 5,
                        "attributes": {"exception.message": "\"boom\" said"}}],
            "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
        });
        let otlp = to_otlp(span);
        assert!(otlp.get("parent_span_id").is_none());
        assert_eq!(
            otlp["start_time_unix_nano"].as_u64(),
            Some(1796163286959085413)
        );
        let attribute = |key: &str| {
            otlp["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == key)
                .unwrap()["value"]
                .clone()
        };
        assert_eq!(
            attribute("mlflow.spanType"),
            json!({"string_value": "RETRIEVER"})
        );
        assert_eq!(attribute("top_k"), json!({"int_value": 2}));
        assert_eq!(attribute("score"), json!({"double_value": 0.5}));
        assert_eq!(attribute("ok"), json!({"bool_value": true}));
        assert_eq!(attribute("plain"), json!({"string_value": "not json"}));
        assert_eq!(
            attribute("docs"),
            json!({"array_value": {"values": [{"string_value": "a"},
            {"kvlist_value": {"values": [{"key": "id", "value": {"int_value": 1}}]}}]}})
        );
        assert_eq!(
            otlp["events"][0]["attributes"][0]["value"],
            json!({"string_value": "\"boom\" said"})
        );
        assert_eq!(otlp["status"]["code"], "STATUS_CODE_ERROR");
    }

    #[test]
    fn otlp_spans_become_mlflow_span_json_in_the_copy_trace() {
        let otlp = json!({
            "trace_id": "ASNFZ4mrze8BI0VniavN7w==", "span_id": "AAAAAAAAAAI=",
            "parent_span_id": "AAAAAAAAAAE=", "name": "retrieve",
            "start_time_unix_nano": "1796163286959085413", "end_time_unix_nano": 1796163286959085999u64,
            "attributes": [
                {"key": "mlflow.spanType", "value": {"string_value": "RETRIEVER"}},
                {"key": "mlflow.traceRequestId", "value": {"string_value": "tr-source"}},
                {"key": "top_k", "value": {"int_value": "2"}},
                {"key": "docs", "value": {"array_value": {"values": [{"string_value": "a"},
                    {"kvlist_value": {"values": [{"key": "id", "value": {"int_value": 1}}]}}]}}}],
            "events": [{"name": "exception", "time_unix_nano": "5",
                        "attributes": [{"key": "exception.message", "value": {"string_value": "boom"}}]}],
            "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
        });
        let span = to_mlflow(&otlp, "tr-copy");
        assert_eq!(span["parent_span_id"], "AAAAAAAAAAE=");
        assert_eq!(
            span["start_time_unix_nano"].as_u64(),
            Some(1796163286959085413)
        );
        assert_eq!(span["attributes"]["mlflow.spanType"], "\"RETRIEVER\"");
        assert_eq!(span["attributes"]["mlflow.traceRequestId"], "\"tr-copy\"");
        assert_eq!(span["attributes"]["top_k"], "2");
        assert_eq!(span["attributes"]["docs"], r#"["a",{"id":1}]"#);
        assert_eq!(span["events"][0]["attributes"]["exception.message"], "boom");
        assert_eq!(span["events"][0]["time_unix_nano"], 5);
        assert_eq!(
            span["status"],
            json!({"code": "STATUS_CODE_ERROR", "message": "boom"})
        );
        let root = to_mlflow(
            &json!({"span_id": "AAAAAAAAAAE=", "parent_span_id": ""}),
            "tr-copy",
        );
        assert!(
            root["parent_span_id"].is_null(),
            "a root span has no parent"
        );
        assert_eq!(root["status"]["code"], "STATUS_CODE_UNSET");
        let back = to_otlp(span);
        let top_k = back["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "top_k");
        assert_eq!(top_k.unwrap()["value"], json!({"int_value": 2}));
    }
}
