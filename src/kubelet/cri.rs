//! The kubelet's CRI client: a gRPC channel to containerd's unix socket and the two CRI v1
//! services on it. Knows nothing about pods; callers build the requests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CRI call may take before the kubelet gives up on it (CreateContainer on a
/// busy node takes well under this; a hung containerd must not hang a pod worker forever).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to containerd at {path}: {cause}")]
    Connect { path: String, cause: String },
    #[error("{op}: {message}")]
    Call {
        op: &'static str,
        code: tonic::Code,
        message: String,
    },
}

impl CriError {
    pub fn call(op: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
        move |s| CriError::Call {
            op,
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// Both CRI services over one channel (cheap to clone).
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// `unix:///path` or a bare path → the socket path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Cri {
    /// Connects lazily-reconnecting: a containerd restart is survived by later calls.
    pub async fn connect(socket: &Path) -> Result<Cri, CriError> {
        let path = socket.to_path_buf();
        let err = |cause: String| CriError::Connect {
            path: socket.display().to_string(),
            cause,
        };
        // The URI is ignored: every connection goes to the socket.
        let channel = Endpoint::try_from("http://[::1]:0")
            .map_err(|e| err(e.to_string()))?
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| err(format!("{e}: {}", source_chain(&e))))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(16 * 1024 * 1024),
            images: ImageServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024),
        })
    }

    /// `containerd`'s name and version as CRI reports them (`containerd`, `1.6.20~ds1`).
    pub async fn version(&mut self) -> Result<(String, String), CriError> {
        let v = self
            .runtime
            .version(k8s_cri::v1::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(CriError::call("Version"))?
            .into_inner();
        Ok((v.runtime_name, v.runtime_version))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
