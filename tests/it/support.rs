//! `TestServer`: the real binary on `127.0.0.1:0`, with its data in a
//! temporary directory, stopped when dropped; the JWTs the tests sign
//! themselves; and `wait_until`, which polls a condition against a
//! deadline instead of sleeping.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) struct TestServer {
    child: Option<Child>,
    pub(crate) base: String,
    /// The Flight SQL endpoint, `http://127.0.0.1:<port>`.
    pub(crate) flight: String,
    /// The PostgreSQL port's `host:port`.
    pub(crate) pg: String,
    pub(crate) data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Keeps the directory alive when the server owns it.
    _tmp: Option<tempfile::TempDir>,
    client: reqwest::blocking::Client,
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl From<reqwest::blocking::Response> for Reply {
    fn from(r: reqwest::blocking::Response) -> Self {
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().unwrap().to_vec(),
        }
    }
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `error` message of a JSON error reply.
    pub(crate) fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.text()))
            .to_string()
    }
}

impl TestServer {
    /// A server with a fresh data directory.
    pub(crate) fn start(args: &[&str]) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(tmp.path(), args);
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data directory.
    pub(crate) fn start_in(dir: &Path, args: &[&str]) -> TestServer {
        Self::start_in_with_env(dir, args, &[])
    }

    /// A server on an existing directory with extra environment variables.
    pub(crate) fn start_in_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut s = TestServer {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            base: String::new(),
            flight: String::new(),
            pg: String::new(),
            data_dir: dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            _tmp: None,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        self.spawn_unready();
        self.wait_healthy();
    }

    /// Starts the process and returns once it has printed its address,
    /// without waiting for `/ready`.
    fn spawn_unready(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("server.log"))
            .unwrap();
        let mut child = Command::new(server_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--flight-addr", "127.0.0.1:0"])
            .args(["--pg-addr", "127.0.0.1:0"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "ALLSOURCE_LOG",
                "info,buoyant_kernel=warn,deltalake_core=warn",
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start allsource");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("allsource listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                if let Some(addr) = line.strip_prefix("allsource flight sql listening on grpc://") {
                    let _ = tx.send(format!("http://{addr}"));
                }
                if let Some(addr) = line.strip_prefix("allsource postgres listening on postgres://")
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let mut addrs = Vec::new();
        while addrs.len() < 3 {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(a) => addrs.push(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start; log:\n{}", self.log());
                }
            }
        }
        self.child = Some(child);
        self.base = addrs[0].clone();
        self.flight = addrs[1].clone();
        self.pg = addrs[2].clone();
    }

    /// Waits for `/ready`: the WAL replayed, the full API up. A server that
    /// exits or never gets there fails the test with the end of its log.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(format!("{}/ready", self.base)).send()
                && r.status().is_success()
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "server never became healthy ({}); its log ends:\n{}",
                    exited.map_or("still running after 60 s".to_string(), |s| format!(
                        "exited: {s}"
                    )),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server process's peak resident memory so far (`VmHWM`), in
    /// bytes.
    pub(crate) fn peak_rss(&self) -> u64 {
        self.proc_status("VmHWM:")
    }

    /// The server process's resident memory now (`VmRSS`), in bytes.
    pub(crate) fn rss(&self) -> u64 {
        self.proc_status("VmRSS:")
    }

    /// The physical plan of `sql`, as `EXPLAIN` gives it.
    pub(crate) fn physical_plan(&self, sql: &str) -> String {
        self.sql(&format!("EXPLAIN {sql}"))
            .iter()
            .find(|r| r["plan_type"] == "physical_plan")
            .map(|r| r["plan"].as_str().unwrap().to_string())
            .unwrap()
    }

    /// The server's threads: each one's name, nice value and CPU time so
    /// far (user and system, in clock ticks).
    pub(crate) fn threads(&self) -> Vec<(String, i64, u64)> {
        let pid = self.child.as_ref().expect("the server runs").id();
        let mut out = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // `tid (name) state ppid ...`: the name may hold spaces; user
            // and system time are the 12th and 13th fields after it, the
            // nice value the 17th.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = stat[open + 1..close].to_string();
            let fields: Vec<i64> = stat[close + 1..]
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            assert!(fields.len() > 16, "too few fields in {stat}");
            out.push((name, fields[16], (fields[11] + fields[12]) as u64));
        }
        out
    }

    fn proc_status(&self, field: &str) -> u64 {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in\n{status}"));
        kb * 1024
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) fn post(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.post_with(path, &[("content-type", content_type)], body)
    }

    pub(crate) fn post_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Reply {
        let mut req = self.client.post(self.url(path)).body(body.into());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send().expect("request"))
    }

    /// PUTs a JSON body; returns the status and the body.
    pub(crate) fn client_put(&self, path: &str, body: &str) -> (u16, String) {
        let r = self
            .client
            .put(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("request");
        (r.status().as_u16(), r.text().unwrap())
    }

    /// GETs `path` and returns the body of a 200.
    pub(crate) fn client_get(&self, path: &str) -> String {
        let r = self.client.get(self.url(path)).send().expect("request");
        assert_eq!(r.status().as_u16(), 200);
        r.text().unwrap()
    }

    /// Posts JSON events to the default table and expects them accepted.
    pub(crate) fn ingest(&self, events: &Value) -> Value {
        let r = self.post("/v1/events", "application/json", events.to_string());
        assert_eq!(r.status, 200, "ingest failed: {}", r.text());
        r.json()
    }

    /// Runs SQL and returns the rows as JSON objects.
    pub(crate) fn sql(&self, sql: &str) -> Vec<Value> {
        let r = self.post("/v1/sql", "text/plain", sql.to_string());
        assert_eq!(r.status, 200, "query {sql:?} failed: {}", r.text());
        match r.json() {
            Value::Array(rows) => rows,
            other => panic!("expected rows, got {other}"),
        }
    }

    /// One value of a one-row, one-column query.
    pub(crate) fn scalar(&self, sql: &str) -> Value {
        let rows = self.sql(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone()
    }

    /// The value of a counter or gauge in `/metrics` (0 when the series
    /// does not exist yet), e.g. `allsource_audit_dropped_total{reason="rate"}`.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        let text = self.client_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Kills the process with SIGKILL: no flush, no goodbye.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Stops the process with SIGTERM and waits for its clean exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            sigterm(c.id());
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "server exited with {status}; log:\n{}",
                        self.log()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("server did not stop after SIGTERM; log:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again without waiting for it to be ready.
    pub(crate) fn restart_unready(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.spawn_unready();
    }

    /// POSTs `body` with a bearer token; the reply whatever its status.
    pub(crate) fn post_as(&self, path: &str, token: &str, content_type: &str, body: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.post_with(
            path,
            &[("content-type", content_type), ("authorization", &auth)],
            body.to_string(),
        )
    }

    /// A GET of `path`: its status and body, whatever the status.
    pub(crate) fn get(&self, path: &str) -> Reply {
        Reply::from(self.client.get(self.url(path)).send().expect("request"))
    }

    /// A GET of `path` with a bearer token: its status and body.
    pub(crate) fn get_as(&self, path: &str, token: &str) -> Reply {
        let r = self.client.get(self.url(path)).bearer_auth(token);
        Reply::from(r.send().expect("request"))
    }

    /// A DELETE of `path`: its status and body, whatever the status.
    pub(crate) fn delete(&self, path: &str) -> Reply {
        Reply::from(self.client.delete(self.url(path)).send().expect("request"))
    }

    /// Starts the server again on the same directory with the same flags.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.spawn();
    }

    /// Starts the server again as [`Self::restart`] does, with `env` set
    /// in its environment from now on.
    pub(crate) fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        for (k, v) in env {
            self.env.retain(|(name, _)| name != k);
            self.env.push((k.to_string(), v.to_string()));
        }
        self.restart();
    }
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The server binary the tests run: `ALLSOURCE_TEST_BIN` when set (a copy
/// kept apart from builds that may replace the one cargo made), else the
/// one cargo built for this test binary.
pub(crate) fn server_bin() -> String {
    std::env::var("ALLSOURCE_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_allsource").to_string())
}

/// The Python of the test virtualenv: `ALLSOURCE_TEST_PYTHON` (set by
/// scripts/test.sh), else `python3`.
pub(crate) fn python() -> String {
    std::env::var("ALLSOURCE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `n` simple events `{event_type, entity_id: "u<i>", payload: {n: i}}`.
pub(crate) fn events(event_type: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                serde_json::json!({
                    "event_type": event_type,
                    "entity_id": format!("u{i}"),
                    "payload": {"n": i},
                })
            })
            .collect(),
    )
}

/// Polls `condition` until it holds; fails the test, naming `what`, if it
/// still does not after `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// JWTs signed by the tests themselves.

/// The HS256 secret of [`hs_server`].
pub(crate) const SECRET: &str = "test-secret-of-at-least-32-bytes!!";
pub(crate) const ISSUER: &str = "allsource-test";
pub(crate) const AUDIENCE: &str = "allsource";

/// Seconds since the epoch, as `exp` and `nbf` count them.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with these claims, signed with `key` by `algorithm`, with
/// `kid` (if any) in its header.
pub(crate) fn sign(
    claims: &Value,
    algorithm: Algorithm,
    key: &EncodingKey,
    kid: Option<&str>,
) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A token with these claims, signed HS256 with `secret`.
pub(crate) fn hs(claims: Value, secret: &str, kid: Option<&str>) -> String {
    sign(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        kid,
    )
}

/// A token with these claims, signed RS256 with the PEM private key in
/// `private_pem`.
pub(crate) fn rs(claims: Value, private_pem: &Path, kid: &str) -> String {
    let key = EncodingKey::from_rsa_pem(&std::fs::read(private_pem).unwrap()).unwrap();
    sign(&claims, Algorithm::RS256, &key, Some(kid))
}

/// A token with these claims and `alg: none`: no signature at all.
pub(crate) fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

/// Valid claims for `tenant` and `role`, with issuer and audience.
pub(crate) fn claims(tenant: &str, role: &str) -> Value {
    json!({"tenant": tenant, "role": role, "sub": format!("{tenant}-{role}"),
           "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE})
}

/// A valid token of [`hs_server`] for `tenant` and `role`.
pub(crate) fn token(tenant: &str, role: &str) -> String {
    hs(claims(tenant, role), SECRET, None)
}

/// A server checking HS256 tokens signed with [`SECRET`], with issuer,
/// audience and no leeway.
pub(crate) fn hs_server() -> TestServer {
    hs_server_with(&["--jwt-leeway", "0s"])
}

/// The flags of a server checking [`SECRET`]'s tokens with issuer and
/// audience.
pub(crate) const HS_FLAGS: [&str; 6] = [
    "--jwt-secret",
    SECRET,
    "--jwt-issuer",
    ISSUER,
    "--jwt-audience",
    AUDIENCE,
];

/// A server checking [`SECRET`]'s tokens, with `extra` flags.
pub(crate) fn hs_server_with(extra: &[&str]) -> TestServer {
    let flags: Vec<&str> = HS_FLAGS.iter().chain(extra).copied().collect();
    TestServer::start(&flags)
}

/// A seeded xorshift generator: each call gives a number below its
/// argument, the same sequence for the same seed.
pub(crate) fn seeded(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    }
}

/// Runs `command` with `input` on its standard input; returns whether it
/// succeeded, its output and its errors.
pub(crate) fn run_with_input(
    command: &mut std::process::Command,
    input: &str,
) -> (bool, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
