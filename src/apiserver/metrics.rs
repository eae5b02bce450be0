//! `/metrics`: request counters and latencies in Prometheus text format, named as upstream's
//! (`apiserver_request_total`, `apiserver_request_duration_seconds`).

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    total: BTreeMap<(String, u16), u64>,
    /// Per method: bucket counts, sum, count.
    duration: BTreeMap<String, (Vec<u64>, f64, u64)>,
}

impl Metrics {
    pub fn observe(&self, method: &str, code: u16, took: Duration) {
        // A fixed set of labels, whatever methods clients invent.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "OTHER",
        };
        let mut m = self.inner.lock();
        *m.total.entry((method.to_string(), code)).or_default() += 1;
        let secs = took.as_secs_f64();
        let h = m
            .duration
            .entry(method.to_string())
            .or_insert_with(|| (vec![0; BUCKETS.len()], 0.0, 0));
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.0[i] += 1;
            }
        }
        h.1 += secs;
        h.2 += 1;
    }

    pub fn render(&self) -> String {
        let m = self.inner.lock();
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out by verb and HTTP response code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        for ((method, code), n) in &m.total {
            out.push_str(&format!(
                "apiserver_request_total{{code=\"{code}\",verb=\"{method}\"}} {n}\n"
            ));
        }
        out.push_str(
            "# HELP apiserver_request_duration_seconds Response latency distribution in seconds.\n",
        );
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        for (method, (buckets, sum, count)) in &m.duration {
            for (i, le) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "apiserver_request_duration_seconds_bucket{{verb=\"{method}\",le=\"{le}\"}} {}\n",
                    buckets[i]
                ));
            }
            out.push_str(&format!(
                "apiserver_request_duration_seconds_bucket{{verb=\"{method}\",le=\"+Inf\"}} {count}\n"
            ));
            out.push_str(&format!(
                "apiserver_request_duration_seconds_sum{{verb=\"{method}\"}} {sum}\n"
            ));
            out.push_str(&format!(
                "apiserver_request_duration_seconds_count{{verb=\"{method}\"}} {count}\n"
            ));
        }
        out
    }
}
