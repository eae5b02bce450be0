//! Delegated authentication and authorization for the non-health paths of 10257, as upstream's
//! `DelegatingAuthenticator`/`DelegatingAuthorizer` do it: a client certificate verified by
//! TLS against `--client-ca-file` names the user (CN) and groups (O); a bearer token is asked
//! of the API server with a TokenReview; the user is then checked with a SubjectAccessReview
//! for the non-resource path and verb. Answers are cached for ten seconds, as upstream.
//!
//! Owns nothing on disk; only creates review objects (which the API server never stores).
//! Unlike upstream it does not yet read the `extension-apiserver-authentication` ConfigMap
//! (no front-proxy headers) and refuses anonymous callers outright (401).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

const CACHE_TTL: Duration = Duration::from_secs(10);
/// Past this many entries the cache is dropped rather than grown (many distinct tokens).
const CACHE_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// What to answer a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Unauthenticated,
    Forbidden(String),
    /// The API server could not be asked.
    Unavailable(String),
}

/// (user, verb, path) of an authorization decision.
type Decision = (String, String, String);

pub struct Delegated {
    client: kube::Client,
    tokens: Mutex<HashMap<String, (Instant, Option<User>)>>,
    decisions: Mutex<HashMap<Decision, (Instant, bool)>>,
}

/// A fresh cached answer.
fn cached<K: std::hash::Hash + Eq, V: Clone>(
    m: &Mutex<HashMap<K, (Instant, V)>>,
    k: &K,
) -> Option<V> {
    m.lock()
        .get(k)
        .filter(|(at, _)| at.elapsed() < CACHE_TTL)
        .map(|(_, v)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(m: &Mutex<HashMap<K, (Instant, V)>>, k: K, v: V) {
    let mut m = m.lock();
    if m.len() >= CACHE_MAX {
        m.clear();
    }
    m.insert(k, (Instant::now(), v));
}

/// The user a verified client certificate names: CN, with each O as a group.
pub fn cert_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User {
        name,
        uid: None,
        groups,
        extra: None,
    })
}

impl Delegated {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// Authenticates a bearer token with a TokenReview: Ok(None) if the API server says no.
    async fn review_token(&self, token: &str) -> Result<Option<User>, kube::Error> {
        if let Some(u) = cached(&self.tokens, &token.to_string()) {
            return Ok(u);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let out = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = out.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(u)) => u.username.map(|name| User {
                name,
                uid: u.uid,
                groups: u.groups.unwrap_or_default(),
                extra: u.extra,
            }),
            _ => None,
        };
        remember(&self.tokens, token.to_string(), user.clone());
        Ok(user)
    }

    /// Whether `user` may `verb` the non-resource `path`, by SubjectAccessReview.
    async fn authorize(&self, user: &User, verb: &str, path: &str) -> Result<bool, kube::Error> {
        let key = (user.name.clone(), verb.to_string(), path.to_string());
        if let Some(allowed) = cached(&self.decisions, &key) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let out = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let allowed = out
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true));
        remember(&self.decisions, key, allowed);
        Ok(allowed)
    }

    /// The verdict on a request with these credentials. A certificate is only ever passed in
    /// when TLS verified it against the client CA.
    pub async fn check(
        &self,
        bearer: Option<&str>,
        cert: Option<&CertificateDer<'static>>,
        verb: &str,
        path: &str,
    ) -> Verdict {
        let user = match (cert.and_then(|c| cert_user(c.as_ref())), bearer) {
            (Some(u), _) => u,
            (None, Some(token)) => match self.review_token(token).await {
                Ok(Some(u)) => u,
                Ok(None) => return Verdict::Unauthenticated,
                Err(e) => return Verdict::Unavailable(format!("token review failed: {e}")),
            },
            (None, None) => return Verdict::Unauthenticated,
        };
        match self.authorize(&user, verb, path).await {
            Ok(true) => Verdict::Allowed,
            Ok(false) => Verdict::Forbidden(user.name),
            Err(e) => Verdict::Unavailable(format!("authorization review failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_subject_names_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:kube-controller-manager");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let u = cert_user(cert.der()).unwrap();
        assert_eq!(u.name, "system:kube-controller-manager");
        assert_eq!(u.groups, ["system:masters"]);
        assert!(cert_user(b"not a certificate").is_none());
    }

    #[test]
    fn cache_expires_and_is_bounded() {
        let m: Mutex<HashMap<u32, (Instant, bool)>> = Mutex::default();
        remember(&m, 1, true);
        assert_eq!(cached(&m, &1), Some(true));
        m.lock().insert(2, (Instant::now() - CACHE_TTL, true));
        assert_eq!(cached(&m, &2), None);
        for i in 0..(CACHE_MAX as u32 + 5) {
            remember(&m, i + 10, false);
        }
        assert!(m.lock().len() <= CACHE_MAX);
    }
}
