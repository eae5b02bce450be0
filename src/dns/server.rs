//! The request handler hickory-server calls for every query: the cluster zone from the
//! current [`Index`], everything else forwarded to the upstream resolvers. A message that does
//! not parse gets FORMERR from hickory-server itself; one with other than one question gets
//! FORMERR here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::op::{Header, HeaderCounts};
use hickory_server::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use parking_lot::RwLock;

use super::records::{Answer, Index, Lookup};

/// How long one upstream resolver gets to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The UDP payload we advertise and accept with EDNS (the DNS flag day's 1232).
const EDNS_PAYLOAD: u16 = 1232;

/// The current zone; `None` until Services and EndpointSlices are first listed.
pub type Shared = Arc<RwLock<Option<Arc<Index>>>>;

pub struct Handler {
    pub index: Shared,
    pub upstream: Vec<SocketAddr>,
}

fn reply_metadata(req: &Metadata, rcode: ResponseCode, authoritative: bool) -> Metadata {
    let mut m = Metadata::response_from_request(req);
    m.message_type = MessageType::Response;
    m.authoritative = authoritative;
    m.recursion_available = true;
    m.response_code = rcode;
    m
}

impl Handler {
    /// Sends `message` to each upstream in turn over UDP; the first reply that parses.
    async fn forward(&self, message: &Message) -> Option<Message> {
        let bytes = message.to_vec().ok()?;
        for up in &self.upstream {
            let bind: SocketAddr = match up {
                SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
            };
            let attempt = async {
                let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
                sock.connect(up).await.ok()?;
                sock.send(&bytes).await.ok()?;
                let mut buf = vec![0u8; 65535];
                loop {
                    let n = sock.recv(&mut buf).await.ok()?;
                    if let Ok(reply) = Message::from_vec(&buf[..n])
                        && reply.metadata.id == message.metadata.id
                    {
                        return Some(reply);
                    }
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
                Ok(Some(reply)) => return Some(reply),
                _ => tracing::debug!(upstream = %up, "upstream resolver did not answer"),
            }
        }
        None
    }

    /// Asks upstream for `name`/`qtype` with the client's id and flags.
    async fn ask_upstream(&self, req: &Metadata, name: &str, qtype: RecordType) -> Option<Message> {
        let mut m = Message::query();
        m.metadata.id = req.id;
        m.metadata.recursion_desired = req.recursion_desired;
        m.metadata.checking_disabled = req.checking_disabled;
        let n = hickory_server::proto::rr::Name::from_ascii(name).ok()?;
        m.add_query(hickory_server::proto::op::Query::query(n, qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(edns);
        self.forward(&m).await
    }
}

/// What to send back.
enum Reply {
    Error(ResponseCode),
    Zone(Answer),
    Forwarded(Message),
}

impl Handler {
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::Error(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::Error(ResponseCode::FormErr);
        };
        let qtype = info.query.query_type();
        let index = self.index.read().clone();
        // Not synced yet: an empty zone would answer NXDOMAIN for names that exist.
        let Some(index) = index else {
            return Reply::Error(ResponseCode::ServFail);
        };
        let lookup = if info.query.query_class() == DNSClass::IN {
            index.lookup(&info.query.name().to_string(), qtype)
        } else {
            Lookup::NotOurs
        };
        match lookup {
            Lookup::Answer(mut a) => {
                self.follow_external_cname(&index, &request.metadata, qtype, &mut a)
                    .await;
                Reply::Zone(a)
            }
            Lookup::NotOurs => {
                let mut m = Message::query();
                m.metadata.id = request.metadata.id;
                m.metadata.recursion_desired = request.metadata.recursion_desired;
                m.metadata.checking_disabled = request.metadata.checking_disabled;
                m.add_query(info.query.original().clone());
                let mut e = Edns::new();
                e.set_max_payload(EDNS_PAYLOAD);
                m.set_edns(e);
                match self.forward(&m).await {
                    Some(reply) => Reply::Forwarded(reply),
                    None => Reply::Error(ResponseCode::ServFail),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if request.edns.is_some() {
            builder.edns(&edns);
        }
        let empty: Vec<Record> = Vec::new();
        let (meta, answers, authorities, additionals) = match &reply {
            Reply::Error(rcode) => (
                reply_metadata(&request.metadata, *rcode, false),
                &empty,
                &empty,
                &empty,
            ),
            Reply::Zone(a) => (
                reply_metadata(&request.metadata, a.rcode, true),
                &a.answers,
                &a.authorities,
                &a.additionals,
            ),
            Reply::Forwarded(m) => {
                let mut meta = reply_metadata(
                    &request.metadata,
                    m.metadata.response_code,
                    m.metadata.authoritative,
                );
                meta.recursion_available = m.metadata.recursion_available;
                meta.authentic_data = m.metadata.authentic_data;
                (meta, &m.answers, &m.authorities, &m.additionals)
            }
        };
        let msg = builder.build(meta, answers, authorities, [], additionals);
        match response.send_response(msg).await {
            Ok(info) => info,
            // hickory-server only logs what we report here.
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a response");
                ResponseInfo::from(Header {
                    metadata: reply_metadata(&request.metadata, ResponseCode::ServFail, false),
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl Handler {
    /// An ExternalName's alias outside the zone is resolved upstream, as CoreDNS does, so
    /// stub resolvers that do not chase CNAMEs get addresses; without an answer the CNAME
    /// alone is returned.
    async fn follow_external_cname(
        &self,
        index: &Index,
        req: &Metadata,
        qtype: RecordType,
        a: &mut Answer,
    ) {
        if matches!(qtype, RecordType::CNAME | RecordType::ANY) || a.answers.len() != 1 {
            return;
        }
        let RData::CNAME(c) = &a.answers[0].data else {
            return;
        };
        let target = c.0.to_string();
        if !matches!(index.lookup(&target, qtype), Lookup::NotOurs) {
            return;
        }
        if let Some(reply) = self.ask_upstream(req, &target, qtype).await
            && reply.metadata.response_code == ResponseCode::NoError
        {
            a.answers.extend(reply.answers);
        }
    }
}
