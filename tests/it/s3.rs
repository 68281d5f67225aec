//! Tables on S3: the same server against an S3-compatible store (moto's
//! server, from the test virtualenv, on loopback), WAL on local disk.

use crate::support::TestServer;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct S3Store {
    child: Child,
    pub(crate) endpoint: String,
}

impl S3Store {
    pub(crate) fn start() -> S3Store {
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

    pub(crate) fn object_keys(&self) -> String {
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

#[test]
fn backups_to_s3_of_tables_on_s3_restore_and_verify_from_s3() {
    let store = S3Store::start();
    let tmp = tempfile::tempdir().unwrap();
    let creds = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let args = [
        "--storage-url",
        "s3://lake/warehouse",
        "--backup-dir",
        "s3://lake/backups",
        "--s3-endpoint",
        &store.endpoint,
        "--s3-allow-http",
    ];
    let s = TestServer::start_in_with_env(tmp.path(), &args, &creds);
    let ingest = |from: usize, n: usize| {
        let events: Vec<serde_json::Value> = (from..from + n)
            .map(|i| json!({"event_id": format!("e{i}"), "event_type": "t", "entity_id": format!("u{}", i % 3)}))
            .collect();
        s.ingest(&serde_json::Value::Array(events));
    };
    let backup = || {
        let r = s.post(
            "/v1/admin/backup",
            "application/json",
            json!({"to": "nightly"}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    ingest(0, 10);
    let first = backup();
    assert_eq!(first["dir"], "s3://lake/backups/default/nightly", "{first}");
    ingest(10, 5);
    let second = backup();
    // The second copies only the new files.
    assert_eq!(
        second["files_reused"], first["tables"][0]["files"],
        "{second}"
    );
    let keys = store.object_keys();
    assert!(
        keys.contains("backups/default/nightly/manifest.json"),
        "{keys}"
    );
    assert!(
        keys.contains("backups/default/nightly/tables/default/events/_delta_log/"),
        "{keys}"
    );
    assert!(
        !tmp.path().join("backups").exists(),
        "nothing written locally"
    );

    let cli = |extra: &[&str]| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--s3-endpoint", &store.endpoint, "--s3-allow-http"]);
        std::process::Command::new(crate::support::server_bin())
            .args(&args)
            .envs(creds)
            .output()
            .unwrap()
    };
    let place = "s3://lake/backups/default/nightly";
    let out = cli(&["backup", "--verify", place]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("match their checksums"));
    let data = tmp.path().join("restored");
    let out = cli(&[
        "restore",
        "--from",
        place,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The restored copy is a local server's.
    let restored = TestServer::start_in(&data, &[]);
    assert_eq!(
        restored.scalar("SELECT count(DISTINCT event_id) FROM events"),
        json!(15)
    );
    assert_eq!(
        restored.scalar("SELECT max(position) FROM events"),
        json!(15)
    );

    // A damaged object is found by --verify and stops a restore.
    let damaged = keys
        .split("<Key>")
        .filter_map(|k| k.split("</Key>").next())
        .find(|k| k.starts_with("backups/default/nightly/tables/") && k.ends_with(".parquet"))
        .unwrap()
        .to_string();
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("lake")
        .with_endpoint(&store.endpoint)
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_region("us-east-1")
        .build()
        .unwrap();
    crate::flight::runtime().block_on(async {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(damaged.as_str());
        let mut bytes = s3.get(&path).await.unwrap().bytes().await.unwrap().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        s3.put(&path, bytes.into()).await.unwrap();
    });
    let out = cli(&["backup", "--verify", place]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged") && err.contains(".parquet"), "{err}");
    let again = tmp.path().join("again");
    let out = cli(&[
        "restore",
        "--from",
        place,
        "--data-dir",
        again.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!again.exists(), "nothing restored");
}

#[test]
fn executors_read_tables_on_s3() {
    use crate::distributed::start;
    let store = S3Store::start();
    let tmp = tempfile::tempdir().unwrap();
    let s3 = [
        "--storage-url",
        "s3://lake/warehouse",
        "--s3-endpoint",
        &store.endpoint,
        "--s3-allow-http",
    ];
    // The scheduler plans over the files and the executor reads them:
    // both are given the store.
    let creds = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let mut scheduler_args = vec!["scheduler", "--bind", "127.0.0.1:0"];
    scheduler_args.extend(s3);
    let (_scheduler, address) = start(
        &scheduler_args,
        &creds,
        "allsource scheduler listening on ",
        &tmp.path().join("scheduler.log"),
    );
    let mut executor_args = vec![
        "executor",
        "--scheduler",
        address.trim_start_matches("df://"),
        "--bind",
        "127.0.0.1:0",
    ];
    executor_args.extend(s3);
    let (_executor, _) = start(
        &executor_args,
        &creds,
        "allsource executor listening on ",
        &tmp.path().join("executor.log"),
    );
    let mut args = s3.to_vec();
    args.extend(["--ballista", &address]);
    let mut s = TestServer::start_in_with_env(tmp.path(), &args, &creds);
    s.ingest(&json!([
        {"event_type": "a", "entity_id": "u1", "payload": {"x": 1}},
        {"event_type": "b", "entity_id": "u2", "payload": {"x": 2}},
        {"event_type": "b", "entity_id": "u3", "payload": {"x": 4}},
    ]));
    s.stop();
    s.restart();
    let sql = "SELECT event_type, sum(x) AS x FROM events GROUP BY 1 ORDER BY 1";
    let r = s.post("/v1/sql?engine=distributed", "text/plain", sql);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!([{"event_type": "a", "x": 1.0}, {"event_type": "b", "x": 6.0}])
    );
}
