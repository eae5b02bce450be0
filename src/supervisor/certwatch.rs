//! The certificate watch: every [`period`] the supervisor asks bootstrap whether a serving
//! certificate lacks one of the host's current addresses or nears expiry, and has it renewed
//! ([`crate::bootstrap::renew_serving`]). The servers re-read their pair themselves, so
//! nothing is restarted and no pod notices.

use std::time::Duration;

use crate::bootstrap::{self, Host};
use crate::common::paths::Paths;

/// How often the host's addresses and the serving certificates' expiry are checked.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
/// Overrides [`DEFAULT_PERIOD`], in seconds (tests use a short one).
pub const PERIOD_ENV: &str = "MK8S_CERT_CHECK_PERIOD";

/// The check period: [`PERIOD_ENV`] if it is a positive number of seconds, else the default.
pub fn period() -> Duration {
    std::env::var(PERIOD_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_PERIOD, Duration::from_secs_f64)
}

/// Checks forever, one check at a time; a failure is logged once until it changes.
pub async fn run(paths: Paths) {
    let period = period();
    tracing::info!(
        period_secs = period.as_secs_f64(),
        "watching host addresses and serving certificate expiry"
    );
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(period).await;
        let p = paths.clone();
        // Reads files and takes the state lock: off the supervisor's only thread.
        let outcome =
            tokio::task::spawn_blocking(move || bootstrap::renew_serving(&p, &Host::detect()))
                .await;
        match outcome {
            Ok(Ok(None)) => last_error = None,
            Ok(Ok(Some(done))) => {
                last_error = None;
                // A warning, so it shows at the default log level: the node's certificates
                // changed under running servers.
                tracing::warn!(
                    why = done.reasons.join("; "),
                    written = done.written.join(", "),
                    "renewed serving certificates; servers reload them without a restart"
                );
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "cannot check or renew serving certificates");
                    last_error = Some(e);
                }
            }
            Err(e) => tracing::warn!(error = %e, "certificate check failed"),
        }
    }
}
