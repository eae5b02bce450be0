//! Times as Kubernetes writes them: RFC 3339 in UTC with whole seconds (Go's
//! `time.RFC3339`, which `metav1.Time` uses).

use time::OffsetDateTime;

/// `2006-01-02T15:04:05Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// `2006-01-02T15:04:05.000000Z`: `metav1.MicroTime`, which Leases and events.k8s.io use.
pub fn rfc3339_micro(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let whole = rfc3339(t);
    format!("{}.{:06}Z", &whole[..whole.len() - 1], t.microsecond())
}

/// Now, as [`rfc3339_micro`].
pub fn now_rfc3339_micro() -> String {
    rfc3339_micro(OffsetDateTime::now_utc())
}

/// A CRI timestamp (nanoseconds since the epoch) as [`rfc3339`]; `None` for 0 (unset).
pub fn rfc3339_from_nanos(nanos: i64) -> Option<String> {
    if nanos <= 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(nanos as i128)
        .ok()
        .map(rfc3339)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_go() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_136_214_245).unwrap();
        assert_eq!(super::rfc3339(t), "2006-01-02T15:04:05Z");
    }
}
