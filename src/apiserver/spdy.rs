//! SPDY/3.1 framing, the part the API server needs to talk to a kubelet as client-go's SPDY
//! remote-command client does (apimachinery `httpstream/spdy` over moby/spdystream): frames
//! are encoded and decoded here, nothing more. Streams, their order and what they carry belong
//! to the caller (`stream_translate.rs`).
//!
//! Wire format (SPDY draft 3): every frame has an 8-byte header. A control frame starts with the
//! control bit, version 3 and a type; a data frame with a 31-bit stream id. Then 8 bits of flags
//! and a 24-bit length. Name/value header blocks (32-bit counts and lengths, lower-case names,
//! several values joined by NUL) are zlib-compressed with the SPDY/3 dictionary, one compression
//! context per direction for the whole session, each block ending in a sync flush (as Go's
//! framer writes them and reads them back).
//!
//! Owns no I/O and no state beyond the two zlib contexts: malformed input is an error, never a
//! panic, and frames longer than [`MAX_FRAME_LEN`] are refused before they are buffered.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Largest frame payload accepted or sent. SPDY allows 16 MiB; spdystream writes what it is
/// given in one frame and Go copies streams in 32 KiB chunks, so 1 MiB is ample.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Largest decompressed header block: the streams here carry a handful of short headers.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status for a stream the peer may not open.
pub const RST_REFUSED_STREAM: u32 = 3;

/// Name/value pairs of a header block, in order; names are lower-case on the wire.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("SPDY frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    #[error("invalid SPDY {0} frame")]
    Invalid(&'static str),
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
}

/// One frame, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// `(flags, id, value)` entries.
    Settings {
        clear: bool,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping(u32),
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
}

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): the common header
/// names and values, each with its 32-bit length, then a run of status codes, reason phrases,
/// dates and media types. It must be byte-exact or the peer's inflate fails.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505",
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00",
            " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,public",
            "privatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Writes frames; holds the session's outgoing compression context.
pub struct Encoder {
    compress: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            compress: Compress::new(Compression::default(), true),
        }
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        let (kind, flags, body) = match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_FRAME_LEN {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(flag(*fin, FLAG_FIN)) << 24) | data.len() as u32);
                out.put_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let mut b = BytesMut::new();
                b.put_u32(stream_id & 0x7fff_ffff);
                b.put_u32(associated_to & 0x7fff_ffff);
                b.put_u8((priority & 0x07) << 5);
                b.put_u8(0); // slot
                self.header_block(headers, &mut b)?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                (TYPE_SYN_STREAM, flags, b)
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let mut b = BytesMut::new();
                b.put_u32(stream_id & 0x7fff_ffff);
                self.header_block(headers, &mut b)?;
                (TYPE_SYN_REPLY, flag(*fin, FLAG_FIN), b)
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let mut b = BytesMut::new();
                b.put_u32(stream_id & 0x7fff_ffff);
                self.header_block(headers, &mut b)?;
                (TYPE_HEADERS, flag(*fin, FLAG_FIN), b)
            }
            Frame::RstStream { stream_id, status } => {
                let mut b = BytesMut::new();
                b.put_u32(stream_id & 0x7fff_ffff);
                b.put_u32(*status);
                (TYPE_RST_STREAM, 0, b)
            }
            Frame::Settings { clear, entries } => {
                let mut b = BytesMut::new();
                b.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    b.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                    b.put_u32(*value);
                }
                (TYPE_SETTINGS, flag(*clear, 0x01), b)
            }
            Frame::Ping(id) => {
                let mut b = BytesMut::new();
                b.put_u32(*id);
                (TYPE_PING, 0, b)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut b = BytesMut::new();
                b.put_u32(last_good_stream_id & 0x7fff_ffff);
                b.put_u32(*status);
                (TYPE_GOAWAY, 0, b)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut b = BytesMut::new();
                b.put_u32(stream_id & 0x7fff_ffff);
                b.put_u32(delta & 0x7fff_ffff);
                (TYPE_WINDOW_UPDATE, 0, b)
            }
        };
        if body.len() > MAX_FRAME_LEN {
            return Err(SpdyError::TooLarge(body.len()));
        }
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u32((u32::from(flags) << 24) | body.len() as u32);
        out.put_slice(&body);
        Ok(())
    }

    /// Serialises and compresses a header block (sync flush: the peer can decode it at once).
    fn header_block(&mut self, headers: &Headers, out: &mut BytesMut) -> Result<(), SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        if raw.len() > MAX_HEADER_BLOCK {
            return Err(SpdyError::TooLarge(raw.len()));
        }
        if self.compress.total_in() == 0 && self.compress.total_out() == 0 {
            self.compress
                .set_dictionary(dictionary())
                .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
        }
        let mut compressed = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0usize;
        loop {
            if compressed.capacity() - compressed.len() < 64 {
                compressed.reserve(raw.len().max(256));
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&raw[consumed..], &mut compressed, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
            consumed += (self.compress.total_in() - before) as usize;
            // Done once all input is in and the flush left room to spare in the output.
            if consumed == raw.len() && compressed.len() < compressed.capacity() {
                break;
            }
        }
        out.put_slice(&compressed);
        Ok(())
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

/// Reads frames from bytes as they arrive; holds the session's incoming decompression context.
pub struct Decoder {
    buf: BytesMut,
    decompress: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            buf: BytesMut::new(),
            decompress: Decompress::new(true),
        }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` until one has arrived whole. Control frames of unknown
    /// types are skipped, as the spec asks. After an error the session is unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        loop {
            if self.buf.len() < 8 {
                return Ok(None);
            }
            let len = (u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]])) as usize;
            // Refused before waiting for (and buffering) the body.
            if len > MAX_FRAME_LEN {
                return Err(SpdyError::TooLarge(len));
            }
            if self.buf.len() < 8 + len {
                return Ok(None);
            }
            let mut head = self.buf.split_to(8);
            let body = self.buf.split_to(len).freeze();
            let first = head.get_u32();
            let flags = head.get_u8();
            if first & 0x8000_0000 == 0 {
                return Ok(Some(Frame::Data {
                    stream_id: first & 0x7fff_ffff,
                    fin: flags & FLAG_FIN != 0,
                    data: body,
                }));
            }
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(SpdyError::Version(version));
            }
            let kind = (first & 0xffff) as u16;
            if let Some(f) = self.control(kind, flags, body)? {
                return Ok(Some(f));
            }
        }
    }

    fn control(&mut self, kind: u16, flags: u8, mut b: Bytes) -> Result<Option<Frame>, SpdyError> {
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            TYPE_SYN_STREAM => {
                if b.len() < 10 {
                    return Err(SpdyError::Invalid("SYN_STREAM"));
                }
                let stream_id = b.get_u32() & 0x7fff_ffff;
                let associated_to = b.get_u32() & 0x7fff_ffff;
                let priority = b.get_u8() >> 5;
                let _slot = b.get_u8();
                if stream_id == 0 {
                    return Err(SpdyError::Invalid("SYN_STREAM"));
                }
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.header_block(&b)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                if b.len() < 4 {
                    return Err(SpdyError::Invalid("SYN_REPLY/HEADERS"));
                }
                let stream_id = b.get_u32() & 0x7fff_ffff;
                if stream_id == 0 {
                    return Err(SpdyError::Invalid("SYN_REPLY/HEADERS"));
                }
                let headers = self.header_block(&b)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                if b.len() != 8 {
                    return Err(SpdyError::Invalid("RST_STREAM"));
                }
                Frame::RstStream {
                    stream_id: b.get_u32() & 0x7fff_ffff,
                    status: b.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                if b.len() < 4 {
                    return Err(SpdyError::Invalid("SETTINGS"));
                }
                let n = b.get_u32() as usize;
                if b.len() != n.saturating_mul(8) {
                    return Err(SpdyError::Invalid("SETTINGS"));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let fid = b.get_u32();
                    entries.push(((fid >> 24) as u8, fid & 0x00ff_ffff, b.get_u32()));
                }
                Frame::Settings {
                    clear: flags & 0x01 != 0,
                    entries,
                }
            }
            TYPE_PING => {
                if b.len() != 4 {
                    return Err(SpdyError::Invalid("PING"));
                }
                Frame::Ping(b.get_u32())
            }
            TYPE_GOAWAY => {
                // SPDY/2 peers send no status; accept both.
                if b.len() != 8 && b.len() != 4 {
                    return Err(SpdyError::Invalid("GOAWAY"));
                }
                let last_good_stream_id = b.get_u32() & 0x7fff_ffff;
                let status = if b.len() == 4 { b.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                if b.len() != 8 {
                    return Err(SpdyError::Invalid("WINDOW_UPDATE"));
                }
                Frame::WindowUpdate {
                    stream_id: b.get_u32() & 0x7fff_ffff,
                    delta: b.get_u32() & 0x7fff_ffff,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }

    /// Inflates one frame's header block (the zlib stream continues across frames) and parses
    /// it.
    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut raw: Vec<u8> = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut consumed = 0usize;
        loop {
            if raw.capacity() - raw.len() < 256 {
                if raw.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::HeaderBlock(format!(
                        "more than {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                raw.reserve(4096);
            }
            let before_in = self.decompress.total_in();
            let before_out = raw.len();
            let r = self.decompress.decompress_vec(
                &compressed[consumed..],
                &mut raw,
                FlushDecompress::Sync,
            );
            consumed += (self.decompress.total_in() - before_in) as usize;
            match r {
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::HeaderBlock("zlib stream ended".into()));
                }
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.decompress
                            .set_dictionary(dictionary())
                            .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
                        continue;
                    }
                    None => return Err(SpdyError::HeaderBlock(e.to_string())),
                },
            }
            let progressed = raw.len() > before_out;
            let room_left = raw.len() < raw.capacity();
            if consumed == compressed.len() && room_left {
                break;
            }
            if !progressed && consumed < compressed.len() && self.decompress.total_in() == before_in
            {
                return Err(SpdyError::HeaderBlock("inflate made no progress".into()));
            }
            if consumed == compressed.len() && !progressed {
                break;
            }
        }
        parse_headers(&raw)
    }
}

/// A header block's name/value pairs; values holding several (NUL-separated) stay joined.
fn parse_headers(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut b = raw;
    let bad = |what: &str| SpdyError::HeaderBlock(what.to_string());
    if b.len() < 4 {
        return Err(bad("truncated count"));
    }
    let n = b.get_u32() as usize;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, refused before allocating.
    if n > b.len() / 8 {
        return Err(bad("pair count exceeds the block"));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut string = || -> Result<String, SpdyError> {
            if b.len() < 4 {
                return Err(bad("truncated length"));
            }
            let len = b.get_u32() as usize;
            if b.len() < len {
                return Err(bad("truncated string"));
            }
            let s = String::from_utf8(b[..len].to_vec()).map_err(|_| bad("not UTF-8"))?;
            b.advance(len);
            Ok(s)
        };
        let name = string()?;
        let value = string()?;
        if name.is_empty() {
            return Err(bad("empty header name"));
        }
        headers.push((name, value));
    }
    if !b.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: hs(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: hs(&[("streamtype", "stdin"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                fin: false,
                headers: Vec::new(),
            },
            Frame::Headers {
                stream_id: 5,
                fin: true,
                headers: hs(&[("x", "a\0b")]),
            },
            Frame::RstStream {
                stream_id: 7,
                status: RST_REFUSED_STREAM,
            },
            Frame::Settings {
                clear: true,
                entries: vec![(1, 4, 100), (0, 7, 65536)],
            },
            Frame::Ping(2),
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65536,
            },
            Frame::Data {
                stream_id: 5,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
        ]
    }

    #[test]
    fn dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
        // zlib's dictionary id (Adler-32), what a peer checks before inflating.
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_with_one_compression_context_per_direction() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        let mut wire = BytesMut::new();
        let frames = all_frames();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        // Byte by byte: frames appear only once whole, in order.
        let mut got = Vec::new();
        for b in wire.iter() {
            dec.feed(&[*b]);
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        // The same headers again compress to fewer bytes: the context carries over.
        let again = |enc: &mut Encoder| {
            let mut w = BytesMut::new();
            enc.encode(&frames[1], &mut w).unwrap();
            w.len()
        };
        let first = {
            let mut fresh = Encoder::new();
            again(&mut fresh)
        };
        assert!(again(&mut enc) < first);
    }

    #[test]
    fn a_fresh_decoder_cannot_read_a_continued_context() {
        let mut enc = Encoder::new();
        let mut first = BytesMut::new();
        enc.encode(&all_frames()[0], &mut first).unwrap();
        let mut second = BytesMut::new();
        enc.encode(&all_frames()[1], &mut second).unwrap();
        let mut dec = Decoder::new();
        dec.feed(&second);
        assert!(dec.next_frame().is_err());
    }

    #[test]
    fn data_frames_are_laid_out_as_the_spec_says() {
        let mut enc = Encoder::new();
        let mut w = BytesMut::new();
        enc.encode(
            &Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::from_static(b"ab"),
            },
            &mut w,
        )
        .unwrap();
        assert_eq!(&w[..], b"\0\0\0\x03\x01\0\0\x02ab");
        let mut w = BytesMut::new();
        enc.encode(&Frame::Ping(7), &mut w).unwrap();
        assert_eq!(&w[..], b"\x80\x03\0\x06\0\0\0\x04\0\0\0\x07");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: Vec<Vec<u8>> = vec![
            // Version 2.
            b"\x80\x02\0\x06\0\0\0\x04\0\0\0\x01".to_vec(),
            // PING of the wrong length.
            b"\x80\x03\0\x06\0\0\0\x02\0\x01".to_vec(),
            // RST_STREAM too short.
            b"\x80\x03\0\x03\0\0\0\x04\0\0\0\x01".to_vec(),
            // SETTINGS whose count overruns the frame.
            b"\x80\x03\0\x04\0\0\0\x04\xff\xff\xff\xff".to_vec(),
            // SYN_STREAM with garbage for a header block.
            b"\x80\x03\0\x01\0\0\0\x0e\0\0\0\x01\0\0\0\0\0\0garb".to_vec(),
            // SYN_REPLY with stream id 0.
            b"\x80\x03\0\x02\0\0\0\x04\0\0\0\0".to_vec(),
            // GOAWAY of a wrong length.
            b"\x80\x03\0\x07\0\0\0\x03\0\0\0".to_vec(),
        ];
        for c in cases {
            let mut dec = Decoder::new();
            dec.feed(&c);
            assert!(dec.next_frame().is_err(), "{c:?}");
        }
        // Random bytes: errors or incomplete frames, never a panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut dec = Decoder::new();
            let mut bytes = vec![0x80, 0x03];
            for _ in 0..40 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                bytes.push((x >> 16) as u8);
            }
            bytes[4] = 0;
            bytes[5] = 0;
            bytes[6] = 0;
            bytes[7] = 32;
            dec.feed(&bytes);
            let _ = dec.next_frame();
        }
    }

    #[test]
    fn header_blocks_that_lie_are_refused() {
        // Compressed with the right context, but the count claims more pairs than there are.
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(dictionary()).unwrap();
        let raw = [0u8, 0, 0, 9, 0, 0, 0, 1, b'a', 0, 0, 0, 0];
        let mut out = Vec::with_capacity(256);
        c.compress_vec(&raw, &mut out, FlushCompress::Sync).unwrap();
        let mut frame = BytesMut::new();
        frame.put_u16(0x8003);
        frame.put_u16(TYPE_SYN_REPLY);
        frame.put_u32(4 + out.len() as u32);
        frame.put_u32(1);
        frame.put_slice(&out);
        let mut dec = Decoder::new();
        dec.feed(&frame);
        assert!(matches!(dec.next_frame(), Err(SpdyError::HeaderBlock(_))));
        assert!(parse_headers(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(parse_headers(&[0, 0, 0, 0, 1]).is_err());
        assert_eq!(
            parse_headers(&[0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b']).unwrap(),
            hs(&[("a", "b")])
        );
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut dec = Decoder::new();
        // A data frame announcing 16 MiB - 1: refused from its header alone.
        dec.feed(b"\0\0\0\x01\0\xff\xff\xff");
        assert_eq!(dec.next_frame(), Err(SpdyError::TooLarge((1 << 24) - 1)));
        let mut enc = Encoder::new();
        let big = Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![0u8; MAX_FRAME_LEN + 1]),
        };
        assert!(enc.encode(&big, &mut BytesMut::new()).is_err());
        // A header block that inflates past the limit.
        let mut enc = Encoder::new();
        let long = hs(&[("a", &"x".repeat(MAX_HEADER_BLOCK))]);
        assert!(
            enc.encode(
                &Frame::SynReply {
                    stream_id: 1,
                    fin: false,
                    headers: long
                },
                &mut BytesMut::new()
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut dec = Decoder::new();
        // CREDENTIAL (10), then a PING.
        dec.feed(b"\x80\x03\0\x0a\0\0\0\x02xy\x80\x03\0\x06\0\0\0\x04\0\0\0\x05");
        assert_eq!(dec.next_frame(), Ok(Some(Frame::Ping(5))));
        assert_eq!(dec.next_frame(), Ok(None));
    }
}
