//! The backend pid the server announces at startup (`BackendKeyData`), read off the
//! connection's own bytes (tokio-postgres keeps it private). Compared with `pg_backend_pid()`
//! it tells a direct session, or one through a plain TCP proxy, from a pooler's: PgBouncer
//! answers the startup itself with a key of its own, and the server backend behind it is
//! shared. Only the messages up to the first `ReadyForQuery` are parsed; after that (and for
//! anything unexpected) the bytes pass through untouched.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// Where the announced pid lands; `i64::MIN` until seen.
#[derive(Clone)]
pub(crate) struct Announced(Arc<AtomicI64>);

impl Default for Announced {
    fn default() -> Announced {
        Announced(Arc::new(AtomicI64::new(i64::MIN)))
    }
}

impl Announced {
    pub(crate) fn new() -> Announced {
        Announced::default()
    }

    pub(crate) fn pid(&self) -> Option<i32> {
        i32::try_from(self.0.load(Ordering::SeqCst)).ok()
    }
}

/// The `SSLRequest` packet: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// Longest handshake the parser buffers before giving up.
const MAX_BUFFER: usize = 64 * 1024;

#[derive(Debug, PartialEq)]
enum Mode {
    /// Nothing written yet (raw socket): an `SSLRequest` or the startup packet comes first.
    Start,
    /// The one-byte answer to `SSLRequest` is next.
    SslAnswer,
    Parse,
    Done,
}

/// Parses server messages (`type`, `length`, body) until `ReadyForQuery` or an error.
struct Parser {
    mode: Mode,
    buf: Vec<u8>,
    out: Announced,
}

impl Parser {
    fn wrote(&mut self, bytes: &[u8]) {
        if self.mode == Mode::Start && !bytes.is_empty() {
            self.mode = if bytes.starts_with(&SSL_REQUEST) {
                Mode::SslAnswer
            } else {
                Mode::Parse
            };
        }
    }

    fn read(&mut self, mut bytes: &[u8]) {
        if self.mode == Mode::SslAnswer && !bytes.is_empty() {
            // 'S': TLS follows on this socket, and the TLS layer's own parser takes over.
            self.mode = if bytes[0] == b'N' {
                Mode::Parse
            } else {
                Mode::Done
            };
            bytes = &bytes[1..];
        }
        if self.mode != Mode::Parse {
            return;
        }
        self.buf.extend_from_slice(bytes);
        loop {
            if self.buf.len() < 5 {
                break;
            }
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if !(4..=MAX_BUFFER).contains(&len) {
                self.done();
                return;
            }
            if self.buf.len() < 1 + len {
                break;
            }
            match self.buf[0] {
                b'K' if len >= 12 => {
                    let pid =
                        i32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                    self.out.0.store(i64::from(pid), Ordering::SeqCst);
                }
                b'Z' | b'E' => {
                    self.done();
                    return;
                }
                _ => {}
            }
            self.buf.drain(..1 + len);
        }
        if self.buf.len() > MAX_BUFFER {
            self.done();
        }
    }

    fn done(&mut self) {
        self.mode = Mode::Done;
        self.buf = Vec::new();
    }
}

/// A stream whose startup answer is parsed for the announced pid.
pub(crate) struct Sniffer<S> {
    inner: S,
    parser: Mutex<Parser>,
}

impl<S> Sniffer<S> {
    /// Over the raw socket (which may still negotiate TLS).
    pub(crate) fn raw(inner: S, out: Announced) -> Sniffer<S> {
        Sniffer::with(inner, out, Mode::Start)
    }

    fn with(inner: S, out: Announced, mode: Mode) -> Sniffer<S> {
        Sniffer {
            inner,
            parser: Mutex::new(Parser {
                mode,
                buf: Vec::new(),
                out,
            }),
        }
    }

    fn parser(&self) -> std::sync::MutexGuard<'_, Parser> {
        self.parser.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) {
            let mut p = self.parser();
            if p.mode != Mode::Done {
                p.read(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.parser().wrote(data);
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Sniffer<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose stream is parsed above the encryption.
pub(crate) struct SniffTls<T> {
    pub(crate) inner: T,
    pub(crate) out: Announced,
}

impl<S, T> TlsConnect<S> for SniffTls<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
    T::Stream: Send + 'static,
{
    type Stream = Sniffer<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let out = self.out;
        let f = self.inner.connect(stream);
        Box::pin(async move { Ok(Sniffer::with(f.await?, out, Mode::Parse)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![ty];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn parser(mode: Mode) -> (Parser, Announced) {
        let out = Announced::new();
        (
            Parser {
                mode,
                buf: Vec::new(),
                out: out.clone(),
            },
            out,
        )
    }

    #[test]
    fn the_key_data_pid_is_read_across_split_reads() {
        let mut bytes = msg(b'R', &0u32.to_be_bytes());
        bytes.extend(msg(b'S', b"application_name\0rose-agent\0"));
        let mut key = 4242i32.to_be_bytes().to_vec();
        key.extend_from_slice(&7i32.to_be_bytes());
        bytes.extend(msg(b'K', &key));
        bytes.extend(msg(b'Z', b"I"));
        let (mut p, out) = parser(Mode::Start);
        p.wrote(&[0, 0, 0, 40, 0, 3, 0, 0]);
        for chunk in bytes.chunks(3) {
            p.read(chunk);
        }
        assert_eq!(out.pid(), Some(4242));
        assert_eq!(p.mode, Mode::Done);
    }

    #[test]
    fn an_ssl_answer_hands_over_or_is_skipped() {
        let (mut p, _) = parser(Mode::Start);
        p.wrote(&SSL_REQUEST);
        p.read(b"S\x16\x03\x01garbage");
        assert_eq!(p.mode, Mode::Done);
        let (mut p, out) = parser(Mode::Start);
        p.wrote(&SSL_REQUEST);
        let mut b = b"N".to_vec();
        b.extend(msg(b'K', &[0, 0, 0, 9, 0, 0, 0, 1]));
        p.read(&b);
        assert_eq!(out.pid(), Some(9));
    }

    #[test]
    fn garbage_gives_up_without_panicking() {
        let (mut p, out) = parser(Mode::Parse);
        p.read(&[b'K', 0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(p.mode, Mode::Done);
        assert_eq!(out.pid(), None);
        let (mut p, _) = parser(Mode::Parse);
        p.read(&[b'K', 0, 0, 0, 1]);
        assert_eq!(p.mode, Mode::Done);
    }
}
