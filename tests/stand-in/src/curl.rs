//! The `curl` personality: `curl [-f] [-s] [-S] [-m SECS] URL`, GET only, with curl's exit codes
//! (0 ok, 2 bad usage, 6 cannot resolve, 7 cannot connect, 22 HTTP error with -f, 28 timeout).

use crate::http::{read_response, ParseError};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq)]
struct Options {
    fail: bool,
    silent: bool,
    show_error: bool,
    max_time: Duration,
    url: String,
}

#[derive(Debug, PartialEq)]
struct Url {
    host: String,
    port: u16,
    path: String,
}

/// Runs curl mode with the arguments after argv[0]; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("curl: {msg}");
            eprintln!("curl: try 'curl --help' for more information");
            return 2;
        }
    };
    let show = !opts.silent || opts.show_error;
    match fetch(&opts) {
        Ok((status, _)) if status >= 400 && opts.fail => {
            if show {
                eprintln!("curl: (22) The requested URL returned error: {status}");
            }
            22
        }
        Ok((_, body_bytes)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&body_bytes);
            let _ = out.flush();
            0
        }
        Err((code, msg)) => {
            if show {
                eprintln!("curl: ({code}) {msg}");
            }
            code
        }
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        fail: false,
        silent: false,
        show_error: false,
        max_time: Duration::from_secs(10),
        url: String::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fail" => opts.fail = true,
            "--silent" => opts.silent = true,
            "--show-error" => opts.show_error = true,
            "-m" | "--max-time" => {
                let v = it
                    .next()
                    .ok_or(format!("option {arg}: requires parameter"))?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or(format!(
                        "option {arg}: expected a proper numerical parameter"
                    ))?;
                opts.max_time = Duration::from_secs_f64(secs);
            }
            a if a.starts_with("--") => return Err(format!("option {a}: is unknown")),
            a if a.starts_with('-') && a.len() > 1 => {
                for c in a[1..].chars() {
                    match c {
                        'f' => opts.fail = true,
                        's' => opts.silent = true,
                        'S' => opts.show_error = true,
                        _ => return Err(format!("option {a}: is unknown")),
                    }
                }
            }
            a if opts.url.is_empty() => opts.url = a.to_string(),
            a => return Err(format!("only one URL is supported, got also {a}")),
        }
    }
    if opts.url.is_empty() {
        return Err("no URL specified".into());
    }
    Ok(opts)
}

fn parse_url(url: &str) -> Result<Url, (i32, String)> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => return Err((1, format!("Protocol \"{scheme}\" not supported"))),
        None => url,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let bad = || {
        (
            3,
            format!("URL rejected: Malformed input to a URL function: {url}"),
        )
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => 80,
    };
    Ok(Url {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// Static glibc cannot load NSS modules, so `localhost` is resolved here, as /etc/hosts would.
fn resolve(url: &Url) -> Result<Vec<SocketAddr>, (i32, String)> {
    if url.host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], url.port))]);
    }
    let not_resolved = || (6, format!("Could not resolve host: {}", url.host));
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|_| not_resolved())?
        .collect();
    if addrs.is_empty() {
        return Err(not_resolved());
    }
    Ok(addrs)
}

fn fetch(opts: &Options) -> Result<(u16, Vec<u8>), (i32, String)> {
    let started = Instant::now();
    let url = parse_url(&opts.url)?;
    let addrs = resolve(&url)?;
    let connect_timeout = opts.max_time.min(Duration::from_secs(5));
    let stream = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, connect_timeout).ok())
        .ok_or_else(|| {
            (
                7,
                format!(
                    "Failed to connect to {} port {} after {} ms: Couldn't connect to server",
                    url.host,
                    url.port,
                    started.elapsed().as_millis()
                ),
            )
        })?;
    let remaining = opts
        .max_time
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(remaining));
    let _ = stream.set_write_timeout(Some(remaining));
    let host_header = if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: curl/8.5.0 (fractalic-stand-in)\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path
    );
    let timed_out = || {
        (
            28,
            format!(
                "Operation timed out after {} milliseconds",
                started.elapsed().as_millis()
            ),
        )
    };
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| (55, format!("Failed sending data to the peer: {e}")))?;
    match read_response(&mut BufReader::new(&stream)) {
        Ok(resp) => Ok((resp.status, resp.body)),
        Err(ParseError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(timed_out())
        }
        Err(ParseError::Io(e)) => Err((56, format!("Recv failure: {e}"))),
        Err(ParseError::Malformed(m)) => Err((8, format!("Weird server reply: {m}"))),
        Err(ParseError::TooLarge) => Err((8, "Weird server reply: too large".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_combined_and_separate_flags() {
        let o = parse_args(&args(&["-fsS", "http://localhost:8001/health"])).unwrap();
        assert!(o.fail && o.silent && o.show_error);
        let o = parse_args(&args(&["-s", "http://x/", "-f"])).unwrap();
        assert!(o.fail && o.silent && !o.show_error);
        assert!(parse_args(&args(&["-f"])).is_err());
        assert!(parse_args(&args(&["-X", "http://x/"])).is_err());
        assert_eq!(
            parse_args(&args(&["-m", "2.5", "u"])).unwrap().max_time,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("http://localhost:5859/status?x").unwrap(),
            Url {
                host: "localhost".into(),
                port: 5859,
                path: "/status?x".into()
            }
        );
        assert_eq!(parse_url("127.0.0.1").unwrap().port, 80);
        assert_eq!(parse_url("http://[::1]:8000").unwrap().host, "::1");
        assert_eq!(parse_url("https://x/").unwrap_err().0, 1);
        assert_eq!(parse_url("http://x:notaport/").unwrap_err().0, 3);
    }

    #[test]
    fn refused_connection_is_exit_7() {
        // Bind then drop to get a port that is very likely closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let code = main(&args(&["-s", &format!("http://127.0.0.1:{port}/")]));
        assert_eq!(code, 7);
    }
}
