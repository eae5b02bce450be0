//! `--use-service-account-credentials`, as upstream's controller manager: each controller
//! writes as its own service account in `kube-system` (`system:serviceaccount:kube-system:
//! <account>`, bound by the bootstrap policy to `system:controller:<account>`), while lists and
//! watches go out as the manager itself (upstream's shared informers run with the manager's
//! identity, which may list and watch everything).
//!
//! Owns the accounts' token files under the manager's run directory (one a controller, 0600,
//! renewed through the TokenRequest API before they expire); touches no other object.

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::http::{Method, Request, Response};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ObjectMeta, PostParams};
use kube::client::Body;
use kube::{Api, Client};

const NAMESPACE: &str = "kube-system";
/// Upstream's controller tokens live an hour and are renewed well before.
const TOKEN_SECONDS: i64 = 3600;
const RENEW_AFTER: Duration = Duration::from_secs(TOKEN_SECONDS as u64 * 4 / 5);
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot create service account {NAMESPACE}/{account}: {cause}")]
    Account { account: String, cause: kube::Error },
    #[error("cannot get a token for service account {NAMESPACE}/{account}: {cause}")]
    Token { account: String, cause: kube::Error },
    #[error("the token request for {NAMESPACE}/{0} returned no token")]
    Empty(String),
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot build a client for {account}: {cause}")]
    Client { account: String, cause: String },
}

/// Makes the client each controller runs with.
#[derive(Clone)]
pub struct Clients {
    /// The manager's own client (its kubeconfig identity).
    root: Client,
    /// `Some` with `--use-service-account-credentials`: the base config and the token dir.
    accounts: Option<Arc<(kube::Config, PathBuf)>>,
}

impl Clients {
    pub fn new(root: Client, base: kube::Config, token_dir: Option<PathBuf>) -> Self {
        Clients {
            root,
            accounts: token_dir.map(|d| Arc::new((base, d))),
        }
    }

    /// The client for the controller whose service account is `account`: the manager's own
    /// without service-account credentials, else one that writes as the account (retrying
    /// until its token is issued).
    pub async fn for_account(&self, account: &'static str) -> Client {
        let Some(accounts) = self.accounts.clone() else {
            return self.root.clone();
        };
        loop {
            match self.account_client(account, &accounts.0, &accounts.1).await {
                Ok(c) => return c,
                Err(e) => {
                    tracing::warn!(account, error = %e, "no service account credentials yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    async fn account_client(
        &self,
        account: &'static str,
        base: &kube::Config,
        dir: &std::path::Path,
    ) -> Result<Client, CredentialsError> {
        let path = dir.join(account);
        self.renew(account, &path).await?;
        // Keep the file fresh; kube-rs re-reads a token file every minute.
        let (root, renew_path) = (self.clone(), path.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_AFTER).await;
                while let Err(e) = root.renew(account, &renew_path).await {
                    tracing::warn!(account, error = %e, "token renewal failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        });
        let mut config = base.clone();
        config.auth_info = kube::config::AuthInfo {
            token_file: Some(path.display().to_string()),
            ..Default::default()
        };
        let writer = Client::try_from(config).map_err(|e| CredentialsError::Client {
            account: account.into(),
            cause: e.to_string(),
        })?;
        Ok(Client::new(
            Split {
                reads: self.root.clone(),
                writes: writer,
            },
            "default",
        ))
    }

    /// Makes sure the account exists and writes a fresh token for it.
    async fn renew(&self, account: &str, path: &std::path::Path) -> Result<(), CredentialsError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(account.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::info!(account, "created the controller's service account"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(cause) => {
                return Err(CredentialsError::Account {
                    account: account.into(),
                    cause,
                });
            }
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                audiences: vec![],
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let issued = api
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .map_err(|cause| CredentialsError::Token {
                account: account.into(),
                cause,
            })?;
        let token = issued
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CredentialsError::Empty(account.into()))?;
        let write = |cause| CredentialsError::Write {
            path: path.to_path_buf(),
            cause,
        };
        if let Some(dir) = path.parent() {
            crate::common::fsutil::ensure_dir(dir, 0o700).map_err(write)?;
        }
        crate::common::fsutil::write_atomic(path, token.as_bytes(), 0o600).map_err(write)
    }
}

/// Sends lists and watches (a GET of a collection) as the manager and everything else as the
/// controller's account.
#[derive(Clone)]
struct Split {
    reads: Client,
    writes: Client,
}

/// Whether a request reads a collection: GET of `…/<resource>` rather than `…/<resource>/<name>`
/// (discovery documents count as reads too).
fn is_collection_read(req: &Request<Body>) -> bool {
    if req.method() != Method::GET {
        return false;
    }
    let path = req.uri().path();
    let rest = if let Some(r) = path.strip_prefix("/api/v1") {
        r
    } else if let Some(r) = path.strip_prefix("/apis/") {
        // Skip the group and version.
        let mut parts = r.splitn(3, '/');
        let (_, _) = (parts.next(), parts.next());
        parts.next().unwrap_or("")
    } else {
        return true;
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let after_ns = match segs.as_slice() {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    after_ns.len() <= 1
}

impl tower::Service<Request<Body>> for Split {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let client = if is_collection_read(&req) {
            self.reads.clone()
        } else {
            self.writes.clone()
        };
        Box::pin(async move { client.send(req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[test]
    fn collections_are_read_as_the_manager() {
        for p in [
            "/api/v1/pods?watch=true",
            "/api/v1/namespaces/default/pods",
            "/api/v1/namespaces",
            "/apis/apps/v1/namespaces/x/replicasets",
            "/apis/apps/v1/deployments",
            "/apis/apps/v1",
            "/api",
        ] {
            assert!(is_collection_read(&get(p)), "{p}");
        }
        for p in [
            "/api/v1/namespaces/default",
            "/api/v1/namespaces/default/pods/p",
            "/api/v1/nodes/n",
            "/apis/apps/v1/namespaces/x/replicasets/r/scale",
        ] {
            assert!(!is_collection_read(&get(p)), "{p}");
        }
        let post = Request::post("/api/v1/namespaces/default/pods")
            .body(Body::empty())
            .unwrap();
        assert!(!is_collection_read(&post));
    }
}
