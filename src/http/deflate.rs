//! RFC 7692 permessage-deflate for the live connections (R6.9), as a byte stream beneath tungstenite,
//! which has no extension support.
//!
//! [`DeflateStream`] sits between the socket and tungstenite (server side):
//! - **in**: a client message whose first frame has RSV1 set is gathered across its continuation
//!   frames, inflated (§7.2.2: append `00 00 ff ff`) within a size limit, and handed up as one plain
//!   frame (masked with the zero key, which leaves the payload as is). Plain messages and control frames
//!   pass untouched.
//! - **out**: every data message tungstenite writes is deflated (§7.2.1: sync flush, trailing
//!   `00 00 ff ff` removed) and sent as one frame with RSV1 set. Control frames pass untouched.
//!
//! It is negotiated with no context takeover in either direction, so each message is compressed on its
//! own: no per-connection compression window is kept between messages (memory stays flat with many
//! connections), and a message never depends on an earlier one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The extension as this server accepts it.
pub const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The response for the client's `Sec-WebSocket-Extensions` offers, if one of them can be accepted:
/// `permessage-deflate` with known parameters, and no `server_max_window_bits` below 15 (the deflater
/// here always uses a 32 KiB window).
pub fn negotiate(offers: Option<&str>) -> Option<String> {
    for offer in offers?.split(',') {
        let mut parts = offer.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            continue;
        }
        let mut seen = Vec::new();
        let mut acceptable = true;
        let mut echo_window = false;
        for param in parts.filter(|p| !p.is_empty()) {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            if seen.contains(&name) {
                acceptable = false;
                break;
            }
            seen.push(name);
            match (name, value) {
                ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(v))
                    if v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)) => {}
                ("server_max_window_bits", Some("15")) => echo_window = true,
                _ => {
                    acceptable = false;
                    break;
                }
            }
        }
        if acceptable {
            return Some(if echo_window {
                format!("{RESPONSE}; server_max_window_bits=15")
            } else {
                RESPONSE.to_owned()
            });
        }
    }
    None
}

/// The largest message a client may send once inflated.
const MAX_INFLATED: usize = 64 * 1024;

/// Bytes waiting for the socket beyond which writes wait (backpressure reaches tungstenite).
const HIGH_WATER: usize = 256 * 1024;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: usize,
    /// Bytes of the header itself.
    size: usize,
}

/// Reads a frame header from the start of `buf`; `None` until it is complete.
fn parse_header(buf: &[u8]) -> io::Result<Option<Header>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut size) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = usize::try_from(u64::from_be_bytes(b))
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
            (len, 10)
        }
        n => (usize::from(n), 2),
    };
    let mask = if masked {
        if buf.len() < size + 4 {
            return Ok(None);
        }
        let mut m = [0u8; 4];
        m.copy_from_slice(&buf[size..size + 4]);
        size += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        mask,
        len,
        size,
    }))
}

fn write_header(out: &mut BytesMut, fin: bool, rsv1: bool, opcode: u8, mask: Option<[u8; 4]>, len: usize) {
    out.extend_from_slice(&[(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | (opcode & 0x0f)]);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.extend_from_slice(&[m | len as u8]);
    } else if let Ok(short) = u16::try_from(len) {
        out.extend_from_slice(&[m | 126]);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.extend_from_slice(&[m | 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

fn unmask(payload: &mut [u8], mask: Option<[u8; 4]>) {
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
}

/// Deflates one message as RFC 7692 §7.2.1 says.
pub fn deflate(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(256));
        }
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    Ok(out)
}

/// Inflates one message as RFC 7692 §7.2.2 says, refusing more than `limit` bytes of output.
pub fn inflate(data: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let mut input = Vec::with_capacity(data.len() + 4);
    input.extend_from_slice(data);
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity((data.len() * 4).clamp(64, limit + 1));
    loop {
        if out.len() == out.capacity() {
            if out.len() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "inflated message too large",
                ));
            }
            out.reserve(out.capacity().max(256));
        }
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let consumed = before_in as usize;
        d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if out.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "inflated message too large",
            ));
        }
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        if d.total_in() == before_in && d.total_out() == before_out && out.len() < out.capacity() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt compressed message",
            ));
        }
    }
}

/// A compressed message being gathered from its frames.
struct Gathering {
    opcode: u8,
    payload: Vec<u8>,
}

/// The socket of a connection that negotiated permessage-deflate (see the module documentation).
pub struct DeflateStream<S> {
    inner: S,
    /// From the socket, not yet parsed.
    raw: BytesMut,
    /// Plain frames for tungstenite.
    ready: BytesMut,
    inbound: Option<Gathering>,
    eof: bool,
    /// From tungstenite, not yet parsed.
    written: BytesMut,
    /// Frames for the socket.
    out: BytesMut,
    outbound: Option<Gathering>,
}

impl<S> DeflateStream<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            inbound: None,
            eof: false,
            written: BytesMut::new(),
            out: BytesMut::new(),
            outbound: None,
        }
    }

    /// Turns complete frames of `raw` into plain frames in `ready`.
    fn decode(&mut self) -> io::Result<()> {
        while let Some(h) = parse_header(&self.raw)? {
            if self.raw.len() < h.size + h.len {
                return Ok(());
            }
            let frame = self.raw.split_to(h.size + h.len);
            let data = h.opcode == 1 || h.opcode == 2;
            let continuation = h.opcode == 0;
            if data && h.rsv1 {
                let mut payload = frame[h.size..].to_vec();
                unmask(&mut payload, h.mask);
                self.inbound = Some(Gathering {
                    opcode: h.opcode,
                    payload,
                });
            } else if continuation && let Some(g) = self.inbound.as_mut() {
                let start = g.payload.len();
                g.payload.extend_from_slice(&frame[h.size..]);
                unmask(&mut g.payload[start..], h.mask);
                if g.payload.len() > MAX_INFLATED {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "compressed message too large",
                    ));
                }
            } else {
                // Plain data, control frames, continuations of plain messages: as they are.
                self.ready.extend_from_slice(&frame);
                continue;
            }
            if h.fin
                && let Some(g) = self.inbound.take()
            {
                let plain = inflate(&g.payload, MAX_INFLATED)?;
                write_header(&mut self.ready, true, false, g.opcode, Some([0; 4]), plain.len());
                self.ready.extend_from_slice(&plain);
            }
        }
        Ok(())
    }

    /// Turns complete frames tungstenite wrote into compressed frames in `out`.
    fn encode(&mut self) -> io::Result<()> {
        while let Some(h) = parse_header(&self.written)? {
            if self.written.len() < h.size + h.len {
                return Ok(());
            }
            let frame = self.written.split_to(h.size + h.len);
            let mut payload = frame[h.size..].to_vec();
            unmask(&mut payload, h.mask);
            match h.opcode {
                1 | 2 => {
                    self.outbound = Some(Gathering {
                        opcode: h.opcode,
                        payload,
                    })
                }
                0 if self.outbound.is_some() => {
                    if let Some(g) = self.outbound.as_mut() {
                        g.payload.extend_from_slice(&payload);
                    }
                }
                _ => {
                    self.out.extend_from_slice(&frame);
                    continue;
                }
            }
            if h.fin
                && let Some(g) = self.outbound.take()
            {
                let compressed = deflate(&g.payload)?;
                write_header(&mut self.out, true, true, g.opcode, None, compressed.len());
                self.out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> DeflateStream<S> {
    /// Writes `out` to the socket until it is empty or the socket is full.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out.advance(n),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeflateStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = buf.remaining().min(this.ready.len());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                // A truncated frame goes up as it is, for tungstenite to report.
                let rest = this.raw.split();
                this.ready.extend_from_slice(&rest);
            } else {
                this.raw.extend_from_slice(read.filled());
                this.decode()?;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeflateStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        if this.out.len() >= HIGH_WATER {
            // The socket is full (drain registered the wake-up): tungstenite waits.
            return Poll::Pending;
        }
        this.written.extend_from_slice(data);
        this.encode()?;
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[test]
    fn offers_are_accepted_only_when_they_can_be_honoured() {
        let chrome = negotiate(Some("permessage-deflate; client_max_window_bits")).unwrap();
        assert_eq!(chrome, RESPONSE);
        assert_eq!(
            negotiate(Some(
                "permessage-deflate; server_max_window_bits=10, permessage-deflate"
            ))
            .as_deref(),
            Some(RESPONSE),
            "the first offer needs a smaller window than this deflater has; the second is taken"
        );
        assert!(
            negotiate(Some("permessage-deflate; server_max_window_bits=15"))
                .unwrap()
                .ends_with("server_max_window_bits=15")
        );
        assert_eq!(
            negotiate(Some("permessage-deflate; server_max_window_bits=9")),
            None
        );
        assert_eq!(negotiate(Some("permessage-deflate; foo")), None);
        assert_eq!(
            negotiate(Some(
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
            )),
            None
        );
        assert_eq!(negotiate(Some("x-webkit-deflate-frame")), None);
        assert_eq!(negotiate(None), None);
    }

    #[test]
    fn messages_round_trip_and_bombs_are_refused() {
        for text in [
            &b""[..],
            b"a",
            &br#"{"seq":1,"type":"interaction.created"}"#.repeat(50),
        ] {
            let packed = deflate(text).unwrap();
            assert_eq!(inflate(&packed, 1 << 20).unwrap(), text);
        }
        let zeros = deflate(&vec![0u8; 1 << 20]).unwrap();
        assert!(zeros.len() < 16 * 1024, "{} bytes", zeros.len());
        assert!(
            inflate(&zeros, MAX_INFLATED).is_err(),
            "1 MiB from a few KiB is refused"
        );
        assert!(inflate(b"\xff\xff\xff", 1024).is_err());
    }

    #[tokio::test]
    async fn outgoing_data_frames_are_compressed_and_control_frames_pass() {
        let (server_side, mut client_side) = tokio::io::duplex(1 << 16);
        let mut stream = DeflateStream::new(server_side);
        let text = br#"{"type":"batch","events":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}"#.repeat(20);
        let mut frame = BytesMut::new();
        write_header(&mut frame, true, false, 1, None, text.len());
        frame.extend_from_slice(&text);
        write_header(&mut frame, true, false, 9, None, 2);
        frame.extend_from_slice(b"hi");
        // tungstenite may write a frame in pieces.
        for piece in frame.chunks(7) {
            stream.write_all(piece).await.unwrap();
        }
        stream.flush().await.unwrap();
        let mut got = vec![0u8; 4096];
        let n = client_side.read(&mut got).await.unwrap();
        let h = parse_header(&got[..n]).unwrap().unwrap();
        assert!(h.fin && h.rsv1 && h.opcode == 1 && h.mask.is_none());
        assert!(h.len < text.len() / 4, "compressed: {} of {}", h.len, text.len());
        assert_eq!(inflate(&got[h.size..h.size + h.len], 1 << 20).unwrap(), text);
        let ping = parse_header(&got[h.size + h.len..n]).unwrap().unwrap();
        assert_eq!((ping.opcode, ping.rsv1, ping.len), (9, false, 2));
    }

    #[tokio::test]
    async fn incoming_compressed_messages_are_inflated_into_plain_frames() {
        let (server_side, mut client_side) = tokio::io::duplex(1 << 16);
        let mut stream = DeflateStream::new(server_side);
        let resume = br#"{"type":"resume","lastSeq":41}"#;
        let packed = deflate(resume).unwrap();
        let key = [0x12, 0x34, 0x56, 0x78];
        let (first, second) = packed.split_at(packed.len() / 2);
        let mut wire = BytesMut::new();
        // A compressed message in two frames, a ping between them, then a plain message.
        for (i, (part, opcode, fin, rsv1)) in [(first, 1, false, true), (second, 0, true, false)]
            .into_iter()
            .enumerate()
        {
            let mut payload = part.to_vec();
            unmask(&mut payload, Some(key));
            write_header(&mut wire, fin, rsv1, opcode, Some(key), payload.len());
            wire.extend_from_slice(&payload);
            if i == 0 {
                write_header(&mut wire, true, false, 9, Some(key), 0);
            }
        }
        let mut plain = b"plain".to_vec();
        unmask(&mut plain, Some(key));
        write_header(&mut wire, true, false, 1, Some(key), plain.len());
        wire.extend_from_slice(&plain);
        client_side.write_all(&wire).await.unwrap();
        drop(client_side);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        let ping = parse_header(&got).unwrap().unwrap();
        assert_eq!((ping.opcode, ping.len), (9, 0), "the control frame passes first");
        let rest = &got[ping.size..];
        let h = parse_header(rest).unwrap().unwrap();
        assert!(h.fin && !h.rsv1 && h.opcode == 1);
        assert_eq!(h.mask, Some([0; 4]));
        assert_eq!(&rest[h.size..h.size + h.len], resume);
        let rest = &rest[h.size + h.len..];
        let p = parse_header(rest).unwrap().unwrap();
        let mut body = rest[p.size..p.size + p.len].to_vec();
        unmask(&mut body, p.mask);
        assert_eq!(body, b"plain");
    }
}
