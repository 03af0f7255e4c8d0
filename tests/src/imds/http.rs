//! Just enough HTTP/1.1 for IMDS clients: request line, headers, Content-Length bodies,
//! keep-alive, and answers written in one piece.

use std::io::{self, BufRead, Read, Write};

pub(crate) struct HttpRequest {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
    pub keep_alive: bool,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request; `Ok(None)` when the client closed the connection between requests.
pub(crate) fn read_request(r: &mut impl BufRead) -> io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = HttpRequest {
        method: method.to_string(),
        // Query strings mean nothing to IMDS paths; some clients escape the MACs' colons.
        path: percent_decode(target.split('?').next().unwrap_or("")),
        keep_alive: version == "HTTP/1.1",
        headers,
    };
    match req.header("Connection").map(str::to_ascii_lowercase) {
        Some(c) if c == "close" => req.keep_alive = false,
        Some(c) if c == "keep-alive" => req.keep_alive = true,
        _ => {}
    }
    let len: u64 = req
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    io::copy(&mut r.take(len), &mut io::sink())?;
    Ok(Some(req))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) struct HttpResponse {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl HttpResponse {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        HttpResponse {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

pub(crate) fn write_response(
    w: &mut impl Write,
    resp: &HttpResponse,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: EC2ws\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (n, v) in &resp.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&resp.body);
    }
    w.write_all(out.as_bytes())?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_case_insensitively_and_skips_the_body() {
        let raw = b"PUT /latest/api/token?x=1 HTTP/1.1\r\nx-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.0\r\n\r\n";
        let mut r = io::BufReader::new(&raw[..]);
        let req = read_request(&mut r).unwrap().unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path, "/latest/api/token");
        assert_eq!(
            req.header("X-aws-ec2-metadata-token-ttl-seconds"),
            Some("60")
        );
        assert!(req.keep_alive);
        let next = read_request(&mut r).unwrap().unwrap();
        assert_eq!(next.method, "GET");
        assert!(!next.keep_alive, "HTTP/1.0 closes by default");
        assert!(read_request(&mut r).unwrap().is_none());
    }

    #[test]
    fn escaped_paths_are_decoded() {
        assert_eq!(percent_decode("/macs/0a%3A00%3a01/x%"), "/macs/0a:00:01/x%");
    }

    #[test]
    fn response_carries_length_and_connection() {
        let mut out = Vec::new();
        write_response(&mut out, &HttpResponse::new(404, "nope"), false, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nnope"));
    }
}
