//! Tables on S3: the same server against an S3-compatible store (moto's
//! server, from the test virtualenv, on loopback), WAL on local disk.

use crate::support::TestServer;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct S3Store {
    child: Child,
    endpoint: String,
}

impl S3Store {
    fn start() -> S3Store {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let python = std::env::var("ALLSOURCE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto (scripts/test.sh installs it in the test virtualenv)");
        let store = S3Store {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Create the bucket once the store answers.
        loop {
            if let Ok(r) = http.put(format!("{}/lake", store.endpoint)).send()
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "the S3 test store did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        store
    }

    fn object_keys(&self) -> String {
        reqwest::blocking::get(format!("{}/lake?list-type=2", self.endpoint))
            .unwrap()
            .text()
            .unwrap()
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tables_live_on_s3_and_survive_restarts() {
    let store = S3Store::start();
    // Credentials go to the server process only, not to this test process.
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--storage-url",
        "s3://lake/warehouse",
        "--s3-endpoint",
        &store.endpoint,
        "--s3-allow-http",
        "--flush-age",
        "1h",
    ];
    let mut s = TestServer::start_in_with_env(
        tmp.path(),
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    s.ingest(&json!([
        {"event_type": "a", "entity_id": "u1", "payload": {"x": 1}},
        {"event_type": "a", "entity_id": "u2", "payload": {"x": 2}},
    ]));
    // a crash before any flush: the local WAL brings the events back
    s.kill9();
    s.restart();
    assert_eq!(s.scalar("SELECT sum(x) FROM events"), json!(3.0));
    // a clean stop flushes them to S3
    s.stop();
    let keys = store.object_keys();
    assert!(
        keys.contains("warehouse/default/events/_delta_log/"),
        "{keys}"
    );
    assert!(keys.contains(".parquet"), "{keys}");
    assert!(
        !tmp.path().join("tables").exists(),
        "tables must not be written locally"
    );
    s.restart();
    s.ingest(&json!({"event_type": "b", "entity_id": "u3", "payload": {"x": 4}}));
    assert_eq!(s.scalar("SELECT sum(x) FROM events"), json!(7.0));
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(3));
    // A second flush, to a table that exists with these columns: the
    // flush writes its file itself (not through deltalake's WriteBuilder).
    s.stop();
    let keys = store.object_keys();
    assert!(
        keys.contains("_delta_log/00000000000000000001.json"),
        "{keys}"
    );
    s.restart();
    assert_eq!(s.scalar("SELECT sum(x) FROM events"), json!(7.0));
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(3));
}
