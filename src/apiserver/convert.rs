//! Conversion between a resource's served version and its stored form, where they differ:
//! `events.k8s.io/v1` Events are stored as core `v1` Events (one store, as upstream), so
//! `kubectl describe` sees what a controller recorded through either API.

use serde_json::{Map, Value};

use super::resources::Resource;

/// (core/v1 field, events.k8s.io/v1 field) pairs; the rest share their names.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Whether `res`'s served version differs from its stored form.
pub fn differs(res: &Resource) -> bool {
    is_events_v1(res)
}

fn is_events_v1(res: &Resource) -> bool {
    res.group == "events.k8s.io" && res.kind == "Event"
}

fn rename(v: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>, api: &str) -> Value {
    let Value::Object(mut m) = v else { return v };
    let mut out = Map::new();
    for (from, to) in pairs {
        if let Some(x) = m.remove(from) {
            out.insert(to.to_string(), x);
        }
    }
    m.extend(out);
    m.insert("apiVersion".into(), api.into());
    Value::Object(m)
}

/// The stored form of an object of `res`'s served version.
pub fn to_stored(res: &Resource, v: Value) -> Value {
    if !is_events_v1(res) {
        return v;
    }
    rename(v, EVENT_FIELDS.iter().map(|(core, ev)| (*ev, *core)), "v1")
}

/// `res`'s served version of a stored object.
pub fn to_served(res: &Resource, v: Value) -> Value {
    if !is_events_v1(res) {
        return v;
    }
    rename(v, EVENT_FIELDS.iter().copied(), "events.k8s.io/v1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_versions() {
        let ev = super::super::resources::find("events.k8s.io", "v1", "events").unwrap();
        let served = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "Pulled", "reason": "Pulled",
            "reportingController": "kubelet", "deprecatedCount": 2});
        let stored = to_stored(ev, served.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "Pulled");
        assert_eq!(stored["reportingComponent"], "kubelet");
        assert_eq!(stored["count"], 2);
        assert_eq!(to_served(ev, stored), served);
        let core = super::super::resources::find("", "v1", "events").unwrap();
        assert_eq!(
            to_served(core, json!({"message": "m"})),
            json!({"message": "m"})
        );
    }
}
