//! Conversions between protobuf's JSON-like types and `serde_json`.
//!
//! The database stores args, kwargs and results as JSON text; the wire
//! carries `google.protobuf.{Value, Struct, ListValue}`. Numbers are f64 on
//! the wire (protobuf has no integer `Value`): an integral number within
//! 2^53 comes back as a JSON integer.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// A protobuf value as JSON.
pub fn value_to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => list_to_json(list),
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json(s)),
    }
}

fn number_to_json(n: f64) -> Json {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        Json::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map(Json::Number).unwrap_or(Json::Null)
    }
}

/// A protobuf list as a JSON array.
pub fn list_to_json(list: &ListValue) -> Json {
    Json::Array(list.values.iter().map(value_to_json).collect())
}

/// A protobuf struct as a JSON object.
pub fn struct_to_json(s: &Struct) -> Map<String, Json> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

/// JSON as a protobuf value.
pub fn json_to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a protobuf struct.
pub fn json_to_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// A JSON array as a protobuf list (anything else becomes an empty list).
pub fn json_to_list(json: &Json) -> ListValue {
    match json {
        Json::Array(items) => ListValue {
            values: items.iter().map(json_to_value).collect(),
        },
        _ => ListValue::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips() {
        let doc = json!({"a": [1, 2.5, "x", null, true, {"b": -3}], "big": 9007199254740992u64});
        assert_eq!(value_to_json(&json_to_value(&doc)), doc);
    }
}
