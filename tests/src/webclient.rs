//! A plain HTTP/1.1 client for the enrolment pages on loopback: one
//! request, or many over a kept-alive connection, from a chosen source
//! address. Linux routes all of 127.0.0.0/8 to `lo`, so a test can play
//! many clients (each its own address, as the pages' per-address limits
//! see them) without any network.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// One response: the status, the head lower-cased (status line and
/// headers), and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Status line and headers, lower-cased.
    pub head: String,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// The value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

/// The `n`-th source address of a group of clients: `127.{group}.x.y`,
/// never a network or broadcast-looking last byte.
pub fn loopback_source(group: u8, n: u32) -> IpAddr {
    let x = (n / 250) as u8;
    let y = (n % 250) as u8 + 1;
    IpAddr::V4(Ipv4Addr::new(127, group, x, y))
}

/// One TCP connection to the pages.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read past the end of the last response.
    pending: Vec<u8>,
    port: u16,
}

impl Connection {
    /// Connects to 127.0.0.1:`port` from `source` (any local address when
    /// `None`); reads and writes time out after `timeout`.
    pub fn open(port: u16, source: Option<IpAddr>, timeout: Duration) -> std::io::Result<Self> {
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if let Some(source) = source {
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        socket.connect_timeout(&target.into(), timeout)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            pending: Vec::new(),
            port,
        })
    }

    /// The socket, for writing a request by hand (a slow body).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends one request (kept alive unless `headers` says otherwise) and
    /// reads its response. `headers` are whole lines, each ending in CRLF.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> std::io::Result<Answer> {
        let length = if body.is_empty() && method == "GET" {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}{length}\r\n{body}",
            self.port
        );
        self.stream.write_all(request.as_bytes())?;
        self.read_answer(method == "HEAD")
    }

    /// Reads one response (its body by `Content-Length`, or to the end).
    pub fn read_answer(&mut self, head_only: bool) -> std::io::Result<Answer> {
        let mut buf = std::mem::take(&mut self.pending);
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection closed before a response",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("no status line in {head:?}"),
                )
            })?;
        let length = head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        let body_end = match (head_only, length) {
            (true, _) => head_end,
            (false, Some(length)) => {
                while buf.len() < head_end + length {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the connection closed inside a body",
                        ));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                head_end + length
            }
            (false, None) => {
                self.stream.read_to_end(&mut buf)?;
                buf.len()
            }
        };
        self.pending = buf.split_off(body_end);
        let body = String::from_utf8_lossy(&buf[head_end..body_end]).into_owned();
        Ok(Answer { status, head, body })
    }
}

/// One request on a connection of its own (`Connection: close`), from any
/// local address; panics when there is no response.
pub fn request(port: u16, method: &str, path: &str, headers: &str, body: &str) -> Answer {
    request_from(None, port, method, path, headers, body)
}

/// [`request`] from `source`.
pub fn request_from(
    source: Option<IpAddr>,
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Answer {
    let mut connection = Connection::open(port, source, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to the pages on 127.0.0.1:{port}: {e}"));
    connection
        .send(
            method,
            path,
            &format!("Connection: close\r\n{headers}"),
            body,
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `application/x-www-form-urlencoded` as a header line.
pub const FORM: &str = "Content-Type: application/x-www-form-urlencoded\r\n";

/// The `value` of the first `<input … name="NAME" value="…">` in `page`.
pub fn hidden_field(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let rest = &page[page.find(&marker)? + marker.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}
