//! The API server's end of kubectl's WebSocket streaming (kubectl 1.30+), which the kubelet's
//! runtime (containerd 1.6) does not speak, done here as upstream's API server does:
//!
//! * **port-forward tunnel** (upstream `pkg/util/proxy/streamtunnel.go`): a WebSocket upgrade
//!   offering `SPDY/3.1+portforward.k8s.io` becomes a plain SPDY upgrade to the kubelet
//!   (`X-Stream-Protocol-Version: portforward.k8s.io`); once the kubelet switches, the
//!   payloads of the client's binary messages are the bytes of that SPDY connection and its
//!   bytes go back as binary messages. Nothing of SPDY is parsed.
//! * **exec/attach translation** (upstream `pkg/util/proxy/streamtranslator.go`): the WebSocket
//!   (`v5.channel.k8s.io` or `v4.channel.k8s.io`, the first the client offers) ends here and a
//!   SPDY/3.1 session (`v4.channel.k8s.io`) goes to the kubelet, whose streams are opened as
//!   client-go's SPDY remote-command client opens them (`streamtype` `error`, `stdin`,
//!   `stdout`, `stderr`, `resize`). Channel 0 feeds stdin, `ff 00` (v5) closes it, channel 4
//!   feeds resize; stdout and stderr come back on channels 1 and 2; the error stream's Status
//!   is sent on channel 3, then a normal close.
//!
//! In both, a kubelet refusal reaches the client as the kubelet sent it (no switch), so
//! kubectl falls back to SPDY, which `kubelet.rs` splices byte for byte. Each session is its
//! own task: bad bytes from either side end that session only. Knows nothing of pods or
//! authorization (`kubelet.rs` decided where to go); SPDY framing is `spdy.rs`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::header::{CONNECTION, HOST, HeaderValue, UPGRADE};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::server::Body;
use super::spdy::{self, Decoder, Encoder, Frame, SpdyError};

/// The subprotocol of kubectl's port-forward over WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const CHANNEL_V5: &str = "v5.channel.k8s.io";
const CHANNEL_V4: &str = "v4.channel.k8s.io";
/// What the kubelet is asked for.
const SPDY_EXEC_PROTOCOL: &str = "v4.channel.k8s.io";
const SPDY_PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// The kubelet must answer the upgrade within this long.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);
/// client-go waits this long for each stream's reply; so does the translator for all of them.
const STREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// An error stream carries one Status; more than this is not one.
const MAX_ERROR_STREAM: usize = 64 * 1024;
/// Largest WebSocket message accepted from a client (kubectl sends stdin in 32 KiB pieces).
const MAX_MESSAGE: usize = 1 << 20;
/// What an empty error stream means (client-go's v4 reading of it: success).
const SUCCESS_STATUS: &[u8] = br#"{"metadata":{},"status":"Success"}"#;

// WebSocket channel ids (apimachinery `remotecommand` constants).
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_STREAM: u8 = 255;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("error upgrading connection to the kubelet: {0}")]
    Http(#[from] hyper::Error),
    #[error("error building the kubelet request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out waiting for the kubelet to upgrade the connection")]
    Timeout,
    #[error("{0}")]
    Spdy(#[from] SpdyError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("{0}")]
    Protocol(&'static str),
}

/// What a WebSocket upgrade is handled as here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// port-forward: SPDY tunnelled in binary messages.
    Tunnel,
    /// exec/attach: channel protocol translated to SPDY; the chosen subprotocol.
    Translate(&'static str),
}

/// The streams an exec or attach asked for (its query's booleans).
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The subprotocols a WebSocket handshake offers, in order (any number of headers, each a
/// comma-separated list).
fn offered(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Whether this module takes the upgrade of `sub` (`exec`, `attach`, `portforward`), and how:
/// a WebSocket handshake (version 13, with a key) offering the tunnel protocol for
/// port-forward, or `v5`/`v4.channel.k8s.io` for exec and attach. Anything else (SPDY, other
/// subprotocols, the Python client's channel port-forward) is proxied to the kubelet as it
/// came, and answered by it.
pub fn plan(headers: &HeaderMap, sub: &str) -> Option<Plan> {
    let is_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("upgrade"));
    let websocket = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let version_13 = headers
        .get("sec-websocket-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "13");
    if !(is_upgrade && websocket && version_13 && headers.contains_key("sec-websocket-key")) {
        return None;
    }
    let offers = offered(headers);
    match sub {
        "portforward" => offers.contains(&TUNNEL_PROTOCOL).then_some(Plan::Tunnel),
        "exec" | "attach" => offers.iter().find_map(|p| match *p {
            CHANNEL_V5 => Some(Plan::Translate(CHANNEL_V5)),
            CHANNEL_V4 => Some(Plan::Translate(CHANNEL_V4)),
            _ => None,
        }),
        _ => None,
    }
}

/// Serves a planned upgrade: asks the kubelet (over `io`, at `host`, for `location`) for a SPDY
/// session; relays its refusal, or answers the client `101` with the WebSocket accept and runs
/// the session in its own task once the client's connection (`client`) is handed over.
pub async fn serve<I>(
    plan: Plan,
    io: I,
    host: &str,
    location: &str,
    headers: &HeaderMap,
    client: OnUpgrade,
    streams: Streams,
) -> Result<Response<Body>, StreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let key = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let (kubelet_protocol, client_protocol) = match plan {
        Plan::Tunnel => (SPDY_PORTFORWARD_PROTOCOL, TUNNEL_PROTOCOL),
        Plan::Translate(p) => (SPDY_EXEC_PROTOCOL, p),
    };
    let backend = match spdy_upgrade(io, host, location, kubelet_protocol).await? {
        Ok(b) => b,
        Err(refusal) => return Ok(refusal),
    };
    tokio::spawn(async move {
        let client = match client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "the client's upgraded connection never came");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(config))
            .await;
        let result = match plan {
            Plan::Tunnel => tunnel(ws, backend).await,
            Plan::Translate(p) => translate(ws, backend, p == CHANNEL_V5, streams).await,
        };
        match result {
            Ok(()) => tracing::debug!(?plan, "streaming session ended"),
            Err(e) => tracing::info!(?plan, error = %e, "streaming session ended"),
        }
    });
    let mut r = Response::new(http_body_util::Empty::new().boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert("sec-websocket-accept", v);
    }
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(client_protocol),
    );
    Ok(r)
}

/// `POST location` with `Upgrade: SPDY/3.1` and one `X-Stream-Protocol-Version`: the
/// kubelet's upgraded connection, or its refusal as a response to relay.
async fn spdy_upgrade<I>(
    io: I,
    host: &str,
    location: &str,
    protocol: &'static str,
) -> Result<Result<Upgraded, Response<Body>>, StreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet upgrade connection failed");
        }
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri(location)
        .header(HOST, host)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "SPDY/3.1")
        .header("x-stream-protocol-version", protocol)
        .body(http_body_util::Empty::<Bytes>::new())?;
    let mut resp = match tokio::time::timeout(UPGRADE_TIMEOUT, sender.send_request(req)).await {
        Ok(r) => r?,
        Err(_) => {
            driver.abort();
            return Err(StreamError::Timeout);
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Ok(hyper::upgrade::on(&mut resp).await?));
    }
    let r = crate::kubelet::server::relay_refusal(resp).await;
    driver.abort();
    Ok(Err(r))
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Port-forward: binary message payloads to the kubelet, the kubelet's bytes as binary
/// messages, until either side closes.
async fn tunnel(ws: Ws, backend: Upgraded) -> Result<(), StreamError> {
    let (mut sink, mut source) = ws.split();
    let (mut br, mut bw) = tokio::io::split(TokioIo::new(backend));
    let up = async {
        while let Some(m) = source.next().await {
            match m? {
                Message::Binary(b) => bw.write_all(&b).await?,
                Message::Close(_) => break,
                // Pings are answered by the WebSocket layer; text is not part of the tunnel.
                _ => {}
            }
        }
        Ok::<_, StreamError>("client")
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = br.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                .await?;
        }
        let _ = sink.send(normal_close()).await;
        Ok::<_, StreamError>("kubelet")
    };
    let result = tokio::select! {
        r = up => r,
        r = down => r,
    };
    tracing::debug!(closed_by = ?result.as_ref().ok(), "port-forward tunnel ended");
    result.map(|_| ())
}

/// Aborts the backend reader when the session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One stream of the SPDY session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Stdin => "stdin",
            Kind::Stdout => "stdout",
            Kind::Stderr => "stderr",
            Kind::Resize => "resize",
        }
    }
}

struct SpdyStream {
    kind: Kind,
    id: u32,
    replied: bool,
    /// The kubelet finished it (FIN or reset), or we did (stdin).
    done: bool,
}

/// exec/attach: the WebSocket channel protocol (v5 if `v5`, else v4) on `ws`, SPDY on
/// `backend`.
async fn translate(ws: Ws, backend: Upgraded, v5: bool, want: Streams) -> Result<(), StreamError> {
    let (mut br, mut bw) = tokio::io::split(TokioIo::new(backend));
    let (tx, mut frames) = mpsc::channel::<Result<Frame, SpdyError>>(16);
    let _reader = AbortOnDrop(tokio::spawn(async move {
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(f)) => {
                        if tx.send(Ok(f)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            match br.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => decoder.feed(&buf[..n]),
            }
        }
    }));

    // Opened in client-go's order (v2 then v3's resize): error, stdin, stdout, stderr, resize;
    // client stream ids are odd.
    let mut encoder = Encoder::new();
    let mut out = BytesMut::new();
    let mut streams: Vec<SpdyStream> = Vec::new();
    for (kind, wanted) in [
        (Kind::Error, true),
        (Kind::Stdin, want.stdin),
        (Kind::Stdout, want.stdout),
        (Kind::Stderr, want.stderr),
        (Kind::Resize, want.tty),
    ] {
        if !wanted {
            continue;
        }
        let id = 1 + 2 * streams.len() as u32;
        encoder.encode(
            &Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: vec![("streamtype".to_string(), kind.name().to_string())],
            },
            &mut out,
        )?;
        streams.push(SpdyStream {
            kind,
            id,
            replied: false,
            // Only output streams are waited for.
            done: matches!(kind, Kind::Stdin | Kind::Resize),
        });
    }
    bw.write_all(&out).await?;
    bw.flush().await?;
    out.clear();

    let id_of =
        |streams: &[SpdyStream], kind: Kind| streams.iter().find(|s| s.kind == kind).map(|s| s.id);
    let stdin_id = id_of(&streams, Kind::Stdin);
    let resize_id = id_of(&streams, Kind::Resize);
    let mut stdin_open = stdin_id.is_some();
    let (mut sink, mut source) = ws.split();
    let mut error_stream = Vec::new();
    let replies_deadline = tokio::time::Instant::now() + STREAM_REPLY_TIMEOUT;
    let mut client_gone = false;
    // Why the kubelet side failed, told to the client as upstream's translator does: a Failure
    // Status on the error channel.
    let mut failure: Option<StreamError> = None;

    loop {
        let all_replied = streams.iter().all(|s| s.replied);
        tokio::select! {
            f = frames.recv() => {
                let frame = match f {
                    // The kubelet closed the connection.
                    None => break,
                    Some(Ok(f)) => f,
                    Some(Err(e)) => {
                        failure = Some(e.into());
                        break;
                    }
                };
                match frame {
                    Frame::Data { stream_id, fin, data } => {
                        let Some(s) = streams.iter_mut().find(|s| s.id == stream_id) else {
                            continue;
                        };
                        match s.kind {
                            Kind::Stdout | Kind::Stderr if !data.is_empty() => {
                                let channel = if s.kind == Kind::Stdout { STDOUT } else { STDERR };
                                sink.send(channel_message(channel, &data)).await?;
                            }
                            Kind::Error => {
                                if error_stream.len() + data.len() > MAX_ERROR_STREAM {
                                    failure = Some(StreamError::Protocol("error stream too long"));
                                    break;
                                }
                                error_stream.extend_from_slice(&data);
                            }
                            _ => {}
                        }
                        if fin {
                            s.done = true;
                        }
                    }
                    Frame::SynReply { stream_id, fin, .. } => {
                        if let Some(s) = streams.iter_mut().find(|s| s.id == stream_id) {
                            s.replied = true;
                            if fin {
                                s.done = true;
                            }
                        }
                    }
                    Frame::Headers { stream_id, fin: true, .. }
                    | Frame::RstStream { stream_id, .. } => {
                        if let Some(s) = streams.iter_mut().find(|s| s.id == stream_id) {
                            s.replied = true;
                            s.done = true;
                            if s.kind == Kind::Stdin {
                                stdin_open = false;
                            }
                        }
                    }
                    // The kubelet's pings are echoed (ours would be odd; we send none).
                    Frame::Ping(id) => encoder.encode(&Frame::Ping(id), &mut out)?,
                    Frame::GoAway { .. } => break,
                    // The kubelet opens no streams of its own in this protocol.
                    Frame::SynStream { stream_id, .. } => encoder.encode(
                        &Frame::RstStream { stream_id, status: spdy::RST_REFUSED_STREAM },
                        &mut out,
                    )?,
                    // spdystream does no flow control: window updates and settings change nothing.
                    Frame::Headers { .. } | Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
                }
            }
            m = source.next(), if all_replied => {
                let msg = match m {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                        client_gone = true;
                        break;
                    }
                    Some(Ok(m)) => m,
                };
                // The Python client writes str stdin as text messages; the channel byte leads
                // either kind.
                let b = match msg {
                    Message::Binary(b) => b,
                    Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                    _ => continue,
                };
                let Some((&channel, payload)) = b.split_first() else { continue };
                // Stdin (while open) and resize payloads go to their streams as they came;
                // v5's close signal for stdin is a FIN on the stdin stream (EOF for the command).
                let (target, fin, data) = match channel {
                    STDIN if stdin_open && !payload.is_empty() => {
                        (stdin_id, false, Bytes::copy_from_slice(payload))
                    }
                    RESIZE if !payload.is_empty() => {
                        (resize_id, false, Bytes::copy_from_slice(payload))
                    }
                    CLOSE_STREAM if v5 && payload.first() == Some(&STDIN) && stdin_open => {
                        (stdin_id, true, Bytes::new())
                    }
                    _ => (None, false, Bytes::new()),
                };
                if let Some(stream_id) = target {
                    if fin {
                        stdin_open = false;
                    }
                    encoder.encode(&Frame::Data { stream_id, fin, data }, &mut out)?;
                }
            }
            _ = tokio::time::sleep_until(replies_deadline), if !all_replied => {
                failure = Some(StreamError::Protocol("timed out waiting for the kubelet's stream replies"));
                break;
            }
        }
        if !out.is_empty() {
            let written = async {
                bw.write_all(&out).await?;
                bw.flush().await
            };
            if let Err(e) = written.await {
                failure = Some(e.into());
                break;
            }
            out.clear();
        }
        if streams.iter().all(|s| s.done) {
            break;
        }
    }

    if !client_gone {
        let status = match &failure {
            Some(e) => failure_status(&e.to_string()),
            None if error_stream.is_empty() => SUCCESS_STATUS.to_vec(),
            None => error_stream,
        };
        sink.send(channel_message(ERROR, &status)).await?;
        sink.send(normal_close()).await?;
        // The client answers the close; give it a moment so the close is clean.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = source.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // Tell the kubelet we are done, then close.
    let last = streams.last().map(|s| s.id).unwrap_or(0);
    let _ = encoder.encode(
        &Frame::GoAway {
            last_good_stream_id: last,
            status: 0,
        },
        &mut out,
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = bw.write_all(&out).await;
        let _ = bw.shutdown().await;
    })
    .await;
    failure.map_or(Ok(()), Err)
}

/// Upstream's Status for an internal error, as the translator reports a failed kubelet
/// session.
fn failure_status(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }))
    .unwrap_or_default()
}

/// A binary message: the channel byte, then the payload.
fn channel_message(channel: u8, payload: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(payload.len() + 1);
    b.put_u8(channel);
    b.put_slice(payload);
    Message::Binary(b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const WS: &[(&str, &str)] = &[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn ws_with(protocols: &[&str]) -> HeaderMap {
        let mut h = headers(WS);
        for p in protocols {
            h.append("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
        }
        h
    }

    #[test]
    fn plans_follow_the_offered_subprotocols() {
        assert_eq!(
            plan(&ws_with(&[TUNNEL_PROTOCOL]), "portforward"),
            Some(Plan::Tunnel)
        );
        assert_eq!(
            plan(&ws_with(&["v5.channel.k8s.io"]), "exec"),
            Some(Plan::Translate(CHANNEL_V5))
        );
        // The first offered that is supported, in one header or several.
        assert_eq!(
            plan(
                &ws_with(&["v4.channel.k8s.io, v5.channel.k8s.io"]),
                "attach"
            ),
            Some(Plan::Translate(CHANNEL_V4))
        );
        assert_eq!(
            plan(
                &ws_with(&["base64.channel.k8s.io", "v5.channel.k8s.io"]),
                "exec"
            ),
            Some(Plan::Translate(CHANNEL_V5))
        );
        // Left to the kubelet: unknown subprotocols, channel port-forward, SPDY, no key.
        assert_eq!(plan(&ws_with(&["nonsense.k8s.io"]), "exec"), None);
        assert_eq!(plan(&ws_with(&[]), "exec"), None);
        assert_eq!(plan(&ws_with(&["v4.channel.k8s.io"]), "portforward"), None);
        assert_eq!(plan(&ws_with(&[TUNNEL_PROTOCOL]), "exec"), None);
        let spdy = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert_eq!(plan(&spdy, "exec"), None);
        let mut keyless = ws_with(&["v5.channel.k8s.io"]);
        keyless.remove("sec-websocket-key");
        assert_eq!(plan(&keyless, "exec"), None);
    }

    #[test]
    fn failures_are_upstream_internal_errors() {
        let v: serde_json::Value = serde_json::from_slice(&failure_status("boom")).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "InternalError");
        assert_eq!(v["code"], 500);
        assert_eq!(v["message"], "Internal error occurred: boom");
    }

    #[test]
    fn channel_messages_carry_the_channel_first() {
        assert_eq!(
            channel_message(ERROR, b"{}"),
            Message::Binary(Bytes::from_static(b"\x03{}"))
        );
    }
}
