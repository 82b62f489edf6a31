//! A Slack-compatible webhook receiver on loopback, for the alert tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook receiver on loopback: answers 500 to the first request, 200 after; keeps
/// the text of every accepted message.
pub struct Receiver {
    pub url: String,
    pub accepted: Arc<Mutex<Vec<String>>>,
    pub refused: Arc<Mutex<usize>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/services/T0/B0/secret", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (a, r) = (accepted.clone(), refused.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let text =
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["text"].as_str().unwrap().to_string();
                let mut first = r.lock().unwrap();
                let status = if *first == 0 {
                    *first += 1;
                    "500 Internal Server Error"
                } else {
                    a.lock().unwrap().push(text);
                    "200 OK"
                };
                let mut conn = conn;
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        Receiver { url, accepted, refused }
    }

    pub fn messages(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }

    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        while self.messages().len() < n {
            assert!(Instant::now() < deadline, "expected {n} messages, got {:?}", self.messages());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.messages()
    }
}
