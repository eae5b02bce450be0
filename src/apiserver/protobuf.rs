//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`: the `k8s\0`
//! magic, then a `runtime.Unknown` envelope holding the object), read into the same JSON
//! the registry stores, through the field tables in [`super::pbschema`]. kubectl's typed
//! clients send these (`create deployment|configmap|…`, `auth can-i`, `auth whoami`).
//! Replies stay JSON, which those clients accept.

use base64::Engine;
use serde_json::{Map, Value};

use super::pbschema::MESSAGES;

const MAGIC: &[u8] = b"k8s\0";
/// Nesting allowed in a body (PodSpec inside a template inside a CronJob is about 12).
const MAX_DEPTH: usize = 64;

/// How a field is encoded and turned into JSON.
pub enum Kind {
    Str,
    Bytes,
    Bool,
    Int32,
    Int64,
    /// A message, by index into `MESSAGES`.
    Msg(u16),
    MapStr,
    MapBytes,
    MapMsg(u16),
}

pub struct Field {
    pub tag: u32,
    pub json: &'static str,
    pub kind: Kind,
    pub repeated: bool,
    /// A Go struct embedded inline: its fields belong to the parent object.
    pub inline: bool,
    /// The field's API documentation (for OpenAPI and `kubectl explain`).
    pub doc: &'static str,
}

pub struct Message {
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

#[derive(Debug, thiserror::Error)]
pub enum PbError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    NoMagic,
    #[error("protobuf: the body is truncated or malformed")]
    Malformed,
    #[error("protobuf: nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("no protobuf schema for {api_version}, Kind={kind}")]
    UnknownType { api_version: String, kind: String },
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn varint(&mut self) -> Result<u64, PbError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or(PbError::Malformed)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PbError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PbError> {
        let end = self.pos.checked_add(n).ok_or(PbError::Malformed)?;
        let s = self.b.get(self.pos..end).ok_or(PbError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], PbError> {
        let n = usize::try_from(self.varint()?).map_err(|_| PbError::Malformed)?;
        self.take(n)
    }

    /// Skips a field of `wire` type.
    fn skip(&mut self, wire: u64) -> Result<(), PbError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            _ => Err(PbError::Malformed),
        }
    }
}

pub fn message_index(name: &str) -> Option<usize> {
    MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok()
}

/// The protobuf package of an API version (`apps/v1` → `api.apps.v1`).
pub fn package(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("api.core.{api_version}"),
        Some(("meta.k8s.io", v)) => format!("apimachinery.pkg.apis.meta.{v}"),
        Some((group, v)) => {
            let short = match group {
                "rbac.authorization.k8s.io" => "rbac",
                g => g.split('.').next().unwrap_or(g),
            };
            format!("api.{short}.{v}")
        }
    }
}

/// Decodes a `k8s\0` body into (apiVersion, kind, object as JSON).
pub fn decode(body: &[u8]) -> Result<(String, String, Value), PbError> {
    let rest = body.strip_prefix(MAGIC).ok_or(PbError::NoMagic)?;
    let mut r = Reader { b: rest, pos: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !r.done() {
        let key = r.varint()?;
        match (key >> 3, key & 7) {
            (1, 2) => {
                let mut tm = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                while !tm.done() {
                    let k = tm.varint()?;
                    match (k >> 3, k & 7) {
                        (1, 2) => api_version = String::from_utf8_lossy(tm.bytes()?).into_owned(),
                        (2, 2) => kind = String::from_utf8_lossy(tm.bytes()?).into_owned(),
                        (_, w) => tm.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            (_, w) => r.skip(w)?,
        }
    }
    let name = format!("{}.{kind}", package(&api_version));
    // Options such as DeleteOptions come under any group's version but are meta/v1 types.
    let idx = message_index(&name)
        .or_else(|| message_index(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
        .ok_or_else(|| PbError::UnknownType {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut obj = decode_message(raw, idx, 0)?;
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), api_version.clone().into());
        o.insert("kind".into(), kind.clone().into());
    }
    Ok((api_version, kind, obj))
}

fn b64(b: &[u8]) -> Value {
    base64::engine::general_purpose::STANDARD.encode(b).into()
}

fn utf8(b: &[u8]) -> Result<String, PbError> {
    String::from_utf8(b.to_vec()).map_err(|_| PbError::Malformed)
}

/// One scalar of `kind` from the wire (`wire` tells varint/fixed/length-delimited).
fn scalar(r: &mut Reader, kind: &Kind, wire: u64) -> Result<Value, PbError> {
    Ok(match (kind, wire) {
        (Kind::Str, 2) => utf8(r.bytes()?)?.into(),
        (Kind::Bytes, 2) => b64(r.bytes()?),
        (Kind::Bool, 0) => (r.varint()? != 0).into(),
        // Two's complement: negative int32s are sent as 64-bit varints.
        (Kind::Int32, 0) => i64::from(r.varint()? as i32).into(),
        (Kind::Int64, 0) => (r.varint()? as i64).into(),
        _ => return Err(PbError::Malformed),
    })
}

fn is_packable(kind: &Kind) -> bool {
    matches!(kind, Kind::Bool | Kind::Int32 | Kind::Int64)
}

fn decode_message(bytes: &[u8], idx: usize, depth: usize) -> Result<Value, PbError> {
    if depth > MAX_DEPTH {
        return Err(PbError::TooDeep);
    }
    let msg = MESSAGES.get(idx).ok_or(PbError::Malformed)?;
    let mut out = Map::new();
    let mut r = Reader { b: bytes, pos: 0 };
    while !r.done() {
        let key = r.varint()?;
        let (tag, wire) = (key >> 3, key & 7);
        let Some(f) = msg.fields.iter().find(|f| u64::from(f.tag) == tag) else {
            r.skip(wire)?;
            continue;
        };
        let mut values = Vec::new();
        match &f.kind {
            Kind::Msg(i) => {
                let sub = r.bytes()?;
                let v = decode_message(sub, usize::from(*i), depth + 1)?;
                if f.inline {
                    if let Value::Object(m) = v {
                        out.extend(m);
                    }
                    continue;
                }
                values.push(v);
            }
            Kind::MapStr | Kind::MapBytes | Kind::MapMsg(_) => {
                let (k, v) = map_entry(r.bytes()?, &f.kind, depth)?;
                let entry = out
                    .entry(f.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            k if wire == 2 && is_packable(k) => {
                let mut packed = Reader {
                    b: r.bytes()?,
                    pos: 0,
                };
                while !packed.done() {
                    values.push(scalar(&mut packed, k, 0)?);
                }
            }
            k => values.push(scalar(&mut r, k, wire)?),
        }
        if f.repeated {
            let entry = out
                .entry(f.json)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(a) = entry.as_array_mut() {
                a.extend(values);
            }
        } else if let Some(v) = values.pop() {
            out.insert(f.json.to_string(), v);
        }
    }
    Ok(special(msg.name, out))
}

fn map_entry(bytes: &[u8], kind: &Kind, depth: usize) -> Result<(String, Value), PbError> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut key = String::new();
    let mut value = match kind {
        Kind::MapMsg(_) => Value::Object(Map::new()),
        _ => Value::String(String::new()),
    };
    while !r.done() {
        let k = r.varint()?;
        match (k >> 3, k & 7, kind) {
            (1, 2, _) => key = utf8(r.bytes()?)?,
            (2, 2, Kind::MapStr) => value = utf8(r.bytes()?)?.into(),
            (2, 2, Kind::MapBytes) => value = b64(r.bytes()?),
            (2, 2, Kind::MapMsg(i)) => {
                value = decode_message(r.bytes()?, usize::from(*i), depth + 1)?
            }
            (_, w, _) => r.skip(w)?,
        }
    }
    Ok((key, value))
}

/// Messages whose JSON form is not an object (times, quantities, int-or-string, raw JSON),
/// and Go's omission of empty strings.
fn special(name: &str, mut m: Map<String, Value>) -> Value {
    let short = name.rsplit('.').next().unwrap_or(name);
    let pkg = name.strip_suffix(short).unwrap_or("");
    match (pkg, short) {
        ("apimachinery.pkg.apis.meta.v1.", "Time")
        | ("apimachinery.pkg.apis.meta.v1.", "MicroTime") => {
            let secs = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
            let nanos = m.get("nanos").and_then(Value::as_i64).unwrap_or(0);
            if secs == 0 && nanos == 0 {
                return Value::Null;
            }
            match time::OffsetDateTime::from_unix_timestamp(secs) {
                Ok(t) => {
                    let base = crate::common::clock::rfc3339(t);
                    if short == "MicroTime" {
                        format!("{}.{:06}Z", base.trim_end_matches('Z'), nanos / 1000).into()
                    } else {
                        base.into()
                    }
                }
                Err(_) => Value::Null,
            }
        }
        ("apimachinery.pkg.api.resource.", "Quantity") => m
            .remove("string")
            .unwrap_or_else(|| Value::String("0".into())),
        ("apimachinery.pkg.util.intstr.", "IntOrString") => {
            if m.get("type").and_then(Value::as_i64) == Some(1) {
                m.remove("strVal")
                    .unwrap_or_else(|| Value::String(String::new()))
            } else {
                m.remove("intVal").unwrap_or_else(|| Value::from(0))
            }
        }
        ("apimachinery.pkg.runtime.", "RawExtension")
        | ("apimachinery.pkg.apis.meta.v1.", "FieldsV1") => {
            let key = if short == "FieldsV1" { "Raw" } else { "raw" };
            m.get(key)
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|raw| serde_json::from_slice(&raw).ok())
                .unwrap_or(Value::Null)
        }
        _ => {
            // Go's JSON omits empty strings of optional fields; proto2 still carries them.
            m.retain(|_, v| v.as_str() != Some("") && !v.is_null());
            Value::Object(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(tag: u64, wire: u64, out: &mut Vec<u8>) {
        varint(tag << 3 | wire, out);
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes(tag: u64, b: &[u8], out: &mut Vec<u8>) {
        field(tag, 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = Vec::new();
        bytes(1, api_version.as_bytes(), &mut tm);
        bytes(2, kind.as_bytes(), &mut tm);
        let mut out = b"k8s\0".to_vec();
        bytes(1, &tm, &mut out);
        bytes(2, raw, &mut out);
        out
    }

    #[test]
    fn decodes_a_configmap_as_kubectl_sends_it() {
        let mut meta = Vec::new();
        bytes(1, b"cm1", &mut meta);
        bytes(3, b"", &mut meta); // empty namespace: omitted like Go's JSON
        let mut entry = Vec::new();
        bytes(1, b"k", &mut entry);
        bytes(2, b"v", &mut entry);
        let mut cm = Vec::new();
        bytes(1, &meta, &mut cm);
        bytes(2, &entry, &mut cm);
        let (av, kind, obj) = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!((av.as_str(), kind.as_str()), ("v1", "ConfigMap"));
        assert_eq!(
            obj,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn decodes_deployment_replicas_quantities_and_int_or_string() {
        let mut port = Vec::new();
        field(1, 0, &mut port);
        varint(1, &mut port); // type String
        bytes(3, b"http", &mut port);
        let mut strategy_ru = Vec::new();
        bytes(1, &port, &mut strategy_ru); // maxUnavailable
        let mut strategy = Vec::new();
        bytes(1, b"RollingUpdate", &mut strategy);
        bytes(2, &strategy_ru, &mut strategy);
        let mut spec = Vec::new();
        field(1, 0, &mut spec);
        varint(3, &mut spec);
        bytes(4, &strategy, &mut spec);
        let mut d = Vec::new();
        bytes(2, &spec, &mut d);
        let (_, _, obj) = decode(&envelope("apps/v1", "Deployment", &d)).unwrap();
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(
            obj["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            "http"
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(decode(b"nope"), Err(PbError::NoMagic)));
        assert!(decode(b"k8s\0\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        let e = decode(&envelope("v1", "NoSuchKind", b"")).unwrap_err();
        assert!(e.to_string().contains("NoSuchKind"));
        for n in 0..40u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = decode(&[b"k8s\0".as_slice(), &junk].concat());
        }
    }

    #[test]
    fn schema_names_are_sorted_for_binary_search() {
        assert!(MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        assert!(message_index("api.core.v1.Pod").is_some());
        assert!(message_index("api.authorization.v1.SelfSubjectAccessReview").is_some());
        assert_eq!(package("rbac.authorization.k8s.io/v1"), "api.rbac.v1");
    }
}
