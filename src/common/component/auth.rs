//! Delegated authentication and authorization for the non-health paths of 10257/10259 and for
//! the kubelet's 10250 (under `--authorization-mode=Webhook`), as upstream's
//! `DelegatingAuthenticator`/`DelegatingAuthorizer` do it: a client certificate verified by
//! TLS against `--client-ca-file` names the user (CN) and groups (O); a bearer token is asked
//! of the API server with a TokenReview; the user is then checked with a SubjectAccessReview
//! for the non-resource path and verb, or for the resource attributes the caller maps the
//! request to (the kubelet's `nodes/proxy`, `nodes/stats`…). Answers are cached for ten
//! seconds.
//!
//! Owns nothing on disk; only creates review objects (which the API server never stores).
//! Unlike upstream it does not yet read the `extension-apiserver-authentication` ConfigMap
//! (no front-proxy headers) and refuses anonymous callers outright (401).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
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

/// What a request asks to do, as a SubjectAccessReview describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Access {
    /// A non-resource URL (`/metrics`).
    Path { verb: String, path: String },
    /// A cluster-scoped core resource: `nodes/<subresource>` of one node, for the kubelet.
    Resource {
        verb: String,
        resource: String,
        subresource: String,
        name: String,
    },
}

/// (user, access) of an authorization decision.
type Decision = (String, Access);

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

    /// Whether `user` may do `access`, by SubjectAccessReview.
    async fn authorize(&self, user: &User, access: &Access) -> Result<bool, kube::Error> {
        let key = (user.name.clone(), access.clone());
        if let Some(allowed) = cached(&self.decisions, &key) {
            return Ok(allowed);
        }
        let mut spec = SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: user.extra.clone(),
            ..Default::default()
        };
        match access {
            Access::Path { verb, path } => {
                spec.non_resource_attributes = Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some(verb.clone()),
                });
            }
            Access::Resource {
                verb,
                resource,
                subresource,
                name,
            } => {
                spec.resource_attributes = Some(ResourceAttributes {
                    verb: Some(verb.clone()),
                    version: Some("v1".into()),
                    resource: Some(resource.clone()),
                    subresource: Some(subresource.clone()).filter(|s| !s.is_empty()),
                    name: Some(name.clone()),
                    ..Default::default()
                });
            }
        }
        let review = SubjectAccessReview {
            spec,
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
        access: &Access,
    ) -> Verdict {
        let user = match self.authenticate(bearer, cert).await {
            Ok(u) => u,
            Err(v) => return v,
        };
        match self.authorize(&user, access).await {
            Ok(true) => Verdict::Allowed,
            Ok(false) => Verdict::Forbidden(user.name),
            Err(e) => Verdict::Unavailable(format!("authorization review failed: {e}")),
        }
    }

    /// Who the caller is: the certificate's subject, else the token's reviewed user.
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        cert: Option<&CertificateDer<'static>>,
    ) -> Result<User, Verdict> {
        match (cert.and_then(|c| cert_user(c.as_ref())), bearer) {
            (Some(u), _) => Ok(u),
            (None, Some(token)) => match self.review_token(token).await {
                Ok(Some(u)) => Ok(u),
                Ok(None) => Err(Verdict::Unauthenticated),
                Err(e) => Err(Verdict::Unavailable(format!("token review failed: {e}"))),
            },
            (None, None) => Err(Verdict::Unauthenticated),
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
