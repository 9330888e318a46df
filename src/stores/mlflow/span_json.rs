//! MLflow span JSON (`traces.json`, `get-trace-artifact`) to OTLP proto JSON (what `traces/get`
//! returns and `/v1/traces` takes). The two differ in attributes only: MLflow keeps each value
//! as a JSON-encoded string (`tracing/utils/__init__.py:dump_span_attribute_value`), OTLP as an
//! `AnyValue`, which the server's ingest decodes and encodes again
//! (`entities/span.py:Span.from_otel_proto`, `tracing/utils/otlp.py:_decode_otel_proto_anyvalue`).

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
}
