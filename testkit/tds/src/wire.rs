//! TDS packet framing (MS-TDS 2.2.3), the bounds-checked byte reader used by every
//! parser, and the wrapper that carries the TLS handshake inside PRELOGIN packets.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Packet types (MS-TDS 2.2.3.1.1).
pub(crate) const PKT_SQL_BATCH: u8 = 0x01;
pub(crate) const PKT_RPC: u8 = 0x03;
pub(crate) const PKT_REPLY: u8 = 0x04;
pub(crate) const PKT_ATTENTION: u8 = 0x06;
pub(crate) const PKT_TRANSACTION: u8 = 0x0E;
pub(crate) const PKT_LOGIN7: u8 = 0x10;
pub(crate) const PKT_PRELOGIN: u8 = 0x12;

const HEADER: usize = 8;
const STATUS_EOM: u8 = 0x01;
/// Upper bound for one client message (a SQL batch or an RPC), to keep a broken
/// client from making the server allocate without limit.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Packet size used before LOGIN7 negotiated one (PRELOGIN and the TLS handshake).
pub(crate) const INITIAL_PACKET_SIZE: usize = 4096;

/// A protocol violation or an I/O failure on one connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

pub(crate) fn proto(msg: impl Into<String>) -> WireError {
    WireError::Protocol(msg.into())
}

/// One complete client message: the payloads of its packets up to end-of-message.
#[derive(Debug)]
pub(crate) struct Message {
    pub ty: u8,
    pub payload: Vec<u8>,
}

/// Reads one message. `Ok(None)` when the peer closed the connection cleanly
/// between messages.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Message>, WireError> {
    let mut payload = Vec::new();
    let mut ty = None;
    loop {
        let mut header = [0u8; HEADER];
        let mut got = 0;
        while got < HEADER {
            let n = r.read(&mut header[got..]).await?;
            if n == 0 {
                if got == 0 && ty.is_none() {
                    return Ok(None);
                }
                return Err(proto("connection closed in the middle of a packet"));
            }
            got += n;
        }
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        if len < HEADER {
            return Err(proto(format!(
                "packet length {len} is shorter than its header"
            )));
        }
        let first_ty = *ty.get_or_insert(header[0]);
        if header[0] != first_ty {
            return Err(proto(format!(
                "packet type changed from {first_ty:#04x} to {:#04x} inside one message",
                header[0]
            )));
        }
        if payload.len() + len - HEADER > MAX_MESSAGE {
            return Err(proto("message larger than 64 MiB"));
        }
        let start = payload.len();
        payload.resize(start + len - HEADER, 0);
        r.read_exact(&mut payload[start..]).await?;
        if header[1] & STATUS_EOM != 0 {
            return Ok(Some(Message {
                ty: first_ty,
                payload,
            }));
        }
    }
}

/// Splits `payload` into packets of at most `packet_size` bytes (header included)
/// with increasing packet ids; the last one carries end-of-message when `eom`.
pub(crate) fn packetize(
    ty: u8,
    payload: &[u8],
    packet_size: usize,
    spid: u16,
    eom: bool,
) -> Vec<u8> {
    let chunk = packet_size.max(512) - HEADER;
    let mut out = Vec::with_capacity(payload.len() + (payload.len() / chunk + 1) * HEADER);
    let mut chunks: Vec<&[u8]> = payload.chunks(chunk).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, part) in chunks.into_iter().enumerate() {
        out.put_u8(ty);
        out.put_u8(if i == last && eom { STATUS_EOM } else { 0 });
        out.put_u16((part.len() + HEADER) as u16);
        out.put_u16(spid);
        out.put_u8(((i + 1) % 256) as u8);
        out.put_u8(0);
        out.extend_from_slice(part);
    }
    out
}

pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    ty: u8,
    payload: &[u8],
    packet_size: usize,
    spid: u16,
    eom: bool,
) -> io::Result<()> {
    let bytes = packetize(ty, payload, packet_size, spid, eom);
    w.write_all(&bytes).await?;
    w.flush().await
}

/// A bounds-checked little reader over a client payload: every read returns an
/// error instead of panicking when the payload is short.
pub(crate) struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                proto(format!(
                    "payload too short: need {n} bytes at offset {}",
                    self.pos
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.bytes(n).map(|_| ())
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16_le(&mut self) -> Result<u16, WireError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u16_be(&mut self) -> Result<u16, WireError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32_le(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64_le(&mut self) -> Result<u64, WireError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// `n` UTF-16LE code units.
    pub fn utf16(&mut self, chars: usize) -> Result<String, WireError> {
        let b = self.bytes(chars * 2)?;
        Ok(utf16_le(b))
    }
}

pub(crate) fn utf16_le(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Server side of "TLS inside PRELOGIN": while the handshake runs, incoming
/// PRELOGIN packet headers are stripped before rustls sees the records, and what
/// rustls writes is buffered and sent as one PRELOGIN message per flush (split at
/// 4096 bytes). Once the client's first non-PRELOGIN byte arrives (a raw TLS
/// record), or [`PreloginWrapper::handshake_done`] is called, it is a plain pipe.
pub(crate) struct PreloginWrapper<S> {
    inner: S,
    wrapping: bool,
    header: [u8; HEADER],
    header_pos: usize,
    read_remaining: usize,
    /// Bytes read while looking for a header that turned out to be TLS.
    replay: Vec<u8>,
    wbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> PreloginWrapper<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            wrapping: true,
            header: [0; HEADER],
            header_pos: 0,
            read_remaining: 0,
            replay: Vec::new(),
            wbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        }
    }
    pub fn handshake_done(&mut self) {
        self.wrapping = false;
    }
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreloginWrapper<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if !this.wrapping {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.read_remaining == 0 {
            while this.header_pos < HEADER {
                let mut hb = ReadBuf::new(&mut this.header[this.header_pos..]);
                match Pin::new(&mut this.inner).poll_read(cx, &mut hb) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                let n = hb.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(()));
                }
                if this.header_pos == 0 && this.header[0] != PKT_PRELOGIN {
                    // The client finished its side of the handshake and sends raw
                    // TLS records now: hand everything through from here on.
                    this.wrapping = false;
                    let k = n.min(buf.remaining());
                    buf.put_slice(&this.header[..k]);
                    this.replay.extend_from_slice(&this.header[k..n]);
                    return Poll::Ready(Ok(()));
                }
                this.header_pos += n;
            }
            this.header_pos = 0;
            let len = u16::from_be_bytes([this.header[2], this.header[3]]) as usize;
            if len < HEADER {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "PRELOGIN packet shorter than its header during the TLS handshake",
                )));
            }
            this.read_remaining = len - HEADER;
        }
        let want = this.read_remaining.min(buf.remaining());
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(want));
        match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                buf.advance(n);
                this.read_remaining -= n;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreloginWrapper<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.wrapping && this.out.is_empty() && this.wbuf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.wbuf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.out.is_empty() && !this.wbuf.is_empty() {
            let data = std::mem::take(&mut this.wbuf);
            this.out = if this.wrapping {
                packetize(PKT_PRELOGIN, &data, INITIAL_PACKET_SIZE, 0, true)
            } else {
                data
            };
            this.out_pos = 0;
        }
        while this.out_pos < this.out.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &this.out[this.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => this.out_pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.out.clear();
        this.out_pos = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
