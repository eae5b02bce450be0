//! Label and field selectors: parsing and matching of the `labelSelector` and `fieldSelector`
//! query parameters, and of `metav1.LabelSelector` objects, with the semantics and error texts
//! of apimachinery's `labels` and `fields` packages as served by kube-apiserver 1.32.
//!
//! Owns only the selector grammar, the per-resource table of selectable fields (upstream's field
//! label conversion functions and `ToSelectableFields`), and matching against objects held as
//! `serde_json::Value`. It never touches storage or HTTP: callers parse, check, and match, and
//! map a [`SelectorError`] to a 400 BadRequest carrying its message verbatim.
//!
//! Error texts follow what the API server returns, which is the bare `labels.Parse` /
//! `fields.ParseSelector` error (kube-apiserver does not add the `couldn't parse the selector
//! string` prefix that `metav1.ParseToLabelSelector` adds on the client side).

use super::gofmt::{go_quote, json_type};
use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// A selector that failed to parse, or names a field the resource cannot be selected by.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    /// The message is upstream's; the server answers 400 BadRequest with it.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> SelectorError {
    SelectorError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Validation (apimachinery pkg/util/validation, 1.32 wording)
// ---------------------------------------------------------------------------------------------

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
                                      and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MAX_LEN: usize = 63;
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of \
                                   alphanumeric characters, '-', '_' or '.', and must start and \
                                   end with an alphanumeric character";
const LABEL_VALUE_MAX_LEN: usize = 63;
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower \
                                         case alphanumeric characters, '-' or '.', and must start \
                                         and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Upstream's `RegexError`, including its doubled space before each " or ".
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, anchored.
fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LEN));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream's `IsQualifiedName` (label keys).
fn is_qualified_name(value: &str) -> Vec<String> {
    let examples = ["MyName", "my.name", "123-abc"];
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &examples)
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LEN {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LEN)
        ));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &examples)
        ));
    }
    errs
}

/// Upstream's `IsValidLabelValue`.
fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LEN {
        errs.push(max_len_error(LABEL_VALUE_MAX_LEN));
    }
    if !(value.is_empty() || is_qualified_name_part(value)) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Go's `encoding/json` rendering of a string (HTML-safe escaping included).
fn go_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How `field.Invalid` renders a `[]string` bad value: JSON, `null` for a nil slice.
fn go_json_string_list(values: &[String]) -> String {
    if values.is_empty() {
        return "null".to_string();
    }
    let items: Vec<String> = values.iter().map(|v| go_json_string(v)).collect();
    format!("[{}]", items.join(","))
}

/// `field.Invalid(path, value, detail).Error()`; `bad` is already rendered.
fn field_invalid(path: &str, bad: &str, detail: &str) -> String {
    if detail.is_empty() {
        format!("{path}: Invalid value: {bad}")
    } else {
        format!("{path}: Invalid value: {bad}: {detail}")
    }
}

/// `utilerrors.NewAggregate(errs).Error()`: one message as is, several de-duplicated in brackets.
fn aggregate(errs: Vec<String>) -> Option<String> {
    match errs.len() {
        0 => None,
        1 => errs.into_iter().next(),
        _ => {
            let mut seen: Vec<String> = Vec::new();
            for e in errs {
                if !seen.contains(&e) {
                    seen.push(e);
                }
            }
            if seen.len() == 1 {
                seen.into_iter().next()
            } else {
                Some(format!("[{}]", seen.join(", ")))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// `selection.Operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    Exists,
    DoesNotExist,
}

/// One requirement; `values` as upstream's `strValues` (sorted and unique when parsed from a
/// string, as given when built from a `metav1.LabelSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// Upstream's `NewRequirement` with no field path (errors name `key`, `values[i][key]`).
fn new_requirement(key: &str, op: Op, values: Vec<String>) -> Result<Requirement, String> {
    let mut errs = Vec::new();
    let key_errs = is_qualified_name(key);
    if !key_errs.is_empty() {
        errs.push(field_invalid("key", &go_quote(key), &key_errs.join("; ")));
    }
    match op {
        Op::In | Op::NotIn => {
            if values.is_empty() {
                errs.push(field_invalid(
                    "values",
                    &go_json_string_list(&values),
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
        }
        Op::Equals | Op::DoubleEquals | Op::NotEquals => {
            if values.len() != 1 {
                errs.push(field_invalid(
                    "values",
                    &go_json_string_list(&values),
                    "exact-match compatibility requires one single value",
                ));
            }
        }
        Op::Exists | Op::DoesNotExist => {
            if !values.is_empty() {
                errs.push(field_invalid(
                    "values",
                    &go_json_string_list(&values),
                    "values set must be empty for exists and does not exist",
                ));
            }
        }
        Op::GreaterThan | Op::LessThan => {
            if values.len() != 1 {
                errs.push(field_invalid(
                    "values",
                    &go_json_string_list(&values),
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(field_invalid(
                        &format!("values[{i}]"),
                        &go_quote(v),
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    ));
                }
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let value_errs = is_valid_label_value(v);
        if !value_errs.is_empty() {
            errs.push(field_invalid(
                &format!("values[{i}][{key}]"),
                &go_quote(v),
                &value_errs.join("; "),
            ));
        }
    }
    match aggregate(errs) {
        Some(msg) => Err(msg),
        None => Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        }),
    }
}

fn label_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Requirement {
    fn has_value(&self, value: &str) -> bool {
        self.values.iter().any(|v| v == value)
    }

    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let got = labels.and_then(|l| l.get(&self.key)).map(label_str);
        match self.op {
            Op::In | Op::Equals | Op::DoubleEquals => got.is_some_and(|v| self.has_value(&v)),
            Op::NotIn | Op::NotEquals => got.is_none_or(|v| !self.has_value(&v)),
            Op::Exists => got.is_some(),
            Op::DoesNotExist => got.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let Some(Ok(have)) = got.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Op::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            Op::Equals => "=",
            Op::DoubleEquals => "==",
            Op::NotEquals => "!=",
            Op::In => " in ",
            Op::NotIn => " notin ",
            Op::GreaterThan => ">",
            Op::LessThan => "<",
            Op::Exists | Op::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.op, Op::In | Op::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut sorted: Vec<&str> = self.values.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        f.write_str(&sorted.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: the AND of its requirements, sorted by key like upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// `labels.Nothing()`: from a null `metav1.LabelSelector`; matches no object.
    nothing: bool,
}

impl LabelSelector {
    /// Parses a `labelSelector` query parameter (`""` selects everything).
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut parser = Parser::new(s);
        let mut requirements = parser.parse().map_err(invalid)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether an object with these `metadata.labels` (None = no labels) is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// From a metav1.LabelSelector JSON object ({matchLabels, matchExpressions}) — used by
    /// controllers/scale; error on bad operator. Upstream's `LabelSelectorAsSelector`: `null`
    /// selects nothing, `{}` selects everything, and errors carry upstream's text unwrapped.
    pub fn from_json(sel: &Value) -> Result<LabelSelector, SelectorError> {
        let obj = match sel {
            Value::Null => {
                return Ok(LabelSelector {
                    requirements: Vec::new(),
                    nothing: true,
                });
            }
            Value::Object(obj) => obj,
            other => {
                return Err(invalid(format!(
                    "json: cannot unmarshal {} into Go value of type v1.LabelSelector",
                    json_type(other)
                )));
            }
        };
        let empty = Map::new();
        let match_labels = match obj.get("matchLabels") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(invalid(format!(
                    "json: cannot unmarshal {} into Go struct field LabelSelector.matchLabels of \
                     type map[string]string",
                    json_type(other)
                )));
            }
        };
        let expressions: &[Value] = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                return Err(invalid(format!(
                    "json: cannot unmarshal {} into Go struct field \
                     LabelSelector.matchExpressions of type []v1.LabelSelectorRequirement",
                    json_type(other)
                )));
            }
        };
        let mut requirements = Vec::with_capacity(match_labels.len() + expressions.len());
        for (key, value) in match_labels {
            let value = json_string_field(value, "LabelSelector.matchLabels", "string")?;
            requirements.push(new_requirement(key, Op::Equals, vec![value]).map_err(invalid)?);
        }
        for expr in expressions {
            let empty_expr = Map::new();
            let expr = match expr {
                Value::Null => &empty_expr,
                Value::Object(m) => m,
                other => {
                    return Err(invalid(format!(
                        "json: cannot unmarshal {} into Go struct field \
                         LabelSelector.matchExpressions of type v1.LabelSelectorRequirement",
                        json_type(other)
                    )));
                }
            };
            let field = |name: &str| expr.get(name).unwrap_or(&Value::Null);
            let key =
                json_string_field(field("key"), "LabelSelector.matchExpressions.key", "string")?;
            let operator = json_string_field(
                field("operator"),
                "LabelSelector.matchExpressions.operator",
                "v1.LabelSelectorOperator",
            )?;
            let values = match field("values") {
                Value::Null => Vec::new(),
                Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        json_string_field(v, "LabelSelector.matchExpressions.values", "string")
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => {
                    return Err(invalid(format!(
                        "json: cannot unmarshal {} into Go struct field \
                         LabelSelector.matchExpressions.values of type []string",
                        json_type(other)
                    )));
                }
            };
            let op = match operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(invalid(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    )));
                }
            };
            requirements.push(new_requirement(&key, op, values).map_err(invalid)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }
}

/// A JSON string field as Go's decoder takes it: `null` leaves the zero value.
fn json_string_field(v: &Value, field: &str, go_type: &str) -> Result<String, SelectorError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(format!(
            "json: cannot unmarshal {} into Go struct field {field} of type {go_type}",
            json_type(other)
        ))),
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream's `Selector.String()`: requirements sorted by key, joined by commas, set values
    /// sorted; e.g. `app=web,tier in (a,b)`. Empty (and the nothing selector) print as `""`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Lexer tokens of upstream's label selector grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &[u8]) -> Option<Tok> {
    Some(match s {
        b")" => Tok::ClosedPar,
        b"," => Tok::Comma,
        b"!" => Tok::DoesNotExist,
        b"==" => Tok::DoubleEquals,
        b"=" => Tok::Equals,
        b">" => Tok::GreaterThan,
        b"in" => Tok::In,
        b"<" => Tok::LessThan,
        b"!=" => Tok::NotEquals,
        b"notin" => Tok::NotIn,
        b"(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(ch: u8) -> bool {
    matches!(ch, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Byte lexer mirroring upstream's, including its quirk that a NUL byte reads as end of input.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn read(&mut self) -> u8 {
        match self.s.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn scan_id_or_keyword(&mut self) -> (Tok, String) {
        let mut buffer = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if is_special_symbol(ch) || is_whitespace(ch) {
                self.unread();
                break;
            }
            buffer.push(ch);
        }
        match keyword(&buffer) {
            Some(tok) => (tok, lossy(&buffer)),
            None => (Tok::Identifier, lossy(&buffer)),
        }
    }

    fn scan_special_symbol(&mut self) -> (Tok, String) {
        let mut last: Option<(Tok, String)> = None;
        let mut buffer = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special_symbol(ch) {
                self.unread();
                break;
            }
            buffer.push(ch);
            if let Some(tok) = keyword(&buffer) {
                last = Some((tok, lossy(&buffer)));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        last.unwrap_or_else(|| {
            (
                Tok::Error,
                format!("error expected: keyword found '{}'", lossy(&buffer)),
            )
        })
    }

    fn lex(&mut self) -> (Tok, String) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            (Tok::EndOfString, String::new())
        } else if is_special_symbol(ch) {
            self.unread();
            self.scan_special_symbol()
        } else {
            self.unread();
            self.scan_id_or_keyword()
        }
    }
}

/// Whether `in`/`notin` are keywords (operator position) or plain identifiers (values).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

/// Recursive-descent parser over the scanned tokens, as upstream's.
struct Parser {
    items: Vec<(Tok, String)>,
    position: usize,
}

impl Parser {
    fn new(s: &str) -> Parser {
        let mut lexer = Lexer {
            s: s.as_bytes(),
            pos: 0,
        };
        let mut items = Vec::new();
        loop {
            let (tok, lit) = lexer.lex();
            let end = tok == Tok::EndOfString;
            items.push((tok, lit));
            if end {
                break;
            }
        }
        Parser { items, position: 0 }
    }

    fn peek_at(&self, idx: usize, ctx: Ctx) -> (Tok, String) {
        let (tok, lit) = self
            .items
            .get(idx)
            .cloned()
            .unwrap_or((Tok::EndOfString, String::new()));
        let tok = match (ctx, tok) {
            (Ctx::Values, Tok::In | Tok::NotIn) => Tok::Identifier,
            (_, t) => t,
        };
        (tok, lit)
    }

    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        self.peek_at(self.position, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let item = self.peek_at(self.position, ctx);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Tok::EndOfString => return Ok(requirements),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{l}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Tok::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Op::Exists | Op::DoesNotExist)) = op {
            return new_requirement(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(&key, op, values.into_iter().collect())
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Op>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let key_errs = is_qualified_name(&lit);
        if !key_errs.is_empty() {
            // upstream validates with a nil field.Path, which prints as "<nil>"
            return Err(field_invalid(
                "<nil>",
                &go_quote(&lit),
                &key_errs.join("; "),
            ));
        }
        let (next, _) = self.lookahead(Ctx::Values);
        if (next == Tok::EndOfString || next == Tok::Comma) && op != Some(Op::DoesNotExist) {
            op = Some(Op::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Op, String> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Op::In,
            Tok::Equals => Op::Equals,
            Tok::DoubleEquals => Op::DoubleEquals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let set = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Ctx::Values);
                if tok != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    set.insert(lit);
                    let (tok2, lit2) = self.lookahead(Ctx::Values);
                    match tok2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(set),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (tok2, _) = self.lookahead(Ctx::Values);
                    if tok2 == Tok::ClosedPar {
                        set.insert(String::new());
                        return Ok(set);
                    }
                    if tok2 == Tok::Comma {
                        self.consume(Ctx::Values);
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Tok::EndOfString || tok == Tok::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Tok::Identifier {
            Ok(BTreeSet::from([lit]))
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    /// `=` and `==` (upstream's `hasTerm`).
    Equals,
    /// `!=` (upstream's `notHasTerm`).
    NotEquals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    /// Unescaped.
    value: String,
}

/// A parsed field selector: the AND of its terms, in upstream's (sorted) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Upstream's `splitTerms`: commas split terms unless backslash-escaped (escape kept).
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(selector.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    terms.push(selector.get(start..).unwrap_or_default());
    terms
}

/// Upstream's `splitTerm`: the first `!=`, `==` or `=` splits field from (escaped) value.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = term.get(i..).unwrap_or_default();
        for (text, op) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ] {
            if rest.starts_with(text) {
                let lhs = term.get(..i).unwrap_or_default();
                let rhs = rest.get(text.len()..).unwrap_or_default();
                return Some((lhs, op, rhs));
            }
        }
    }
    None
}

/// Upstream's `UnescapeValue`.
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(invalid(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // upstream formats the rune with %v, i.e. as its code point number
            ',' | '=' => {
                return Err(invalid(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )));
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(invalid(
            "invalid field selector: invalid escape sequence: \\",
        ));
    }
    Ok(out)
}

/// Upstream's `EscapeValue`.
fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl FieldSelector {
    /// Parses a `fieldSelector` query parameter (`""` selects everything).
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(invalid(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(rhs)?;
            // upstream's Transform replaces a term with empty field and value by Everything
            if field.is_empty() && value.is_empty() {
                continue;
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Checks every field is supported for this resource (group "" = core, resource = plural);
    /// else upstream's error for that kind: `field label not supported: <field>` for kinds with
    /// a registered field label conversion (and custom resources), `"<field>" is not a known
    /// field selector: only "metadata.name", "metadata.namespace"` for other built-in kinds.
    pub fn check_supported(&self, group: &str, resource: &str) -> Result<(), SelectorError> {
        let rules = rules_for(group, resource);
        for term in &self.terms {
            if rules.canonical(&term.field).is_none() {
                return Err(invalid(rules.reject(&term.field)));
            }
        }
        Ok(())
    }

    /// Whether the object is selected. Fields are read as upstream's `ToSelectableFields`
    /// renders them (strings as is, bools `true`/`false`, counts in decimal; missing = `""`,
    /// or `false`/`0` where upstream always sets the field); legacy aliases (`spec.host`,
    /// events.k8s.io's `regarding.*`) are honoured. A field [`check_supported`] would reject
    /// is read from the object's dotted JSON path.
    ///
    /// [`check_supported`]: FieldSelector::check_supported
    pub fn matches(&self, group: &str, resource: &str, obj: &Value) -> bool {
        let rules = rules_for(group, resource);
        self.terms.iter().all(|term| {
            let label = rules.canonical(&term.field).unwrap_or(&term.field);
            let got = field_value(group, resource, label, obj);
            match term.op {
                FieldOp::Equals => got == term.value,
                FieldOp::NotEquals => got != term.value,
            }
        })
    }

    /// True when the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// If the selector pins metadata.name with `=`/`==`, that name (lets the server do a point
    /// read). The first such term wins, as upstream's `RequiresExactMatch`; the caller must
    /// still apply [`matches`](FieldSelector::matches) to what it reads.
    pub fn exact_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.op == FieldOp::Equals && t.field == "metadata.name")
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// Upstream's `String()`: terms joined by commas, values re-escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// How a kind's field label conversion rejects a label.
#[derive(Clone, Copy)]
enum Reject {
    /// `field label not supported: <label>` (most registered conversions, custom resources).
    NotSupported,
    /// batch/v1 Job's wording.
    BatchJob,
    /// resource.k8s.io ResourceSlice's wording.
    ResourceSlice,
    /// `runtime.DefaultMetaV1FieldSelectorConversion`, for kinds without a registered one.
    DefaultMeta,
}

/// One kind's field label conversion: accepted labels mapped to canonical ones.
struct Rules {
    accepted: &'static [(&'static str, &'static str)],
    reject: Reject,
}

impl Rules {
    fn canonical(&self, label: &str) -> Option<&'static str> {
        self.accepted
            .iter()
            .find(|(from, _)| *from == label)
            .map(|(_, to)| *to)
    }

    fn reject(&self, label: &str) -> String {
        match self.reject {
            Reject::NotSupported => format!("field label not supported: {label}"),
            Reject::BatchJob => {
                format!(
                    "field label {} not supported for batchv1.Job",
                    go_quote(label)
                )
            }
            Reject::ResourceSlice => format!(
                "field label not supported for resource.k8s.io/v1beta1, Kind=ResourceSlice: \
                 {label}"
            ),
            Reject::DefaultMeta => format!(
                "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                go_quote(label)
            ),
        }
    }
}

const META: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
];

const POD_FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
    ("spec.nodeName", "spec.nodeName"),
    ("spec.restartPolicy", "spec.restartPolicy"),
    ("spec.schedulerName", "spec.schedulerName"),
    ("spec.serviceAccountName", "spec.serviceAccountName"),
    ("spec.hostNetwork", "spec.hostNetwork"),
    ("status.phase", "status.phase"),
    ("status.podIP", "status.podIP"),
    ("status.podIPs", "status.podIPs"),
    ("status.nominatedNodeName", "status.nominatedNodeName"),
    // backwards compatibility with old v1 clients
    ("spec.host", "spec.nodeName"),
];

const NODE_FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("spec.unschedulable", "spec.unschedulable"),
];

const RC_FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
    ("status.replicas", "status.replicas"),
];

const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject.kind", "involvedObject.kind"),
    ("involvedObject.namespace", "involvedObject.namespace"),
    ("involvedObject.name", "involvedObject.name"),
    ("involvedObject.uid", "involvedObject.uid"),
    ("involvedObject.apiVersion", "involvedObject.apiVersion"),
    (
        "involvedObject.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("involvedObject.fieldPath", "involvedObject.fieldPath"),
    ("reason", "reason"),
    ("reportingComponent", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

/// events.k8s.io maps its field names onto the core Event's selectable fields.
const EVENTS_V1_FIELDS: &[(&str, &str)] = &[
    ("reason", "reason"),
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

const NAMESPACE_FIELDS: &[(&str, &str)] = &[
    ("status.phase", "status.phase"),
    ("metadata.name", "metadata.name"),
];

const SECRET_FIELDS: &[(&str, &str)] = &[
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

const SERVICE_FIELDS: &[(&str, &str)] = &[
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
    ("spec.clusterIP", "spec.clusterIP"),
    ("spec.type", "spec.type"),
];

const JOB_FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
    ("status.successful", "status.successful"),
];

const CSR_FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("spec.signerName", "spec.signerName"),
];

const RESOURCE_SLICE_FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("spec.nodeName", "spec.nodeName"),
    ("spec.driver", "spec.driver"),
];

/// The field label conversion upstream registers for a group/resource.
fn rules_for(group: &str, resource: &str) -> Rules {
    let (accepted, reject) = match (group, resource) {
        ("", "pods") => (POD_FIELDS, Reject::NotSupported),
        ("", "nodes") => (NODE_FIELDS, Reject::NotSupported),
        ("", "replicationcontrollers") => (RC_FIELDS, Reject::NotSupported),
        ("", "events") => (EVENT_FIELDS, Reject::NotSupported),
        ("", "namespaces") => (NAMESPACE_FIELDS, Reject::NotSupported),
        ("", "secrets") => (SECRET_FIELDS, Reject::NotSupported),
        ("", "services") => (SERVICE_FIELDS, Reject::NotSupported),
        ("events.k8s.io", "events") => (EVENTS_V1_FIELDS, Reject::NotSupported),
        ("batch", "jobs") => (JOB_FIELDS, Reject::BatchJob),
        ("certificates.k8s.io", "certificatesigningrequests") => (CSR_FIELDS, Reject::NotSupported),
        ("resource.k8s.io", "resourceslices") => (RESOURCE_SLICE_FIELDS, Reject::ResourceSlice),
        (g, _) if super::resources::BUILTIN_GROUPS.contains(&g) => (META, Reject::DefaultMeta),
        // custom resources: metadata.name, metadata.namespace (scope unknown here)
        _ => (META, Reject::NotSupported),
    };
    Rules { accepted, reject }
}

/// The value at a dotted path, if present and not null.
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.as_object()?.get(part)?;
    }
    if cur.is_null() { None } else { Some(cur) }
}

/// A JSON scalar as upstream's field sets spell it.
fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        format!("{f:.0}")
                    }
                    Some(f) => f.to_string(),
                    None => n.to_string(),
                }
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
    }
}

fn str_at(obj: &Value, path: &str) -> String {
    lookup(obj, path).map(scalar_string).unwrap_or_default()
}

/// A field upstream always sets: absent reads as the type's zero value.
fn str_at_or(obj: &Value, path: &str, zero: &str) -> String {
    lookup(obj, path)
        .map(scalar_string)
        .unwrap_or_else(|| zero.to_string())
}

/// The first non-empty value among alternative paths.
fn first_str(obj: &Value, paths: &[&str]) -> String {
    paths
        .iter()
        .map(|p| str_at(obj, p))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// Events are served in two shapes (core v1 and events.k8s.io/v1); read either.
fn event_value(obj: &Value, label: &str) -> String {
    match label {
        "reportingComponent" => first_str(obj, &["reportingComponent", "reportingController"]),
        "source" => first_str(
            obj,
            &[
                "source.component",
                "deprecatedSource.component",
                "reportingComponent",
                "reportingController",
            ],
        ),
        l => match l.strip_prefix("involvedObject.") {
            Some(rest) => first_str(
                obj,
                &[
                    &format!("involvedObject.{rest}"),
                    &format!("regarding.{rest}"),
                ],
            ),
            None => str_at(obj, l),
        },
    }
}

/// A canonical field label's value, as the kind's `ToSelectableFields` computes it.
fn field_value(group: &str, resource: &str, label: &str, obj: &Value) -> String {
    match (group, resource, label) {
        (_, _, "metadata.name" | "metadata.namespace") => str_at(obj, label),
        ("", "pods", "spec.hostNetwork") => str_at_or(obj, "spec.hostNetwork", "false"),
        ("", "pods", "status.podIP") => {
            let first = obj
                .pointer("/status/podIPs/0/ip")
                .map(scalar_string)
                .unwrap_or_default();
            if first.is_empty() {
                str_at(obj, "status.podIP")
            } else {
                first
            }
        }
        // accepted by the conversion but never set by PodToSelectableFields
        ("", "pods", "status.podIPs") => String::new(),
        ("", "nodes", "spec.unschedulable") => str_at_or(obj, "spec.unschedulable", "false"),
        ("", "replicationcontrollers", "status.replicas") => str_at_or(obj, "status.replicas", "0"),
        ("batch", "jobs", "status.successful") => str_at_or(obj, "status.succeeded", "0"),
        ("" | "events.k8s.io", "events", l) => event_value(obj, l),
        (_, _, l) => str_at(obj, l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn lparse_err(s: &str) -> String {
        LabelSelector::parse(s).unwrap_err().to_string()
    }

    fn fparse_err(s: &str) -> String {
        FieldSelector::parse(s).unwrap_err().to_string()
    }

    const NAME_PART_REGEX_MSG: &str = "name part must consist of alphanumeric characters, '-', \
        '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or \
        'my.name',  or '123-abc', regex used for validation is \
        '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    const LABEL_VALUE_REGEX_MSG: &str = "a valid label must be an empty string or consist of \
        alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
        character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
        '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn label_equality_and_inequality() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        assert!(LabelSelector::parse("app=web").unwrap().matches(Some(&l)));
        assert!(LabelSelector::parse("app==web").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("app=db").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("app!=web").unwrap().matches(Some(&l)));
        assert!(LabelSelector::parse("app!=db").unwrap().matches(Some(&l)));
        // != and notin match when the label is absent
        assert!(
            LabelSelector::parse("missing!=x")
                .unwrap()
                .matches(Some(&l))
        );
        assert!(LabelSelector::parse("missing!=x").unwrap().matches(None));
        assert!(
            LabelSelector::parse("missing notin (x)")
                .unwrap()
                .matches(None)
        );
        assert!(!LabelSelector::parse("missing=x").unwrap().matches(None));
        // = with an empty value requires the key with an empty value
        let e = labels(json!({"a": ""}));
        assert!(LabelSelector::parse("a=").unwrap().matches(Some(&e)));
        assert!(!LabelSelector::parse("a=").unwrap().matches(None));
    }

    #[test]
    fn label_set_and_existence() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        let sel = LabelSelector::parse("tier in (fe,be),app").unwrap();
        assert!(sel.matches(Some(&l)));
        assert!(
            !LabelSelector::parse("tier notin (fe,be)")
                .unwrap()
                .matches(Some(&l))
        );
        assert!(
            LabelSelector::parse("tier notin (be)")
                .unwrap()
                .matches(Some(&l))
        );
        assert!(LabelSelector::parse("app").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("!app").unwrap().matches(Some(&l)));
        assert!(LabelSelector::parse("!other").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("other").unwrap().matches(None));
        // "in" / "notin" are plain identifiers in value position
        let kw = labels(json!({"x": "in"}));
        assert!(
            LabelSelector::parse("x in (in,notin)")
                .unwrap()
                .matches(Some(&kw))
        );
        assert!(LabelSelector::parse("x=in").unwrap().matches(Some(&kw)));
    }

    #[test]
    fn label_whitespace_prefix_and_empty_values() {
        let l = labels(json!({"example.com/key": "v", "app": "web"}));
        let sel = LabelSelector::parse("  example.com/key = v ,\tapp in ( web , db )\n").unwrap();
        assert!(sel.matches(Some(&l)));
        assert_eq!(sel.to_string(), "app in (db,web),example.com/key=v");
        // upstream's documented example
        let sel = LabelSelector::parse("x in (foo,,baz),y,z notin ()").unwrap();
        assert_eq!(sel.to_string(), "x in (,baz,foo),y,z notin ()");
        assert_eq!(
            LabelSelector::parse("a in (,)").unwrap().to_string(),
            "a in ()"
        );
    }

    #[test]
    fn label_gt_lt() {
        let l = labels(json!({"n": "6", "s": "abc"}));
        assert!(LabelSelector::parse("n>5").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("n>6").unwrap().matches(Some(&l)));
        assert!(LabelSelector::parse("n<7").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("s>1").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("m<1").unwrap().matches(Some(&l)));
        assert_eq!(
            lparse_err("n>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' \
             operators, the value must be an integer"
        );
    }

    #[test]
    fn label_empty() {
        let sel = LabelSelector::parse("").unwrap();
        assert!(sel.is_empty());
        assert!(sel.matches(None));
        assert_eq!(sel.to_string(), "");
        assert!(LabelSelector::parse("   ").unwrap().is_empty());
        assert!(!LabelSelector::parse("a").unwrap().is_empty());
    }

    #[test]
    fn label_parse_errors() {
        assert_eq!(
            lparse_err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            lparse_err("e!!!!!ss"),
            "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            lparse_err("a=b,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            lparse_err("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            lparse_err("foo=bar=42"),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            lparse_err("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            lparse_err(","),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            lparse_err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            lparse_err("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
        assert_eq!(
            lparse_err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            lparse_err("a in (="),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            lparse_err("a=("),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            lparse_err("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(
            lparse_err("app: nginx"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"app:\": {NAME_PART_REGEX_MSG}"
            )
        );
        assert_eq!(
            lparse_err("a=-b"),
            format!(
                "unable to parse requirement: values[0][a]: Invalid value: \"-b\": \
                 {LABEL_VALUE_REGEX_MSG}"
            )
        );
        let long = "a".repeat(64);
        assert_eq!(
            lparse_err(&format!("k={long}")),
            format!(
                "unable to parse requirement: values[0][k]: Invalid value: \"{long}\": must be \
                 no more than 63 characters"
            )
        );
        assert_eq!(
            lparse_err("k in (-a,-b)"),
            format!(
                "unable to parse requirement: [values[0][k]: Invalid value: \"-a\": \
                 {LABEL_VALUE_REGEX_MSG}, values[1][k]: Invalid value: \"-b\": \
                 {LABEL_VALUE_REGEX_MSG}]"
            )
        );
        assert_eq!(
            lparse_err("Example.com/a=b"),
            "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a \
             lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            lparse_err("/a"),
            "unable to parse requirement: <nil>: Invalid value: \"/a\": prefix part must be \
             non-empty"
        );
        assert!(lparse_err("a/b/c").contains("a qualified name must consist of"));
        assert!(lparse_err(&"k".repeat(64)).contains("name part must be no more than 63"));
    }

    #[test]
    fn label_display_round_trip() {
        for s in [
            "app=web,tier in (a,b)",
            "!a,b,c!=d,e notin (x,y),f==g,n>3,m<4",
            "example.com/k=v",
        ] {
            let sel = LabelSelector::parse(s).unwrap();
            let again = LabelSelector::parse(&sel.to_string()).unwrap();
            assert_eq!(sel, again, "{s}");
            assert_eq!(sel.to_string(), again.to_string());
        }
        assert_eq!(
            LabelSelector::parse("tier in (b,a),app=web")
                .unwrap()
                .to_string(),
            "app=web,tier in (a,b)"
        );
        assert_eq!(
            LabelSelector::parse("z,!y,x==1").unwrap().to_string(),
            "x==1,!y,z"
        );
    }

    #[test]
    fn label_from_json() {
        let sel = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "gone", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(sel.to_string(), "app=web,!gone,tier in (a,b)");
        assert!(sel.matches(Some(&labels(json!({"app": "web", "tier": "a"})))));
        assert!(!sel.matches(Some(&labels(json!({"app": "web", "tier": "c"})))));
        assert!(!sel.matches(Some(&labels(
            json!({"app": "web", "tier": "a", "gone": "1"})
        ))));
        let reparsed = LabelSelector::parse(&sel.to_string()).unwrap();
        assert_eq!(reparsed.to_string(), sel.to_string());

        let everything = LabelSelector::from_json(&json!({})).unwrap();
        assert!(everything.is_empty() && everything.matches(None));
        let nothing = LabelSelector::from_json(&Value::Null).unwrap();
        assert!(!nothing.is_empty() && !nothing.matches(None));
        assert_eq!(nothing.to_string(), "");

        let err = |v: Value| LabelSelector::from_json(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})),
            "\"Foo\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})),
            "values: Invalid value: [\"x\"]: values set must be empty for exists and does not \
             exist"
        );
        assert_eq!(
            err(json!({"matchLabels": {"a b": "c"}})),
            format!("key: Invalid value: \"a b\": {NAME_PART_REGEX_MSG}")
        );
        assert!(err(json!({"matchLabels": {"a": 1}})).starts_with("json: cannot unmarshal number"));
        assert!(err(json!("x")).starts_with("json: cannot unmarshal string"));
    }

    #[test]
    fn label_nul_byte_ends_input_like_upstream() {
        // upstream's lexer reads a NUL byte as end of input where a token starts, and skips
        // it where it ends an identifier
        let sel = LabelSelector::parse("a=b \0garbage here").unwrap();
        assert_eq!(sel.to_string(), "a=b");
        assert_eq!(
            lparse_err("a=b\0garbage"),
            "found 'garbage', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn field_parse_match_and_exact_name() {
        let pod = json!({
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.5"}], "podIP": "10.1.0.5"}
        });
        let sel = FieldSelector::parse("metadata.name=p1,status.phase!=Pending").unwrap();
        assert!(sel.check_supported("", "pods").is_ok());
        assert!(sel.matches("", "pods", &pod));
        assert_eq!(sel.exact_name(), Some("p1"));
        assert_eq!(sel.to_string(), "metadata.name=p1,status.phase!=Pending");

        assert!(
            FieldSelector::parse("spec.hostNetwork=false")
                .unwrap()
                .matches("", "pods", &pod)
        );
        assert!(
            !FieldSelector::parse("spec.hostNetwork=true")
                .unwrap()
                .matches("", "pods", &pod)
        );
        assert!(
            FieldSelector::parse("status.podIP==10.1.0.5")
                .unwrap()
                .matches("", "pods", &pod)
        );
        assert!(
            FieldSelector::parse("spec.host=n1")
                .unwrap()
                .matches("", "pods", &pod)
        );
        assert!(
            FieldSelector::parse("spec.schedulerName=")
                .unwrap()
                .matches("", "pods", &pod)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace=kube-system")
                .unwrap()
                .matches("", "pods", &pod)
        );
        assert_eq!(
            FieldSelector::parse("metadata.name!=p1")
                .unwrap()
                .exact_name(),
            None
        );

        let empty = FieldSelector::parse("").unwrap();
        assert!(empty.is_empty() && empty.matches("", "pods", &pod));
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
        assert!(FieldSelector::parse("=").unwrap().is_empty());
    }

    #[test]
    fn field_escaping() {
        let obj = json!({"metadata": {"name": "a,b=c\\d"}});
        let sel = FieldSelector::parse("metadata.name=a\\,b\\=c\\\\d").unwrap();
        assert!(sel.matches("", "configmaps", &obj));
        assert_eq!(sel.exact_name(), Some("a,b=c\\d"));
        assert_eq!(sel.to_string(), "metadata.name=a\\,b\\=c\\\\d");
        let again = FieldSelector::parse(&sel.to_string()).unwrap();
        assert_eq!(again, sel);
        // == is taken before =, so the value keeps no leading '='
        assert_eq!(FieldSelector::parse("a==b").unwrap().to_string(), "a=b");
    }

    #[test]
    fn field_parse_errors() {
        assert_eq!(
            fparse_err("foo"),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
        assert_eq!(
            fparse_err("a=b,bar"),
            "invalid selector: 'a=b,bar'; can't understand 'bar'"
        );
        assert_eq!(
            fparse_err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            fparse_err("a=b\\x"),
            "invalid field selector: invalid escape sequence: \\x"
        );
        assert_eq!(
            fparse_err("a=b\\"),
            "invalid field selector: invalid escape sequence: \\"
        );
    }

    #[test]
    fn field_supported_per_resource() {
        let err = |s: &str, g: &str, r: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .check_supported(g, r)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("spec.foo=x", "", "pods"),
            "field label not supported: spec.foo"
        );
        assert_eq!(
            err("spec.replicas=1", "apps", "deployments"),
            "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \
             \"metadata.namespace\""
        );
        assert_eq!(
            err("status.active=1", "batch", "jobs"),
            "field label \"status.active\" not supported for batchv1.Job"
        );
        assert_eq!(
            err("spec.x=1", "example.com", "widgets"),
            "field label not supported: spec.x"
        );
        assert_eq!(
            err("metadata.namespace=x", "", "nodes"),
            "field label not supported: metadata.namespace"
        );
        assert_eq!(err("=x", "", "pods"), "field label not supported: ");
        let ok = |s: &str, g: &str, r: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .check_supported(g, r)
                .is_ok()
        };
        assert!(ok("spec.unschedulable=false", "", "nodes"));
        assert!(ok("involvedObject.name=x,reason=y,source=z", "", "events"));
        assert!(ok(
            "regarding.name=x,reportingController=y",
            "events.k8s.io",
            "events"
        ));
        assert!(!ok("involvedObject.name=x", "events.k8s.io", "events"));
        assert!(ok("type=Opaque", "", "secrets"));
        assert!(ok("status.phase=Active,metadata.name=x", "", "namespaces"));
        assert!(ok("status.replicas=0", "", "replicationcontrollers"));
        assert!(ok("status.successful=1", "batch", "jobs"));
        assert!(ok(
            "spec.signerName=x",
            "certificates.k8s.io",
            "certificatesigningrequests"
        ));
        assert!(ok(
            "spec.clusterIP=None,spec.type=ClusterIP",
            "",
            "services"
        ));
        assert!(ok("metadata.name=a,metadata.namespace=b", "", "configmaps"));
        assert!(ok("metadata.name=a", "example.com", "widgets"));
    }

    #[test]
    fn field_values_by_kind() {
        let m = |s: &str, g: &str, r: &str, obj: &Value| {
            FieldSelector::parse(s).unwrap().matches(g, r, obj)
        };
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(m("spec.unschedulable=false", "", "nodes", &node));
        let rc = json!({"metadata": {"name": "r"}, "status": {}});
        assert!(m("status.replicas=0", "", "replicationcontrollers", &rc));
        let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 2}});
        assert!(m("status.successful=2", "batch", "jobs", &job));
        let core_event = json!({
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "Started",
            "reportingComponent": "kubelet",
            "type": "Normal"
        });
        assert!(m(
            "involvedObject.kind=Pod,involvedObject.name=p",
            "",
            "events",
            &core_event
        ));
        assert!(m(
            "source=kubelet,reason=Started,type=Normal",
            "",
            "events",
            &core_event
        ));
        let v1_event =
            json!({"regarding": {"kind": "Pod", "name": "p"}, "reportingController": "k"});
        assert!(m(
            "regarding.name=p,reportingController=k",
            "events.k8s.io",
            "events",
            &v1_event
        ));
        assert!(m(
            "regarding.name=p",
            "events.k8s.io",
            "events",
            &core_event
        ));
        let pod = json!({"status": {"podIPs": [{"ip": "10.0.0.1"}]}});
        // accepted upstream but never set in the pod's field set
        assert!(!m("status.podIPs=10.0.0.1", "", "pods", &pod));
        assert!(m("status.podIP=10.0.0.1", "", "pods", &pod));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let inputs = [
            "",
            "\0",
            "\\",
            "\\\\",
            ",",
            "=",
            "==",
            "!=",
            "!",
            "(",
            ")",
            "((",
            "in",
            "notin",
            "in in in",
            "a in",
            "a notin (",
            "a in (,",
            "a in (,,",
            "a in (b,",
            "é=ü",
            "a=é",
            "😀",
            "a\0=b",
            "a=\0",
            "!!!!",
            "<<>>",
            "a<",
            "a>",
            "a>=1",
            "a=b,,c",
            "\t\n\r ",
            "a in (b)c",
            "a=b\\,c",
            "\\=",
            "a=\\",
            "a!=",
            "!=a",
            "é\\,",
        ];
        for s in inputs {
            let _ = LabelSelector::parse(s).map(|l| l.to_string());
            let _ = FieldSelector::parse(s).map(|f| {
                let _ = f.check_supported("", "pods");
                let _ = f.matches("", "pods", &json!({}));
                f.to_string()
            });
        }
    }

    #[test]
    fn go_quote_escapes_like_strconv() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
        assert_eq!(go_quote("\u{200b}"), "\"\\u200b\"");
    }
}
