//! The fault injector (`scripts/fault_proxy.py`) in front of the moto server: 503 SlowDown,
//! 500, connections reset mid-body and 2 s stalls on a share of S3 requests, or Kinesis's
//! ProvisionedThroughputExceeded on a share of GetRecords calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::Services;

/// A running fault proxy; stopped when dropped.
pub struct FaultProxy {
    child: Child,
    /// Its loopback endpoint (`http://127.0.0.1:PORT`).
    pub endpoint: String,
}

impl FaultProxy {
    /// Starts a proxy in front of the services' S3 endpoint that faults a share `rate` of
    /// requests (random generator seeded with `seed`).
    pub fn start(services: &Services, rate: f64, seed: u64) -> Self {
        Self::start_with(services, rate, seed, &[])
    }

    /// Starts a proxy that answers a share `rate` of Kinesis GetRecords calls with
    /// ProvisionedThroughputExceeded (and forwards everything else).
    pub fn kinesis_throttling(services: &Services, rate: f64, seed: u64) -> Self {
        Self::start_with(services, rate, seed, &["--faults", "throttle", "--target", "GetRecords"])
    }

    fn start_with(services: &Services, rate: f64, seed: u64, extra: &[&str]) -> Self {
        // Read at run time: a shared target directory may hold a test binary built from another
        // checkout of the same sources.
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
        let script = Path::new(&crate_dir).join("../scripts/fault_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--upstream", &services.s3_endpoint, "--rate", &rate.to_string(), "--seed", &seed.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fault proxy");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("the proxy reports its port");
        let port = first.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("fault proxy: {first}"));
        Self { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// Environment for a job that writes to S3 through the proxy.
    pub fn s3_env(&self, services: &Services) -> Vec<(String, String)> {
        let mut env = services.s3_env();
        env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
        env.push(("AWS_ENDPOINT_URL".to_string(), self.endpoint.clone()));
        env
    }

    /// The requests seen and the faults injected so far, by kind (`503`, `500`, `reset`,
    /// `stall`, `throttle`); `rate` changes the share of faulted requests first when given.
    pub fn counts(&self, rate: Option<f64>) -> serde_json::Value {
        let host = self.endpoint.trim_start_matches("http://");
        let query = rate.map(|r| format!("?rate={r}")).unwrap_or_default();
        let mut stream = std::net::TcpStream::connect(host).expect("the proxy is reachable");
        write!(stream, "PUT /__faults{query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer read");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("fault counts {answer}: {e}"))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
