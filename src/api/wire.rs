//! DigiCert's JSON, parsed leniently (contract section 3): unknown fields are ignored, open sets
//! stay strings, every documented alternative is accepted (envelope or bare array, `timestamp` or
//! `date` as RFC 3339 text or epoch milliseconds, a `user` object or flat `user_name`/`user_id`,
//! `ip_address` or its aliases `client_ip`/`ipAddress`, the three error-body shapes), and an
//! event that cannot be understood becomes a [`Malformed`] record instead of an error.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// One audit event, normalized; `raw` is the event's JSON exactly as received.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: String,
    pub timestamp: DateTime<Utc>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    /// Lowercased (`success` / `failure`; other values kept as they are, lowercased).
    pub status: Option<String>,
    pub ip_address: Option<String>,
    pub description: Option<String>,
    /// The `data` field as text (a JSON string is unwrapped; an object is kept as JSON text).
    pub data: Option<String>,
    pub account_id: Option<String>,
    pub raw: String,
}

/// An event that could not be understood: kept with the reason, never dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The event's id when it has one, otherwise `sha256:<hex of raw>` (stable across re-reads).
    pub key: String,
    pub raw: String,
    pub reason: String,
}

impl Malformed {
    fn new(id: Option<String>, raw: &str, reason: String) -> Malformed {
        let key = match id {
            Some(id) => id,
            None => format!("sha256:{}", hex::encode(Sha256::digest(raw.as_bytes()))),
        };
        Malformed {
            key,
            raw: raw.to_string(),
            reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // most items are events; boxing each would cost an allocation
pub enum ParsedEvent {
    Event(AuditEvent),
    Malformed(Malformed),
}

impl ParsedEvent {
    /// The deduplication key of the item within its account.
    pub fn key(&self) -> &str {
        match self {
            ParsedEvent::Event(e) => &e.id,
            ParsedEvent::Malformed(m) => &m.key,
        }
    }
}

/// One page of `/audit-log`.
#[derive(Debug)]
pub struct AuditPage {
    /// `total` from the envelope; `None` for a bare-array response.
    pub total: Option<u64>,
    pub items: Vec<ParsedEvent>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    total: Option<u64>,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

/// Split a DigiCert ONE list body into the server's `total` (envelope only) and the raw items:
/// an envelope `{"total", "items"}` or a bare array (contract 1.2 and 1.4). `what` names the items
/// in error messages.
pub fn split_list<'a>(
    body: &'a str,
    what: &str,
) -> Result<(Option<u64>, Vec<&'a RawValue>), String> {
    match first_char(body) {
        Some('[') => Ok((
            None,
            serde_json::from_str(body).map_err(|e| format!("not a JSON array of {what}: {e}"))?,
        )),
        Some('{') => {
            let env: Envelope =
                serde_json::from_str(body).map_err(|e| format!("not a JSON envelope: {e}"))?;
            let items = env
                .items
                .ok_or_else(|| "the envelope has no \"items\" array".to_string())?;
            Ok((env.total, items))
        }
        _ => Err(format!("expected JSON, got {}", preview(body))),
    }
}

/// Parse an `/audit-log` body: an envelope `{"total", "items"}` or a bare array of events.
///
/// One pass over the bytes: each event is deserialized into its typed fields straight from the
/// body, and its raw JSON is the slice it was read from ([`single_pass`]). A body that pass does
/// not take as it comes (an escaped key, a repeated field, anything unexpected, or an error) is
/// parsed again the two-pass way (split into raw items, then each item), which is the reference:
/// the single pass gives the same page or none.
pub fn parse_audit_page(body: &str) -> Result<AuditPage, String> {
    if let Some(page) = single_pass(body) {
        return Ok(page);
    }
    let (total, raws) = split_list(body, "events")?;
    Ok(AuditPage {
        total,
        items: raws.into_iter().map(|r| parse_event(r.get())).collect(),
    })
}

/// The index of the first non-whitespace byte (JSON whitespace) at or after `i`.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The JSON value that starts at `body[i]` (no whitespace before it), deserialized as `T`, and
/// the index just past it.
fn value_at<'a, T: Deserialize<'a>>(
    body: &'a str,
    i: usize,
) -> Option<(serde_json::Result<T>, usize)> {
    let mut values = serde_json::Deserializer::from_str(body.get(i..)?).into_iter::<T>();
    let v = values.next()?;
    let end = i + values.byte_offset();
    Some((v, end))
}

/// The single pass of [`parse_audit_page`]; `None` sends the body to the two-pass parse.
fn single_pass(body: &str) -> Option<AuditPage> {
    let b = body.as_bytes();
    let i = skip_ws(b, 0);
    let (total, items, end) = match b.get(i)? {
        b'[' => {
            let (items, end) = items_at(body, i)?;
            (None, items, end)
        }
        b'{' => envelope_at(body, i)?,
        _ => return None,
    };
    // Only whitespace may follow, as `serde_json::from_str` requires.
    (skip_ws(b, end) == b.len()).then_some(AuditPage { total, items })
}

/// The envelope object at `body[i]` (`{`): its `total`, its items and the index past it. As the
/// derived [`Envelope`]: unknown fields skipped, `total` optional (or `null`), `items` required;
/// a repeated field, or a key with an escape, is left to the two-pass parse.
#[allow(clippy::type_complexity)]
fn envelope_at(body: &str, mut i: usize) -> Option<(Option<u64>, Vec<ParsedEvent>, usize)> {
    let b = body.as_bytes();
    let (mut total, mut seen_total, mut items) = (None, false, None);
    i += 1;
    // Each turn consumes at least a key and a value: bounded by the body's length.
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let len = b.get(i + 1..)?.iter().position(|&c| c == b'"')?;
        let key = body.get(i + 1..i + 1 + len)?;
        if key.contains('\\') {
            return None;
        }
        i = skip_ws(b, i + len + 2);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        match key {
            "items" if items.is_none() => {
                let (v, end) = items_at(body, i)?;
                items = Some(v);
                i = end;
            }
            "total" if !seen_total => {
                let (v, end) = value_at::<Option<u64>>(body, i)?;
                total = v.ok()?;
                seen_total = true;
                i = end;
            }
            "items" | "total" => return None,
            _ => {
                let (v, end) = value_at::<de::IgnoredAny>(body, i)?;
                v.ok()?;
                i = end;
            }
        }
        i = skip_ws(b, i);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return Some((total, items?, i + 1)),
            _ => return None,
        }
    }
}

/// The array of events at `body[i]` (`[`), each parsed once, and the index past it. An item the
/// typed pass rejects is measured as a raw value and given to [`parse_event`], which makes it the
/// same [`Malformed`] record as the two-pass parse; an item that is not JSON at all fails the
/// page (`None`).
fn items_at(body: &str, mut i: usize) -> Option<(Vec<ParsedEvent>, usize)> {
    let b = body.as_bytes();
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut items = Vec::new();
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some((items, i + 1));
    }
    // Each turn consumes one item: bounded by the body's length.
    loop {
        i = skip_ws(b, i);
        let (w, end) = value_at::<WireEvent>(body, i)?;
        let (item, end) = match w {
            Ok(w) => (from_wire(w, body.get(i..end)?), end),
            Err(_) => {
                let (raw, end) = value_at::<&RawValue>(body, i)?;
                (parse_event(raw.ok()?.get()), end)
            }
        };
        items.push(item);
        i = end;
        i = skip_ws(b, i);
        match b.get(i)? {
            b',' => i += 1,
            b']' => return Some((items, i + 1)),
            _ => return None,
        }
    }
}

/// The first non-blank character of a body: tells a JSON object from an array.
pub fn first_char(s: &str) -> Option<char> {
    s.trim_start().chars().next()
}

/// The first bytes of a body, printable, for an error message.
pub fn preview(body: &str) -> String {
    let t: String = body.chars().take(80).collect();
    let t: String = t
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().count() > 80 {
        format!("{t:?}…")
    } else {
        format!("{t:?}")
    }
}

/// A scalar that may arrive as a string, a number or a bool; kept as a string.
#[derive(Debug, Default)]
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Text, D::Error> {
                Text::deserialize(d)
            }
        }
        d.deserialize_any(V)
    }
}

/// An event time as served: RFC 3339 text, or epoch milliseconds as a JSON number (sibling
/// DigiCert APIs, contract 1.2). A number in a string is text, not milliseconds.
#[derive(Debug, Default)]
enum Stamp<'a> {
    #[default]
    Absent,
    /// Borrowed from the body when it has no escapes.
    Text(std::borrow::Cow<'a, str>),
    Millis(f64),
}

impl<'de: 'a, 'a> Deserialize<'de> for Stamp<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stamp<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Stamp<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or epoch milliseconds")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Text(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Text(v.to_string().into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Millis(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Millis(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Millis(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Text(v.to_string().into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Stamp<'a>, E> {
                Ok(Stamp::Absent)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Stamp<'a>, D::Error> {
                Stamp::deserialize(d)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'a> Stamp<'a> {
    fn or(self, other: Stamp<'a>) -> Stamp<'a> {
        match self {
            Stamp::Absent => other,
            s => s,
        }
    }
}

/// `{id, name}` as an object, or a bare string (taken as the name).
#[derive(Debug, Default)]
struct Party {
    id: Option<String>,
    name: Option<String>,
}

impl<'de> Deserialize<'de> for Party {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Party, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Party;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object {id, name} or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Party, E> {
                Ok(Party {
                    id: None,
                    name: Some(v.to_string()),
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Party, E> {
                Ok(Party::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Party, A::Error> {
                let mut p = Party::default();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match k.as_ref() {
                        "id" => p.id = m.next_value::<Text>()?.0,
                        "name" | "user_name" | "username" => p.name = m.next_value::<Text>()?.0,
                        _ => {
                            m.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(p)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireEvent<'a> {
    id: Text,
    #[serde(borrow)]
    timestamp: Stamp<'a>,
    #[serde(borrow)]
    date: Stamp<'a>,
    account: Option<Party>,
    user: Option<Party>,
    user_name: Text,
    user_id: Text,
    resource_type: Text,
    resource_id: Text,
    resource_name: Text,
    action: Text,
    status: Text,
    description: Text,
    ip_address: Text,
    /// Aliases of `ip_address` in sibling DigiCert services (contract 1.2).
    client_ip: Text,
    #[serde(rename = "ipAddress")]
    ip_address_camel: Text,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Parse one event; anything not understood becomes [`ParsedEvent::Malformed`] with the reason.
pub fn parse_event(raw: &str) -> ParsedEvent {
    let w: WireEvent = match serde_json::from_str(raw) {
        Ok(w) => w,
        Err(e) => {
            // Still try to recover the id so a later good copy replaces nothing twice.
            let id = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str().map(str::to_string)));
            return ParsedEvent::Malformed(Malformed::new(
                id,
                raw,
                format!("not an event object: {e}"),
            ));
        }
    };
    from_wire(w, raw)
}

/// The event (or the reason it is malformed) of a deserialized item whose JSON is `raw`.
fn from_wire(w: WireEvent<'_>, raw: &str) -> ParsedEvent {
    let id = w.id.0.filter(|s| !s.trim().is_empty());
    let Some(id) = id else {
        return ParsedEvent::Malformed(Malformed::new(None, raw, "no id".into()));
    };
    let timestamp = match w.timestamp.or(w.date) {
        Stamp::Text(text) => match parse_timestamp(&text) {
            Ok(t) => t,
            Err(bad) => {
                return ParsedEvent::Malformed(Malformed::new(
                    Some(id),
                    raw,
                    format!("bad timestamp {}", preview(&bad)),
                ))
            }
        },
        Stamp::Millis(ms) => match from_epoch_ms(ms) {
            Some(t) => t,
            None => {
                return ParsedEvent::Malformed(Malformed::new(
                    Some(id),
                    raw,
                    format!("bad timestamp {ms} (epoch milliseconds out of range)"),
                ))
            }
        },
        Stamp::Absent => {
            return ParsedEvent::Malformed(Malformed::new(Some(id), raw, "no timestamp".into()))
        }
    };
    let (actor_id, actor_name) = match w.user {
        Some(p) => (p.id.or(w.user_id.0), p.name.or(w.user_name.0)),
        None => (w.user_id.0, w.user_name.0),
    };
    let data = w.data.and_then(|d| {
        let text = d.get();
        if text.starts_with('"') {
            serde_json::from_str::<String>(text).ok()
        } else if text == "null" {
            None
        } else {
            Some(text.to_string())
        }
    });
    ParsedEvent::Event(AuditEvent {
        id,
        timestamp,
        action: w.action.0.unwrap_or_default(),
        resource_type: w.resource_type.0,
        resource_id: w.resource_id.0,
        resource_name: w.resource_name.0,
        actor_id,
        actor_name,
        status: w.status.0.map(lowercase),
        ip_address: w.ip_address.0.or(w.client_ip.0).or(w.ip_address_camel.0),
        description: w.description.0,
        data,
        account_id: w.account.and_then(|a| a.id),
        raw: raw.to_string(),
    })
}

/// `s` lowercased, in place when it is ASCII (the usual case: no second allocation).
fn lowercase(mut s: String) -> String {
    if s.is_ascii() {
        s.make_ascii_lowercase();
        s
    } else {
        s.to_lowercase()
    }
}

/// Epoch milliseconds (a fraction is rounded) as a UTC time, if in chrono's range.
fn from_epoch_ms(ms: f64) -> Option<DateTime<Utc>> {
    if !ms.is_finite() || ms.abs() > 8.0e15 {
        return None;
    }
    DateTime::from_timestamp_millis(ms.round() as i64)
}

/// RFC 3339 with an offset, milliseconds optional (`Z`, `+00:00`, `+02:00`).
fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| s.to_string())
}

#[derive(Deserialize)]
struct ErrItem {
    #[serde(default)]
    code: Text,
    #[serde(default)]
    message: Text,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrList {
    Many(Vec<ErrItem>),
    One(ErrItem),
}

#[derive(Deserialize)]
struct ErrBody {
    errors: Option<ErrList>,
    error: Option<ErrItem>,
    code: Option<Text>,
    message: Option<Text>,
}

/// The `(code, message)` pairs of an error body in any of the documented shapes.
pub fn parse_error_body(body: &str) -> Vec<(String, String)> {
    let Ok(b) = serde_json::from_str::<ErrBody>(body) else {
        return Vec::new();
    };
    let pair = |i: ErrItem| {
        (
            i.code.0.unwrap_or_default(),
            i.message.0.unwrap_or_default(),
        )
    };
    let mut out: Vec<(String, String)> = match b.errors {
        Some(ErrList::Many(v)) => v.into_iter().map(pair).collect(),
        Some(ErrList::One(i)) => vec![pair(i)],
        None => Vec::new(),
    };
    if let Some(e) = b.error {
        out.push(pair(e));
    }
    if b.code.is_some() || b.message.is_some() {
        out.push((
            b.code.and_then(|c| c.0).unwrap_or_default(),
            b.message.and_then(|m| m.0).unwrap_or_default(),
        ));
    }
    out
}

/// Parse the body of `GET /account` or `GET /user/me`: anything that is JSON proves the key works.
pub fn parse_any_json(body: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope page keeps its total; a bare array has none.
    #[test]
    fn envelope_and_bare_array() {
        let ev = r#"{"id":"a1","timestamp":"2026-11-02T08:15:30.125+00:00","action":"login","user":{"id":"u1","name":"ann"},"status":"SUCCESS"}"#;
        let page = parse_audit_page(&format!(
            r#"{{"total": 7, "offset": 0, "limit": 1, "items": [{ev}]}}"#
        ))
        .unwrap();
        assert_eq!(page.total, Some(7));
        let ParsedEvent::Event(e) = &page.items[0] else {
            panic!("not parsed")
        };
        assert_eq!(e.raw, ev);
        assert_eq!(e.status.as_deref(), Some("success"));
        assert_eq!(e.actor_name.as_deref(), Some("ann"));
        let bare = parse_audit_page(&format!("[{ev},{ev}]")).unwrap();
        assert_eq!(bare.total, None);
        assert_eq!(bare.items.len(), 2);
    }

    /// The two-pass parse, the reference of the single pass.
    fn two_pass(body: &str) -> Result<(Option<u64>, Vec<ParsedEvent>), String> {
        let (total, raws) = split_list(body, "events")?;
        Ok((
            total,
            raws.into_iter().map(|r| parse_event(r.get())).collect(),
        ))
    }

    /// The single pass gives the two-pass page, raw slices byte for byte, malformed items
    /// included; the bodies it leaves (escaped or repeated keys, errors) still parse as before.
    #[test]
    fn single_pass_matches_the_two_pass_parse() {
        let ev = r#"{"id":"a1","timestamp":"2026-11-02T08:15:30.125+00:00","action":"login","user":{"id":"u1","name":"ann"},"status":"SUCCESS","data":{"k":[1,{"x":"y"}]}}"#;
        let esc = r#"{ "id" : "a\"2", "timestamp": "2026-11-02T08:15:30Z", "description": "caf\u00e9 \\ \n", "status": "Échec" }"#;
        let bodies = [
            format!(r#"{{"total": 3, "offset": 0, "limit": 10, "items": [{ev}, {esc},{ev}]}}"#),
            format!(r#"  {{ "items" : [ {ev} ] , "total" : null , "x": {{"a":[1,2]}} }}  "#),
            format!(
                r#"[{ev},42,"s",null,{{"timestamp":"2026-11-02T01:00:00Z"}},{{"id":"b","timestamp":"soon"}},[1,2],{{"id":"c","timestamp":true}}]"#
            ),
            format!("[\n\t{ev}\r\n]\n"),
            "[]".to_string(),
            r#"{"total": 0, "items": []}"#.to_string(),
            // Left to the two-pass parse: an escaped key, a repeated field, errors.
            format!(r#"{{"\u0074otal": 1, "items": [{ev}]}}"#),
            format!(r#"{{"total": 1, "total": 2, "items": [{ev}]}}"#),
            format!(r#"{{"total": 1, "items": [{ev}], "items": []}}"#),
            format!(r#"{{"total": -1, "items": [{ev}]}}"#),
            r#"{"total": 1}"#.to_string(),
            format!(r#"{{"total": 1, "items": [{ev}]}} x"#),
            format!(r#"{{"total": 2, "items": [{ev}, {{"id":"a"#),
            format!(r#"[{ev} {ev}]"#),
            "{}".to_string(),
            "nope".to_string(),
        ];
        for body in &bodies {
            let reference = two_pass(body);
            let got = parse_audit_page(body).map(|p| (p.total, p.items));
            assert_eq!(got, reference, "{body}");
            if let Some(p) = single_pass(body) {
                assert_eq!(Ok((p.total, p.items)), reference, "single pass of {body}");
            }
        }
        // The ordinary shapes take the single pass.
        for body in &bodies[..6] {
            assert!(single_pass(body).is_some(), "{body}");
        }
        let ParsedEvent::Event(e) = &parse_audit_page(&bodies[0]).unwrap().items[1] else {
            panic!("not parsed")
        };
        assert_eq!(e.raw, esc);
        assert_eq!(e.id, "a\"2");
        assert_eq!(e.status.as_deref(), Some("échec"));
    }

    /// `date` and flat `user_name`/`user_id` are accepted; offsets become UTC.
    #[test]
    fn alternative_fields() {
        let ParsedEvent::Event(e) = parse_event(
            r#"{"id":5,"date":"2026-11-02T01:00:00+02:00","user_name":"bob","user_id":"u2","action":"update","data":{"roles":{"added":["X"]}}}"#,
        ) else {
            panic!()
        };
        assert_eq!(e.id, "5");
        assert_eq!(e.timestamp.to_rfc3339(), "2026-11-01T23:00:00+00:00");
        assert_eq!(e.actor_name.as_deref(), Some("bob"));
        assert_eq!(e.data.as_deref(), Some(r#"{"roles":{"added":["X"]}}"#));
    }

    /// `client_ip` and `ipAddress` are the source address; epoch milliseconds are a time, in
    /// `timestamp` or `date`; a number in a string is not.
    #[test]
    fn address_aliases_and_epoch_milliseconds() {
        let ParsedEvent::Event(e) = parse_event(
            r#"{"id":"a","timestamp":1793523330125,"action":"login","client_ip":"192.0.2.7","status":"SUCCESS"}"#,
        ) else {
            panic!()
        };
        assert_eq!(e.timestamp.to_rfc3339(), "2026-11-01T08:55:30.125+00:00");
        assert_eq!(e.ip_address.as_deref(), Some("192.0.2.7"));
        assert_eq!(e.status.as_deref(), Some("success"));
        let ParsedEvent::Event(e) = parse_event(
            r#"{"id":"b","date":1793523330000.4,"action":"login","ipAddress":"2001:db8::1"}"#,
        ) else {
            panic!()
        };
        assert_eq!(e.timestamp.timestamp_millis(), 1_793_523_330_000);
        assert_eq!(e.ip_address.as_deref(), Some("2001:db8::1"));
        let ParsedEvent::Event(e) = parse_event(
            r#"{"id":"c","timestamp":"2026-11-02T08:15:30Z","ip_address":"198.51.100.1","client_ip":"192.0.2.7"}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            e.ip_address.as_deref(),
            Some("198.51.100.1"),
            "the contract's name wins"
        );
        for bad in [
            r#"{"id":"d","timestamp":"1793523330125"}"#,
            r#"{"id":"e","timestamp":1e300}"#,
        ] {
            let ParsedEvent::Malformed(m) = parse_event(bad) else {
                panic!("{bad}")
            };
            assert!(m.reason.starts_with("bad timestamp"), "{}", m.reason);
        }
    }

    /// Events with no id or a bad timestamp are kept as malformed, with a stable key.
    #[test]
    fn malformed_events_are_kept() {
        let raw = r#"{"timestamp":"2026-11-02T01:00:00Z","action":"login"}"#;
        let ParsedEvent::Malformed(m) = parse_event(raw) else {
            panic!()
        };
        assert_eq!(m.reason, "no id");
        assert!(m.key.starts_with("sha256:"));
        assert_eq!(parse_event(raw).key(), m.key);
        let ParsedEvent::Malformed(m) = parse_event(r#"{"id":"x","timestamp":"yesterday"}"#) else {
            panic!()
        };
        assert_eq!(m.key, "x");
        assert!(m.reason.contains("bad timestamp"));
        assert!(matches!(parse_event("42"), ParsedEvent::Malformed(_)));
    }

    /// A truncated page is an error (so the request is retried), not an empty page.
    #[test]
    fn truncated_body_is_an_error() {
        assert!(parse_audit_page(r#"{"total": 3, "items": [{"id":"a"#).is_err());
        assert!(parse_audit_page("").is_err());
    }

    /// All documented error-body shapes yield their code and message.
    #[test]
    fn error_body_shapes() {
        for body in [
            r#"{"errors":[{"code":"invalid_api_key","message":"m"}]}"#,
            r#"{"errors":{"code":"invalid_api_key","message":"m"}}"#,
            r#"{"error":{"code":"invalid_api_key","message":"m"}}"#,
            r#"{"code":"invalid_api_key","message":"m"}"#,
        ] {
            assert_eq!(
                parse_error_body(body),
                vec![("invalid_api_key".to_string(), "m".to_string())],
                "{body}"
            );
        }
    }
}
