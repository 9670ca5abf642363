//! `--http` against hostile clients (issue 18, item 10): each attack of the report
//! is made on `count --http 127.0.0.1:0 -`, whose input is a pipe the test keeps
//! open so the process stays up, and the process must stay small (its VmRSS),
//! keep serving others, exit when its input ends, and refuse other methods.
//! Every attack is bounded in bytes and in time, and the process is killed as
//! soon as it grows past the bound, so a regression fails fast instead of eating
//! the machine.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{ChildStdin, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Running;

/// How much the process may grow under an attack.
const RSS_BOUND_KB: u64 = 100 * 1024;

struct Cardinal {
    run: Running,
    /// Its input: the run lasts until this is dropped.
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
}

impl Cardinal {
    fn start() -> Cardinal {
        Self::start_with(common::cardinal())
    }

    fn start_with(mut command: std::process::Command) -> Cardinal {
        let mut child = command
            .args(["count", "-", "--http", "127.0.0.1:0"])
            .env("RUST_LOG", "cardinal=info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (addr, _) = common::http_address(&mut stderr);
        // Drained all along, so that the process never blocks on its stderr.
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Cardinal {
            run: Running(child),
            stdin,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.run.0.id()
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// Samples the RSS until `done` (at most `limit`), and kills the process as
    /// soon as it grows by more than the bound. Returns (start, peak) in kB.
    fn watch_rss(&mut self, limit: Duration, done: impl Fn() -> bool) -> (u64, u64) {
        let start = self.rss_kb();
        let mut peak = start;
        let until = Instant::now() + limit;
        while !done() && Instant::now() < until {
            peak = peak.max(self.rss_kb());
            if peak > start + RSS_BOUND_KB {
                let _ = self.run.0.kill();
                panic!(
                    "the server grew from {start} kB to {peak} kB (more than {RSS_BOUND_KB} kB)"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak = peak.max(self.rss_kb());
        assert!(
            peak <= start + RSS_BOUND_KB,
            "the server grew from {start} kB to {peak} kB"
        );
        (start, peak)
    }

    /// Time until `/healthz` answers 200 to a fresh client; fails after `within`.
    fn served_within(&self, within: Duration) -> Duration {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < within {
            match request(self.addr, "GET", "/healthz", within - t.elapsed()) {
                Ok((200, _, body)) if body == "ok\n" => return t.elapsed(),
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("/healthz not served within {within:?}: {last}")
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

/// One request on a fresh connection: (status, head, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let timeout = timeout.max(Duration::from_millis(10));
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no whole answer in time",
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf)? {
            0 => break,
            n => all.extend_from_slice(&buf[..n]),
        }
    }
    let all = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = all
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no head in {all:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, head.to_string(), body.to_string()))
}

/// Writes `chunk` to connections to `addr` until `total` bytes are written, `limit`
/// is up or `stop` is set, never reading; a connection the server closes is
/// replaced by a new one. Returns the bytes written.
fn flood(
    addr: SocketAddr,
    first: &[u8],
    chunk: &[u8],
    total: usize,
    limit: Duration,
    stop: &AtomicBool,
) -> usize {
    let until = Instant::now() + limit;
    let mut written = 0;
    'connections: while written < total && Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        if s.write_all(first).is_err() {
            continue;
        }
        written += first.len();
        while written < total && Instant::now() < until && !stop.load(Ordering::Relaxed) {
            match s.write(chunk) {
                Ok(n) => written += n,
                // Blocked (the server does not read) or closed: a new connection.
                Err(_) => continue 'connections,
            }
        }
    }
    written
}

#[test]
fn a_client_pipelining_requests_it_never_reads_neither_grows_the_server_nor_starves_others() {
    let mut c = Cardinal::start();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.addr;
    let attacker_stop = Arc::clone(&stop);
    let attack = std::thread::spawn(move || {
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let chunk = request.repeat(64 * 1024 / request.len());
        let sent = flood(
            addr,
            b"",
            &chunk,
            20 << 20,
            Duration::from_secs(10),
            &attacker_stop,
        );
        eprintln!("pipelined {sent} bytes of requests");
    });
    // Meanwhile, another client is served.
    std::thread::sleep(Duration::from_millis(500));
    let took = c.served_within(Duration::from_secs(2));
    eprintln!("/healthz served in {took:?} during the attack");
    let (start, peak) = c.watch_rss(Duration::from_secs(15), || attack.is_finished());
    stop.store(true, Ordering::Relaxed);
    attack.join().unwrap();
    eprintln!("RSS: {start} kB at the start, {peak} kB at the peak");
    c.served_within(Duration::from_secs(2));
}

#[test]
fn forty_unterminated_10_mb_headers_neither_grow_the_server_nor_stop_it_serving() {
    let mut c = Cardinal::start();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.addr;
    let writing = Arc::new(AtomicUsize::new(40));
    let attacker_stop = Arc::clone(&stop);
    let attacker_writing = Arc::clone(&writing);
    let attack = std::thread::spawn(move || {
        let attackers: Vec<_> = (0..40)
            .map(|_| {
                let stop = Arc::clone(&attacker_stop);
                let writing = Arc::clone(&attacker_writing);
                std::thread::spawn(move || {
                    // One connection each; a header that never ends.
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    else {
                        writing.fetch_sub(1, Ordering::Relaxed);
                        return 0;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    let chunk = vec![b'a'; 64 * 1024];
                    let mut sent = 0;
                    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ").is_ok() {
                        let until = Instant::now() + Duration::from_secs(10);
                        while sent < 10 << 20
                            && Instant::now() < until
                            && !stop.load(Ordering::Relaxed)
                        {
                            match s.write(&chunk) {
                                Ok(n) => sent += n,
                                Err(_) => break,
                            }
                        }
                    }
                    writing.fetch_sub(1, Ordering::Relaxed);
                    // Held open until the test is done.
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    sent
                })
            })
            .collect();
        let sent: usize = attackers.into_iter().map(|a| a.join().unwrap()).sum();
        eprintln!("sent {sent} bytes of headers");
    });
    // Until the forty are done writing; their connections stay open.
    let (start, peak) = c.watch_rss(Duration::from_secs(15), || {
        writing.load(Ordering::Relaxed) == 0
    });
    eprintln!("RSS: {start} kB at the start, {peak} kB at the peak");
    // The forty are still connected, and a normal client is served.
    let took = c.served_within(Duration::from_secs(2));
    eprintln!("/healthz served in {took:?} with the forty connected");
    stop.store(true, Ordering::Relaxed);
    attack.join().unwrap();
}

#[test]
fn a_connected_client_does_not_keep_the_process_from_exiting() {
    let mut c = Cardinal::start();
    // One client that sends nothing, and one that asks and never reads its answers:
    // the latter is what kept tiny_http's thread (and so the process) from ending.
    let silent = TcpStream::connect(c.addr).unwrap();
    let stuck = TcpStream::connect(c.addr).unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let mut writer = stuck.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = writer.write_all(&request);
    std::thread::sleep(Duration::from_millis(500));
    // The input ends: the run is over.
    drop(c.stdin.take());
    let t = Instant::now();
    let status = loop {
        if let Some(status) = c.run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still running 5 s after its input ended, with a client connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("exited in {:?}", t.elapsed());
    assert!(status.success(), "{status}");
    drop((silent, stuck));
}

#[test]
fn methods_other_than_get_and_head_get_405_with_allow() {
    let c = Cardinal::start();
    let t = Duration::from_secs(5);
    for (method, path) in [("POST", "/metrics"), ("DELETE", "/"), ("PUT", "/healthz")] {
        let (status, head, _) = request(c.addr, method, path, t).unwrap();
        assert_eq!(status, 405, "{method} {path}: {head}");
        let allow = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("allow"))
            })
            .map(|(_, v)| v.trim().to_string());
        assert_eq!(allow.as_deref(), Some("GET, HEAD"), "{head}");
    }
    // GET and HEAD as before: HEAD has GET's head and no body.
    let (status, get_head, body) = request(c.addr, "GET", "/metrics", t).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("cardinal_frames_read_total 0"), "{body}");
    let (status, head_head, body) = request(c.addr, "HEAD", "/metrics", t).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "");
    let length = |h: &str| {
        h.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .map(str::to_string)
    };
    assert_eq!(length(&head_head), length(&get_head));
}

#[test]
fn it_serves_again_after_running_out_of_file_descriptors() {
    let mut command = common::cardinal();
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs in the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: 24,
                rlim_max: 24,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let c = Cardinal::start_with(command);
    let open = std::fs::read_dir(format!("/proc/{}/fd", c.pid()))
        .unwrap()
        .count();
    assert!(
        open < 20,
        "{open} descriptors open already: the test needs room"
    );
    c.served_within(Duration::from_secs(2));
    // More connections than descriptors left: accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect_timeout(&c.addr, Duration::from_secs(1)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    let took = c.served_within(Duration::from_secs(3));
    eprintln!("served again {took:?} after the descriptors came back");
    let log = c.log_lines();
    assert!(
        log.iter().any(|l| l.contains("http_accept_error")),
        "the accept errors are logged: {log:?}"
    );
}
