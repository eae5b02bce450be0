//! `/metrics` of the controller manager, in Prometheus text format: whether this instance
//! leads, and per controller how its syncs went, named as upstream names them where upstream
//! has the figure (`leader_election_master_status`, `workqueue_retries_total`,
//! `root_ca_cert_publisher_sync_total`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

#[derive(Default)]
pub struct Metrics {
    leader: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (controller, "success" | "error") → count.
    syncs: BTreeMap<(&'static str, &'static str), u64>,
    /// Work queue name → retries scheduled.
    retries: BTreeMap<&'static str, u64>,
    /// HTTP-like status code of a root CA publisher sync → count.
    root_ca: BTreeMap<u16, u64>,
    /// Namespaces whose content was removed and finalizer released.
    namespaces_finalized: u64,
}

impl crate::common::component::Metrics for Metrics {
    fn render(&self) -> String {
        Metrics::render(self)
    }

    fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn sync(&self, controller: &'static str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        *self
            .inner
            .lock()
            .syncs
            .entry((controller, result))
            .or_default() += 1;
    }

    pub fn retry(&self, queue: &'static str) {
        *self.inner.lock().retries.entry(queue).or_default() += 1;
    }

    pub fn root_ca_sync(&self, code: u16) {
        *self.inner.lock().root_ca.entry(code).or_default() += 1;
    }

    pub fn namespace_finalized(&self) {
        self.inner.lock().namespaces_finalized += 1;
    }

    pub fn render(&self) -> String {
        let m = self.inner.lock();
        let mut out = String::new();
        out.push_str("# HELP leader_election_master_status Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease.\n");
        out.push_str("# TYPE leader_election_master_status gauge\n");
        out.push_str(&format!(
            "leader_election_master_status{{name=\"{}\"}} {}\n",
            super::LEADER_LEASE_NAME,
            u8::from(self.leader.load(Ordering::Relaxed))
        ));
        out.push_str(
            "# HELP mk8s_controller_syncs_total Number of object syncs by controller and result.\n",
        );
        out.push_str("# TYPE mk8s_controller_syncs_total counter\n");
        for ((c, r), n) in &m.syncs {
            out.push_str(&format!(
                "mk8s_controller_syncs_total{{controller=\"{c}\",result=\"{r}\"}} {n}\n"
            ));
        }
        out.push_str(
            "# HELP workqueue_retries_total Total number of retries handled by workqueue\n",
        );
        out.push_str("# TYPE workqueue_retries_total counter\n");
        for (q, n) in &m.retries {
            out.push_str(&format!("workqueue_retries_total{{name=\"{q}\"}} {n}\n"));
        }
        out.push_str("# HELP root_ca_cert_publisher_sync_total Number of namespace syncs happened in root ca cert publisher.\n");
        out.push_str("# TYPE root_ca_cert_publisher_sync_total counter\n");
        for (code, n) in &m.root_ca {
            out.push_str(&format!(
                "root_ca_cert_publisher_sync_total{{code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP mk8s_namespaces_finalized_total Number of namespaces whose content the namespace controller removed.\n");
        out.push_str("# TYPE mk8s_namespaces_finalized_total counter\n");
        out.push_str(&format!(
            "mk8s_namespaces_finalized_total {}\n",
            m.namespaces_finalized
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::component::Metrics as _;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.set_leader(true);
        m.sync("namespace-controller", true);
        m.sync("namespace-controller", true);
        m.sync("namespace-controller", false);
        m.retry("namespace");
        m.root_ca_sync(200);
        m.namespace_finalized();
        let text = m.render();
        for line in [
            "leader_election_master_status{name=\"kube-controller-manager\"} 1",
            "mk8s_controller_syncs_total{controller=\"namespace-controller\",result=\"success\"} 2",
            "mk8s_controller_syncs_total{controller=\"namespace-controller\",result=\"error\"} 1",
            "workqueue_retries_total{name=\"namespace\"} 1",
            "root_ca_cert_publisher_sync_total{code=\"200\"} 1",
            "mk8s_namespaces_finalized_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
