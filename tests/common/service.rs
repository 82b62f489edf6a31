//! The long-running service as a child process with an ephemeral health port, and a
//! minimal HTTP GET for its endpoints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Service {
    pub child: Child,
    pub port: u16,
    /// Everything the service logged so far (JSON lines).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `esr-ingest --config esr.toml <args> run` in `dir` (the config must set
    /// `[health] listen = "127.0.0.1:0"`) and waits for the port in its log.
    pub fn start(dir: &std::path::Path, args: &[&str]) -> Service {
        Self::start_with_env(dir, args, &[])
    }

    /// [`Service::start`] with extra environment variables.
    pub fn start_with_env(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut child = Command::new(super::bin())
            .current_dir(dir)
            .args(["--config", "esr.toml", "--log-format", "json"])
            .args(args)
            .arg("run")
            .env_remove("ESR_INGEST_CONFIG")
            .env("ESR_INGEST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the service");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            assert!(Instant::now() < deadline, "the health server did not start");
            let line = lines.next().expect("the service exited early").expect("read stderr");
            log.lock().unwrap().push(line.clone());
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if v["message"] == "health server listening" {
                let listen = v["listen"].as_str().expect("listen field").to_string();
                break listen.rsplit(':').next().unwrap().parse().expect("port");
            }
        };
        // keep draining stderr so the service never blocks on a full pipe
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Service { child, port, log }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        get_text(self.port, path)
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (code, body) = self.get(path);
        (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }

    /// Polls `path` until `ok(code, body)` or `limit` passes.
    pub fn wait_for(&self, path: &str, limit: Duration, ok: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let deadline = Instant::now() + limit;
        loop {
            let (code, body) = self.get(path);
            if ok(code, &body) {
                return (code, body);
            }
            assert!(Instant::now() < deadline, "{path} never became as expected; last: {code} {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// `GET path` on loopback; the status code and the body.
pub fn get_text(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_string())
}
