//! `allsource sql`: typed into a real terminal (tmux: keys sent, the
//! screen read back) for completion, a query over several lines, an error
//! and the history; and run with `-c`, `-f` and standard input for its
//! output formats and exit codes.

use crate::support::{TestServer, run_with_input, server_bin, wait_until};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn seed(s: &TestServer) {
    s.ingest(&json!([
        {"event_type": "view", "entity_id": "u1", "payload": {"amount": 3}},
        {"event_type": "buy", "entity_id": "u2", "payload": {"amount": 5}},
        {"event_type": "view", "entity_id": "u2", "payload": {"amount": 7}}
    ]));
}

/// A tmux server of its own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux must be installed");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        // tmux reads an argument ending in `;` as the end of a command.
        let keys: Vec<String> = keys
            .iter()
            .map(|k| match k.strip_suffix(';') {
                Some(text) => format!("{text}\\;"),
                None => k.to_string(),
            })
            .collect();
        let mut args = vec!["send-keys", "-t", "shell"];
        args.extend(keys.iter().map(String::as_str));
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "shell", "-S", "-200"])
    }

    /// The screen once it shows `what`; the screen in the failure if it
    /// does not within 30 s.
    fn wait_for(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(what) {
                return screen;
            }
            if std::time::Instant::now() > deadline {
                panic!("no {what:?} on the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn the_shell_completes_runs_multi_line_queries_and_shows_errors() {
    let s = TestServer::start(&[]);
    seed(&s);
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let tmux = Tmux {
        socket: format!("allsource-test-{}", std::process::id()),
    };
    let command = format!(
        "{} sql --url {} --history {}",
        server_bin(),
        s.base,
        history.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "shell",
        "-x",
        "160",
        "-y",
        "60",
        &command,
    ]);
    // The screen as read back loses trailing spaces.
    tmux.wait_for("allsource>");

    // Tab completes a column the server has.
    tmux.keys(&["SELECT event_t", "Tab"]);
    tmux.wait_for("allsource> SELECT event_type");
    // The statement goes on over a second line and runs at its `;`.
    tmux.keys(&[", count(*) AS n", "Enter"]);
    tmux.keys(&["FROM events GROUP BY 1 ORDER BY 1;", "Enter"]);
    let screen = tmux.wait_for("(2 rows)");
    for line in [
        "| event_type | n |",
        "| buy        | 1 |",
        "| view       | 2 |",
        "Time: ",
    ] {
        assert!(screen.contains(line), "no {line:?} on\n{screen}");
    }
    // An error is shown and the shell goes on.
    tmux.keys(&["SELECT nosuch FROM events;", "Enter"]);
    tmux.wait_for("ERROR: 400 Bad Request: Schema error: No field named nosuch");
    tmux.keys(&["\\d events", "Enter"]);
    tmux.wait_for("| amount      | Float64");
    tmux.keys(&["\\q", "Enter"]);
    wait_until("the history is saved", Duration::from_secs(30), || {
        std::fs::read_to_string(&history).is_ok_and(|h| h.contains("SELECT event_type"))
    });
}

fn shell(s: &TestServer, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut shell = Command::new(server_bin());
    shell.args(["sql", "--url", &s.base]).args(args);
    run_with_input(&mut shell, stdin)
}

#[test]
fn the_shell_runs_commands_files_and_standard_input() {
    let s = TestServer::start(&[]);
    seed(&s);
    let sql = "SELECT entity_id, sum(amount) AS total FROM events GROUP BY 1 ORDER BY 1";
    let (ok, out, err) = shell(&s, &["-c", sql, "--format", "csv"], "");
    assert!(ok, "{err}");
    assert_eq!(out, "entity_id,total\nu1,3.0\nu2,12.0\n");

    let (ok, out, err) = shell(&s, &["-c", sql, "--format", "json"], "");
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!([{"entity_id": "u1", "total": 3.0}, {"entity_id": "u2", "total": 12.0}])
    );

    // A file of statements and meta-commands, one over several lines.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        "\\format csv\nSELECT count(*) AS n\n  FROM events;\n\\dsl {\"from\": \"events\", \"select\": [\"entity_id\"], \"where\": [\"=\", \"event_type\", \"buy\"]};\n",
    )
    .unwrap();
    let (ok, out, err) = shell(&s, &["-f", file.to_str().unwrap()], "");
    assert!(ok, "{err}");
    assert_eq!(out, "n\n3\nentity_id\nu2\n");

    // Standard input; the first error stops the run with a failing status.
    let (ok, out, err) = shell(
        &s,
        &[],
        "SELECT 1 AS a;\nSELECT nosuch FROM events;\nSELECT 2 AS b;\n",
    );
    assert!(!ok);
    assert!(out.contains("| a |") && !out.contains("| b |"), "{out}");
    assert!(err.contains("No field named nosuch"), "{err}");
    let (ok, _, err) = shell(&s, &["-c", "\\nosuch"], "");
    assert!(!ok && err.contains("unknown command \\nosuch"), "{err}");
}

#[test]
fn export_writes_a_query_in_every_format() {
    let s = TestServer::start(&[]);
    seed(&s);
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT entity_id, amount FROM events ORDER BY amount";
    let export = |to: &str, extra: &[&str]| {
        let mut export = Command::new(server_bin());
        export
            .args(["export", "--url", &s.base, "--sql", sql, "--to"])
            .arg(dir.path().join(to))
            .args(extra);
        run_with_input(&mut export, "")
    };
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();

    let (ok, _, err) = export("e.csv", &[]);
    assert!(ok && err.contains("exported 3 rows"), "{err}");
    assert_eq!(read("e.csv"), b"entity_id,amount\nu1,3.0\nu2,5.0\nu2,7.0\n");
    let (ok, _, err) = export("e.ndjson", &[]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = String::from_utf8(read("e.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[2], json!({"entity_id": "u2", "amount": 7.0}));
    let (ok, _, err) = export("e.json", &[]);
    assert!(ok, "{err}");
    let all: serde_json::Value = serde_json::from_slice(&read("e.json")).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    for (name, extra) in [
        ("e.parquet", &[][..]),
        ("e.bin", &["--format", "arrow"][..]),
    ] {
        let (ok, _, err) = export(name, extra);
        assert!(ok && err.contains("exported 3 rows"), "{name}: {err}");
    }
    let parquet = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(dir.path().join("e.parquet")).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = parquet.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);

    // A refused query and an unknown extension write nothing.
    let mut bad = Command::new(server_bin());
    bad.args([
        "export",
        "--url",
        &s.base,
        "--sql",
        "SELECT nosuch FROM events",
    ])
    .arg("--to")
    .arg(dir.path().join("bad.csv"));
    let (ok, _, err) = run_with_input(&mut bad, "");
    assert!(!ok && err.contains("nosuch"), "{err}");
    assert!(!dir.path().join("bad.csv").exists());
    let (ok, _, err) = export("e.txt", &[]);
    assert!(!ok && err.contains("--format"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".allsource-export-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
