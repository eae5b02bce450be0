//! Service-account tokens: JWTs signed with `certs/serviceaccount.key` (ES256). Issues bound
//! tokens for the `serviceaccounts/<name>/token` subresource (TokenRequest, `kubectl create
//! token`) and authenticates bound and legacy tokens, checking that the service account (and
//! a bound pod) still exists with the same uid, as upstream's lookup does.

use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::authn::UserInfo;
use super::registry::{Target, decode_stored, key, meta_str, now_rfc3339};
use super::resources;
use super::server::State;
use super::status::{ApiError, Cause};

/// Upstream's default `--service-account-issuer` for MicroK8s-like clusters.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc";
/// TokenRequest's default and minimum lifetimes (upstream: 1 h, 10 min).
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
/// Upstream caps requested lifetimes at 2^32 seconds.
const MAX_EXPIRATION: i64 = 1 << 32;
/// Legacy (secret-based) tokens name this issuer.
const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path} is not a usable ECDSA P-256 key: {cause}")]
    Key { path: String, cause: String },
}

/// The signing key and the issuer tokens name.
pub struct ServiceAccountTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
struct Ref {
    name: String,
    uid: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct KubeClaims {
    namespace: String,
    serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<Ref>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Vec<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    kube: Option<KubeClaims>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/namespace",
        default,
        skip_serializing
    )]
    legacy_namespace: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.name",
        default,
        skip_serializing
    )]
    legacy_name: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.uid",
        default,
        skip_serializing
    )]
    legacy_uid: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/secret.name",
        default,
        skip_serializing
    )]
    legacy_secret: Option<String>,
}

impl ServiceAccountTokens {
    /// Signs with `signing_key`; verifies with `verify_key` (a private or public key PEM).
    pub fn load(
        signing_key: &Path,
        verify_key: &Path,
        issuer: &str,
    ) -> Result<Self, TokenKeyError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|cause| TokenKeyError::Read {
                path: p.display().to_string(),
                cause,
            })
        };
        let bad = |p: &Path, cause: String| TokenKeyError::Key {
            path: p.display().to_string(),
            cause,
        };
        let pem = read(signing_key)?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| bad(signing_key, e.to_string()))?;
        let verify = read(verify_key)?;
        let public = if verify.contains("PUBLIC KEY") {
            verify
        } else {
            rcgen::KeyPair::from_pem(&verify)
                .map_err(|e| bad(verify_key, e.to_string()))?
                .public_key_pem()
        };
        let decoding = DecodingKey::from_ec_pem(public.as_bytes())
            .map_err(|e| bad(verify_key, e.to_string()))?;
        Ok(Self {
            encoding,
            decoding,
            issuer: issuer.to_string(),
        })
    }

    fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("cannot sign the token: {e}")))
    }

    /// The API server's own audience (upstream's default `--api-audiences`: the issuer).
    pub fn api_audiences(&self) -> Vec<String> {
        vec![self.issuer.clone()]
    }

    /// The claims of a token we signed, if its signature and times are valid and it is
    /// meant for one of `audiences`.
    fn verify(&self, token: &str, audiences: &[String]) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).ok()?;
        let c = data.claims;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if c.iss == LEGACY_ISSUER {
            // Legacy tokens carry no audience and no expiry; the secret they name is checked.
            return Some(c);
        }
        if c.iss != self.issuer || c.exp.is_none_or(|e| e <= now) || c.nbf.is_some_and(|n| n > now)
        {
            return None;
        }
        if !c.aud.iter().any(|a| audiences.contains(a)) {
            return None;
        }
        Some(c)
    }
}

/// `spec.audiences` of a TokenRequest or TokenReview, if it names any.
pub fn requested_audiences(spec: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = spec["audiences"]
        .as_array()?
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    (!list.is_empty()).then_some(list)
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

async fn stored(state: &State, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let res = resources::find("", "v1", plural)?;
    let s = state.storage.get(&key(res, ns, name)).await.ok()??;
    decode_stored(&s).ok()
}

/// The service account a JWT bearer token proves to the API server.
pub async fn authenticate(state: &State, token: &str) -> Option<UserInfo> {
    let audiences = state.sa_tokens.as_ref()?.api_audiences();
    authenticate_for(state, token, &audiences)
        .await
        .map(|(u, _)| u)
}

/// The service account a JWT proves for one of `audiences`, and the audiences it is good
/// for, after checking that the objects it names still exist.
pub async fn authenticate_for(
    state: &State,
    token: &str,
    audiences: &[String],
) -> Option<(UserInfo, Vec<String>)> {
    if !looks_like_jwt(token) {
        return None;
    }
    let tokens = state.sa_tokens.as_ref()?;
    let c = tokens.verify(token, audiences)?;
    let granted: Vec<String> = if c.iss == LEGACY_ISSUER {
        audiences.to_vec()
    } else {
        c.aud
            .iter()
            .filter(|a| audiences.contains(a))
            .cloned()
            .collect()
    };
    let (ns, name, uid) = match &c.kube {
        Some(k) => (
            k.namespace.clone(),
            k.serviceaccount.name.clone(),
            k.serviceaccount.uid.clone(),
        ),
        None => (
            c.legacy_namespace.clone()?,
            c.legacy_name.clone()?,
            c.legacy_uid.clone()?,
        ),
    };
    let sa = stored(state, "serviceaccounts", &ns, &name).await?;
    if meta_str(&sa, "uid") != uid || !sa["metadata"]["deletionTimestamp"].is_null() {
        return None;
    }
    if let Some(pod) = c.kube.as_ref().and_then(|k| k.pod.as_ref()) {
        let p = stored(state, "pods", &ns, &pod.name).await?;
        if meta_str(&p, "uid") != pod.uid {
            return None;
        }
    }
    if let Some(secret) = c.kube.as_ref().and_then(|k| k.secret.as_ref()) {
        let s = stored(state, "secrets", &ns, &secret.name).await?;
        if meta_str(&s, "uid") != secret.uid {
            return None;
        }
    }
    if c.iss == LEGACY_ISSUER {
        // Deleting the token's secret revokes it.
        let secret = c.legacy_secret.as_deref()?;
        let s = stored(state, "secrets", &ns, secret).await?;
        let stored_token = s["data"]["token"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())?;
        if stored_token != token.as_bytes() {
            return None;
        }
    }
    let user = UserInfo {
        name: format!("system:serviceaccount:{ns}:{name}"),
        uid,
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        ..Default::default()
    };
    Some((user, granted))
}

/// `POST …/serviceaccounts/<name>/token`: a TokenRequest answered with a signed token.
pub async fn token_request(state: &State, t: &Target, mut body: Value) -> Result<Value, ApiError> {
    let Some(tokens) = state.sa_tokens.as_ref() else {
        return Err(ApiError::Internal(
            "no service account signing key is configured (--service-account-signing-key-file)"
                .into(),
        ));
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let sa = stored(state, "serviceaccounts", &ns, &name)
        .await
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", &name))?;
    let spec = body["spec"].clone();
    let expiration = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION);
    if expiration < MIN_EXPIRATION {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            &name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
                ),
                field: "spec.expirationSeconds".into(),
            }],
        ));
    }
    let expiration = expiration.min(MAX_EXPIRATION);
    let audiences = requested_audiences(&spec).unwrap_or_else(|| tokens.api_audiences());
    let mut kube = KubeClaims {
        namespace: ns.clone(),
        serviceaccount: Ref {
            name: name.clone(),
            uid: meta_str(&sa, "uid").to_string(),
        },
        pod: None,
        secret: None,
    };
    let bound = &spec["boundObjectRef"];
    if let Some(kind) = bound["kind"].as_str() {
        let bname = bound["name"].as_str().unwrap_or("");
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(ApiError::BadRequest(format!(
                    "cannot bind token for object of kind {other:?}"
                )));
            }
        };
        let obj = stored(state, plural, &ns, bname)
            .await
            .ok_or_else(|| ApiError::not_found("", plural, bname))?;
        let r = Ref {
            name: bname.to_string(),
            uid: meta_str(&obj, "uid").to_string(),
        };
        if kind == "Pod" {
            kube.pod = Some(r);
        } else {
            kube.secret = Some(r);
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        iss: tokens.issuer.clone(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: audiences.clone(),
        exp: Some(now + expiration),
        iat: Some(now),
        nbf: Some(now),
        jti: Some(super::registry::new_uid()),
        kube: Some(kube),
        legacy_namespace: None,
        legacy_name: None,
        legacy_uid: None,
        legacy_secret: None,
    };
    let token = tokens.sign(&claims)?;
    let expires = time::OffsetDateTime::from_unix_timestamp(now + expiration)
        .map(crate::common::clock::rfc3339)
        .unwrap_or_else(|_| now_rfc3339());
    body["metadata"]["name"] = name.into();
    body["metadata"]["namespace"] = ns.into();
    body["metadata"]["creationTimestamp"] = Value::Null;
    body["spec"]["audiences"] = json!(audiences);
    body["spec"]["expirationSeconds"] = expiration.into();
    if body["spec"]["boundObjectRef"].is_null() {
        body["spec"]["boundObjectRef"] = Value::Null;
    }
    body["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ServiceAccountTokens {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sa.key");
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(&p, kp.serialize_pem()).unwrap();
        ServiceAccountTokens::load(&p, &p, DEFAULT_ISSUER).unwrap()
    }

    fn claims(exp: i64, aud: &str) -> Claims {
        Claims {
            iss: DEFAULT_ISSUER.into(),
            sub: "system:serviceaccount:default:bot".into(),
            aud: vec![aud.into()],
            exp: Some(exp),
            iat: None,
            nbf: None,
            jti: None,
            kube: Some(KubeClaims {
                namespace: "default".into(),
                serviceaccount: Ref {
                    name: "bot".into(),
                    uid: "u1".into(),
                },
                pod: None,
                secret: None,
            }),
            legacy_namespace: None,
            legacy_name: None,
            legacy_uid: None,
            legacy_secret: None,
        }
    }

    #[test]
    fn signed_tokens_verify_and_tampered_or_expired_ones_do_not() {
        let k = keys();
        let api = k.api_audiences();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let good = k.sign(&claims(now + 600, DEFAULT_ISSUER)).unwrap();
        let name = k
            .verify(&good, &api)
            .unwrap()
            .kube
            .unwrap()
            .serviceaccount
            .name;
        assert_eq!(name, "bot");
        let expired = k.sign(&claims(now - 1, DEFAULT_ISSUER)).unwrap();
        assert!(k.verify(&expired, &api).is_none());
        let vault = k.sign(&claims(now + 600, "vault")).unwrap();
        assert!(
            k.verify(&vault, &api).is_none(),
            "a token for another audience"
        );
        assert!(k.verify(&vault, &["vault".to_string()]).is_some());
        assert!(k.verify(&good, &["vault".to_string()]).is_none());
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replace('a', "b");
        assert!(k.verify(&parts.join("."), &api).is_none());
        assert!(keys().verify(&good, &api).is_none(), "another key's token");
    }
}
